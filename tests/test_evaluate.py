from __future__ import annotations

import math

import pytest
import torch

import steerlens as sl
from steerlens.core.data import format_prompt
from steerlens.evaluation.metrics import kl_divergence
from steerlens.evaluation.scoring import ab_choice_tokens, ab_probabilities


@pytest.fixture(scope="module")
def items():
    return sl.load_pairs(sl.demo_data_path("ab"))[:4]


def _manual_ab(model, item, vector=None, mult=0.0):
    tok = model.tokenizer
    text = format_prompt(tok, item.question) + "("
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    if vector is not None:
        with vector.apply(model, mult):
            logits = model(ids)[0, -1]
    else:
        logits = model(ids)[0, -1]
    p = torch.softmax(logits.double(), -1)
    a = p[tok.convert_tokens_to_ids("A")]
    b = p[tok.convert_tokens_to_ids("B")]
    return float((a if item.matching == "(A)" else b) / (a + b))


def test_ab_score_matches_hand_computation(tiny, items, rand_vec):
    v = rand_vec(tiny, layer=2, scale=3.0)
    for mult in (0.0, 1.5):
        got = ab_probabilities(tiny, v, items, mult, batch_size=3)
        want = [_manual_ab(tiny, it, v, mult) for it in items]
        assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-4)
    df = sl.ab_score(tiny, v, items, multipliers=(0, 1.5))
    assert list(df["multiplier"]) == [0.0, 1.5]
    assert math.isclose(df["score"][1], sum(want) / len(want), abs_tol=1e-4)
    assert df["matching_likelier"][1] == sum(w > 0.5 for w in want) / len(want)


def test_ab_choice_tokens_other_letters(tiny):
    prefix, tc, ta = ab_choice_tokens(tiny.tokenizer, "(C)", "(A)")
    assert tiny.tokenizer.decode([tc]) == "C" and tiny.tokenizer.decode(prefix) == "("


def test_preference_margin_matches_logprobs(tiny, rand_vec):
    from steerlens.core.encoding import encode_pairs
    from steerlens.core.logprobs import pair_logprobs

    pairs = sl.load_pairs(sl.demo_data_path("eval"))[:4]
    v = rand_vec(tiny, layer=1, scale=2.0)
    df = sl.preference_margin(tiny, v, pairs, multipliers=(-1, 0, 1))
    enc = encode_pairs(tiny.tokenizer, pairs)
    for mult, row in zip((-1, 0, 1), df.itertuples(), strict=True):
        lp = pair_logprobs(tiny, enc, (lambda m=mult: v.fwd_hooks(m)) if mult else None)
        gap = lp[:, 0] - lp[:, 1]
        assert math.isclose(row.margin, float(gap.mean()), abs_tol=1e-4)
        assert row.matching_likelier == float((gap > 0).float().mean())
    per = sl.preference_margin(tiny, None, pairs, multipliers=(0,), per_item=True)
    assert len(per) == 4 and {"logp_matching", "logp_not_matching", "margin"} <= set(per)


def test_generate_batched_equals_single(tiny, rand_vec):
    v = rand_vec(tiny, layer=1, scale=2.0)
    prompts = ["Hello there, how are you?", "Name a colour.", "What is two plus two?"]
    batched = sl.generate(tiny, v, prompts, multipliers=(0, 1), max_new_tokens=6, batch_size=3)
    single = sl.generate(tiny, v, prompts, multipliers=(0, 1), max_new_tokens=6, batch_size=1)
    assert list(batched.columns) == [
        "prompt",
        "sample",
        "multiplier",
        "text",
        "positions",
        "tokens",
    ]
    assert batched["text"].tolist() == single["text"].tolist()
    unsteered = batched[batched.multiplier == 0]["text"].tolist()
    steered = batched[batched.multiplier == 1]["text"].tolist()
    assert unsteered != steered
    assert sl.active_hooks(tiny) == []


def test_kl_zero_at_zero_and_matches_manual(tiny, rand_vec):
    v = rand_vec(tiny, layer=1, scale=2.0)
    texts = ["The cat sat on the mat.", "Rain is wet."]
    df = kl_divergence(tiny, v, texts, multipliers=(0, 1))
    assert df["kl"][0] == pytest.approx(0.0, abs=1e-7)
    tok = tiny.tokenizer
    total, count = 0.0, 0
    for t in texts:
        ids = torch.tensor([tok(t, add_special_tokens=False).input_ids])
        p = torch.log_softmax(tiny(ids)[0].double(), -1)
        with v.apply(tiny, 1.0):
            q = torch.log_softmax(tiny(ids)[0].double(), -1)
        total += float((p.exp() * (p - q)).sum())
        count += ids.shape[1]
    assert df["kl"][1] == pytest.approx(total / count, rel=1e-3)


@pytest.mark.slow
def test_mmlu_accuracy_unsteered_above_chance(smol, shared_data):
    mmlu = sl.load_pairs(shared_data / "caa/test/mmlu/mmlu.json")[:40]
    df = sl.ab_score(smol, None, mmlu, multipliers=(0,))
    assert 0.0 <= df["matching_likelier"][0] <= 1.0 and len(mmlu) == df["n"][0]
