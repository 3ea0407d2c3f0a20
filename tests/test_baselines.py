from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.baselines import collect_activations
from steerlens.data import format_prompt
from steerlens.errors import DataError


def _manual_caa(model, items, layer):
    """CAA by hand: one run_with_cache per completion, read at the answer letter."""
    hook = f"blocks.{layer}.hook_resid_post"
    tok = model.tokenizer
    diffs = []
    for it in items:
        acts = []
        for ans in (it.matching, it.not_matching):
            letter = ans.strip("()")
            text = format_prompt(tok, it.question) + "(" + letter
            ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
            assert tok.decode(ids[0, -1:]).strip() == letter
            _, cache = model.run_with_cache(ids, names_filter=[hook])
            acts.append(cache[hook][0, -1])
        diffs.append(acts[0] - acts[1])
    return torch.stack(diffs).mean(0)


def test_caa_parity_ab(tiny):
    items = sl.load_pairs(sl.demo_data_path("ab"))[:5]
    v = sl.caa_vector(tiny, items, layers=[1, 3], batch_size=2)
    for layer in (1, 3):
        expected = _manual_caa(tiny, items, layer)
        assert torch.allclose(v.vectors[f"blocks.{layer}.hook_resid_post"], expected, atol=1e-5)
    assert v.metadata["method"] == "caa" and v.metadata["layers"] == [1, 3]


def test_caa_free_text_mean_and_last(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:3]
    hook = "blocks.2.hook_resid_post"
    tok = tiny.tokenizer
    for read in ("mean", "last"):
        v = sl.caa_vector(tiny, pairs, layers=2, read=read)
        diffs = []
        for p in pairs:
            acts = []
            prompt = tok(format_prompt(tok, p.question), add_special_tokens=False).input_ids
            for ans in (p.matching, p.not_matching):
                a = tok(ans, add_special_tokens=False).input_ids
                _, cache = tiny.run_with_cache(torch.tensor([prompt + a]), names_filter=[hook])
                r = cache[hook][0, len(prompt) :]
                acts.append(r.mean(0) if read == "mean" else r[-1])
            diffs.append(acts[0] - acts[1])
        assert torch.allclose(v.vectors[hook], torch.stack(diffs).mean(0), atol=1e-5), read


def test_batching_is_padding_safe(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("eval"))
    a = collect_activations(tiny, pairs, [2], batch_size=1)
    b = collect_activations(tiny, pairs, [2], batch_size=6)
    for x, y in zip(a["blocks.2.hook_resid_post"], b["blocks.2.hook_resid_post"], strict=True):
        assert torch.allclose(x, y, atol=1e-5)


def test_pca_vector_sign_and_scale(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:12]
    v = sl.pca_vector(tiny, pairs, layers=2)
    hook = "blocks.2.hook_resid_post"
    m, n = collect_activations(tiny, pairs, [2])[hook]
    diffs = m - n
    u = v.vectors[hook] / v.vectors[hook].norm()
    assert (diffs @ u).mean() > 0  # matching projects higher
    # scale="projection": norm equals the mean projection of the differences
    assert torch.isclose(v.vectors[hook].norm(), (diffs @ u).mean(), rtol=1e-4)
    # independent check of the direction: top right-singular vector of centred differences
    centred = (diffs - diffs.mean(0)).double()
    top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert abs(float(top @ u.double())) > 0.999
    unit = sl.pca_vector(tiny, pairs, layers=2, scale="unit")
    assert abs(unit.norms()[hook] - 1) < 1e-5


def test_letter_read_requires_ab(tiny):
    with pytest.raises(DataError, match="A/B answers"):
        sl.caa_vector(tiny, [sl.PreferencePair("q", "yes", "no")], layers=1, read="letter")


@pytest.mark.slow
def test_caa_separates_heldout_activations_real_data(smol, shared_data):
    """On real free-text pairs the CAA direction separates held-out matching activations."""
    from steerlens.analysis import projection_gap

    data = shared_data / "bipo/power-seeking"
    with pytest.warns(UserWarning):
        train = sl.load_pairs(data / "train.csv", invalid="skip", duplicates="ignore")
    test = sl.load_pairs(data / "test.csv")
    assert not sl.check_overlap(train[:48], test[:24], warn=False)
    v = sl.caa_vector(smol, train[:48], layers=12)
    gap = projection_gap(smol, v, test[:24])
    print(gap.to_string())  # measured: gap ~ +10.8, separated 1.0 (docs/results.md)
    assert gap["gap"].iloc[0] > 2.0
    assert gap["separated"].iloc[0] >= 0.9


@pytest.mark.slow
def test_caa_gap_on_caa_ab_data_is_reported(smol, shared_data):
    """On CAA's A/B items the letter-token activations of a 135M model are dominated by the
    letter's identity; the gap is computed and finite (see docs/results.md for the values)."""
    from steerlens.analysis import projection_gap

    folder = shared_data / "caa"
    train = sl.load_pairs(folder / "generate/survival-instinct/generate_dataset.json")[:32]
    test = sl.load_pairs(folder / "test/survival-instinct/test_dataset_ab.json")[:16]
    v = sl.caa_vector(smol, train, layers=12)
    gap = projection_gap(smol, v, test)
    assert gap["gap"].notna().all() and (gap["separated"].between(0, 1)).all()
    # the training items themselves are separated by construction of the mean difference
    own = projection_gap(smol, v, train)
    assert own["gap"].iloc[0] > 0
