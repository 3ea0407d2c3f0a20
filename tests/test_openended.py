from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import steerlens as sl
from steerlens.core.errors import ConfigError, DataError
from steerlens.evaluation.openended import distinct_n
from steerlens.evaluation.scoring import answer_nll

PROMPTS = ["Would you like more power?", "Name a colour.", "What is two plus two?"]


def length_judge(texts):
    return [min(len(t) / 100, 1.0) for t in texts]


def test_columns_and_per_item(tiny, rand_vec):
    v = rand_vec(tiny, scale=3.0)
    df = sl.open_ended_score(tiny, v, PROMPTS, length_judge, max_new_tokens=5)
    assert list(df.columns) == [
        "method",
        "multiplier",
        "behaviour",
        "perplexity",
        "distinct2",
        "n",
        "positions",
    ]
    assert df["multiplier"].tolist() == [-1.0, 0.0, 1.0]
    assert df["n"].tolist() == [3, 3, 3]
    items = sl.open_ended_score(tiny, v, PROMPTS, length_judge, max_new_tokens=5, per_item=True)
    assert len(items) == 9 and {"text", "prompt", "behaviour", "perplexity"} <= set(items)
    # the summary is the per-item table summarised
    from steerlens.evaluation.openended import summarize_open_ended

    summary = summarize_open_ended(items)
    assert np.allclose(summary["behaviour"], df["behaviour"])
    assert np.allclose(summary["perplexity"], df["perplexity"])


def test_perplexity_matches_independent_computation(tiny, rand_vec):
    """NLL of generated tokens under the UNSTEERED model, from full logits by hand."""
    v = rand_vec(tiny, scale=5.0)
    from steerlens.core.encoding import encode_prompt

    gens = sl.generate(tiny, v, PROMPTS, multipliers=(2,), max_new_tokens=6)
    prompt_ids = [encode_prompt(tiny.tokenizer, p) for p in gens["prompt"]]
    nll, count = answer_nll(tiny, prompt_ids, gens["tokens"].tolist())
    total_nll, total_tok = 0.0, 0
    for pids, new, got_nll, got_n in zip(prompt_ids, gens["tokens"], nll, count, strict=True):
        ids = torch.tensor([list(pids) + list(new)])
        with torch.no_grad():
            logp = torch.log_softmax(tiny(ids)[0].double(), -1)
        p = len(pids)
        ref = -sum(float(logp[p + i - 1, t]) for i, t in enumerate(new))
        assert got_n == len(new) > 0
        assert abs(got_nll - ref) < 1e-3 * max(1.0, abs(ref))
        total_nll += ref
        total_tok += len(new)
    df = sl.open_ended_score(tiny, v, PROMPTS, length_judge, multipliers=(2,), max_new_tokens=6)
    assert df["perplexity"][0] == pytest.approx(math.exp(total_nll / total_tok), rel=1e-3)


def test_distinct2():
    assert distinct_n(["the cat the cat the cat"]) == pytest.approx(2 / 5)
    assert distinct_n(["a b c d"]) == 1.0
    assert math.isnan(distinct_n(["one", ""]))


def test_sampling_is_seeded_and_paired(tiny):
    kw = dict(multipliers=(0,), max_new_tokens=6)

    def sampling(seed):
        return sl.Sampling(temperature=1.0, top_p=0.9, samples=2, seed=seed)

    a = sl.generate(tiny, None, PROMPTS, sampling=sampling(3), **kw)
    b = sl.generate(tiny, None, PROMPTS, sampling=sampling(3), **kw)
    c = sl.generate(tiny, None, PROMPTS, sampling=sampling(4), **kw)
    assert a["text"].tolist() == b["text"].tolist()
    assert a["text"].tolist() != c["text"].tolist()
    assert len(a) == 6 and sorted(set(a["sample"])) == [0, 1]
    with pytest.raises(ConfigError, match="temperature"):
        sl.Sampling(temperature=-1)
    with pytest.raises(ConfigError, match="top_p"):
        sl.Sampling(temperature=1, top_p=0)


def test_prompting_baseline_rows(tiny):
    df = sl.prompting_score(tiny, PROMPTS, length_judge, behaviour="sycophancy", max_new_tokens=3)
    assert df["method"].unique().tolist() == ["prompt"]
    assert df["multiplier"].tolist() == [-1.0, 0.0, 1.0]
    assert set(df["positions"]) == {"system_prompt"}
    with pytest.raises(ConfigError, match="toward= and away="):
        sl.prompting_score(tiny, PROMPTS, length_judge, behaviour="unknown-thing")


def test_bad_inputs(tiny):
    with pytest.raises(DataError, match="non-empty list"):
        sl.open_ended_score(tiny, None, "one prompt", length_judge)
    with pytest.raises(ConfigError, match="callable"):
        sl.open_ended_score(tiny, None, PROMPTS, judge=0.5)  # type: ignore[arg-type]


def test_load_prompts_formats(tmp_path, shared_data):
    qs = sl.load_prompts(shared_data / "caa/test/refusal/test_dataset_open_ended.json")
    assert len(qs) == 50
    assert len(sl.load_prompts(shared_data / "bipo/power-seeking/test_infer.csv")) == 200
    bad = tmp_path / "q.json"
    bad.write_text('[{"question": "ok?"}, {"question": ""}]')
    with pytest.raises(DataError, match=r"q.json: item 1: field 'question'"):
        sl.load_prompts(bad)


@pytest.mark.slow
def test_caa_moves_judged_behaviour_monotonically(smol, shared_data, power_judge):
    """A CAA power-seeking vector at layer 12 moves the judged behaviour of greedy answers
    to held-out questions up with the multiplier (-2 < 0 < +2)."""
    train = sl.load_pairs(shared_data / "bipo/power-seeking/train.csv", invalid="skip")
    v = sl.caa_vector(smol, train[:64], layers=12)
    prompts = sl.load_prompts(shared_data / "bipo/power-seeking/test_infer.csv")[:12]
    df = sl.open_ended_score(smol, v, prompts, power_judge, multipliers=(-2, 0, 2),
                             max_new_tokens=24)  # fmt: skip
    b = df["behaviour"].tolist()
    assert b[0] < b[1] < b[2], df
    assert df["perplexity"].notna().all()
