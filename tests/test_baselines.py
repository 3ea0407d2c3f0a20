from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.data import format_prompt
from steerlens.core.errors import DataError
from steerlens.methods.baselines import collect_activations


def _manual_caa(model, items, layer, reduce=True):
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
    return torch.stack(diffs).mean(0) if reduce else torch.stack(diffs)


def test_letter_balanced_caa_parity(tiny):
    """balance_letters: mean of the (A)-matching items' mean difference and the (B)-matching
    items' mean difference, checked against per-item differences computed by hand."""
    items = sl.load_pairs(sl.demo_data_path("ab"))[:6]
    first = torch.tensor([it.matching_letter == "A" for it in items])
    assert first.any() and not first.all()
    v = sl.caa_vector(tiny, items, layers=2, balance_letters=True)
    diffs = _manual_caa(tiny, items, 2, reduce=False)
    expected = 0.5 * (diffs[first].mean(0) + diffs[~first].mean(0))
    got = v.vectors["blocks.2.hook_resid_post"]
    assert torch.allclose(got, expected, atol=1e-5)
    if int(first.sum()) != int((~first).sum()):  # unequal groups: differs from the plain mean
        assert not torch.allclose(got, diffs.mean(0), atol=1e-4)
    assert v.metadata["balance_letters"] is True


def test_letter_balance_needs_both_letters_and_ab_items(tiny):
    only_a = [sl.PreferencePair(f"q{i}", "(A)", "(B)") for i in range(3)]
    with pytest.raises(DataError, match="all 3 match with"):
        sl.caa_vector(tiny, only_a, layers=1, balance_letters=True)
    with pytest.raises(DataError, match=r"pairs\[1\]: letter balance needs A/B"):
        sl.caa_vector(
            tiny, [only_a[0], sl.PreferencePair("q", "yes", "no")], layers=1, balance_letters=True
        )


def test_balanced_gap_ignores_a_pure_letter_direction(tiny):
    """A direction that only encodes which letter was written has balanced gap 0 (up to
    float error), whatever the share of (A)-matching items; the plain gap does not."""
    from steerlens.analysis.geometry import projection_gap

    items = sl.load_pairs(sl.demo_data_path("ab"))
    a_items = [it for it in items if it.matching_letter == "A"][:3]
    b_items = [it for it in items if it.matching_letter == "B"][:1]
    skewed = a_items + b_items
    # the letter direction: activation after "(A" minus after "(B" with the same question
    acts = collect_activations(tiny, skewed, layers=[2])["blocks.2.hook_resid_post"]
    letter_dir = torch.cat([acts[0][:3] - acts[1][:3], acts[1][3:] - acts[0][3:]]).mean(0)
    v = sl.SteeringVector({"blocks.2.hook_resid_post": letter_dir})
    same_q = [sl.PreferencePair(it.question, "(A)", "(B)") for it in skewed[:1]] + [
        sl.PreferencePair(skewed[0].question, "(B)", "(A)")
    ]
    plain = projection_gap(tiny, v, same_q)["gap"].iloc[0]
    balanced = projection_gap(tiny, v, same_q, balance_letters=True)["gap"].iloc[0]
    assert abs(balanced) < 1e-4 * max(1.0, abs(plain))
    skew = projection_gap(tiny, v, same_q[:1] * 3 + same_q[1:], balance_letters=False)
    assert abs(skew["gap"].iloc[0]) > 10 * abs(balanced) + 1e-6


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
    a = collect_activations(tiny, pairs, layers=[2], batch_size=1)
    b = collect_activations(tiny, pairs, layers=[2], batch_size=6)
    for x, y in zip(a["blocks.2.hook_resid_post"], b["blocks.2.hook_resid_post"], strict=True):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("center", [False, True])
def test_pca_vector_sign_scale_and_direction(tiny, center):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:12]
    v = sl.pca_vector(tiny, pairs, layers=2, center=center)
    hook = "blocks.2.hook_resid_post"
    m, n = collect_activations(tiny, pairs, layers=[2])[hook]
    diffs = m - n
    u = v.vectors[hook] / v.vectors[hook].norm()
    assert (diffs @ u).mean() > 0  # matching projects higher
    # scale="projection": norm equals the mean projection of the differences
    assert torch.isclose(v.vectors[hook].norm(), (diffs @ u).mean(), rtol=1e-4)
    # independent check of the direction: torch.linalg.svd of the (un)centred differences,
    # and for center=True sklearn's PCA (repeng's pca_diff)
    x = diffs.double() - (diffs.double().mean(0) if center else 0)
    top = torch.linalg.svd(x, full_matrices=False).Vh[0]
    assert abs(float(top @ u.double())) > 0.999
    if center:
        from sklearn.decomposition import PCA

        comp = torch.from_numpy(PCA(n_components=1).fit(diffs.double().numpy()).components_[0])
        assert abs(float(comp @ u.double())) > 0.999
    unit = sl.pca_vector(tiny, pairs, layers=2, scale="unit", center=center)
    assert abs(unit.norms()[hook] - 1) < 1e-5


def test_pca_default_is_uncentred_mean_direction():
    """Differences with a large shared mean and noise along another axis: the uncentred
    default follows the mean (as CAA does); the centred variant follows the noise."""
    from steerlens.methods.baselines import top_direction

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 1, generator=g) * 2.0
    diffs = torch.zeros(200, 8)
    diffs[:, 0] = 5.0 + 0.1 * torch.randn(200, generator=g)
    diffs[:, 1] = noise[:, 0]
    pc, share = top_direction(diffs)
    assert pc[0] > 0.99 and share > 0.8
    pc_c, _ = top_direction(diffs, center=True)
    assert abs(float(pc_c[1])) > 0.99


def test_letter_read_requires_ab(tiny):
    with pytest.raises(DataError, match="A/B answers"):
        sl.caa_vector(tiny, [sl.PreferencePair("q", "yes", "no")], layers=1, read="letter")


@pytest.mark.slow
def test_caa_separates_heldout_activations_real_data(smol, shared_data):
    """On real free-text pairs the CAA direction separates held-out matching activations."""
    from steerlens.analysis.geometry import projection_gap

    data = shared_data / "bipo/power-seeking"
    with pytest.warns(UserWarning):
        train = sl.load_pairs(data / "train.csv", invalid="skip", duplicates="ignore")
    test = sl.load_pairs(data / "test.csv")
    assert not sl.check_overlap(train[:32], test[:16], warn=False)
    v = sl.caa_vector(smol, train[:32], layers=12)
    gap = projection_gap(smol, v, test[:16])
    print(gap.to_string())  # measured: gap ~ +10.8, separated 1.0 (docs/results.md)
    assert gap["gap"].iloc[0] > 2.0
    assert gap["separated"].iloc[0] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize(
    "behaviour,min_separated", [("corrigible-neutral-HHH", None), ("hallucination", 0.7)]
)
def test_letter_balanced_caa_separates_heldout_ab_items(
    smol, shared_data, behaviour, min_separated
):
    """On CAA's A/B data the letter's identity dominates the letter-token activation of a 135M
    model: the plain gap's sign follows the test set's share of (A)-matching items. Letter
    balance removes it, and the held-out items separate (layer 18; docs/caa_letters.md has the
    numbers for all behaviours, sycophancy does not separate)."""
    from steerlens.analysis.geometry import projection_gap

    folder = shared_data / "caa"
    train = sl.load_pairs(folder / f"generate/{behaviour}/generate_dataset.json")[:32]
    test = sl.load_pairs(folder / f"test/{behaviour}/test_dataset_ab.json")
    assert not sl.check_overlap(train, test, warn=False)
    v = sl.caa_vector(smol, train, layers=18, balance_letters=True)
    gap = projection_gap(smol, v, test, balance_letters=True)
    print(behaviour, gap.to_string())
    assert gap["gap"].iloc[0] > 1.0  # measured (32 items): +2.4 corrigible, +6.7 hallucination
    if min_separated is not None:  # corrigible: the mean moves, single items ~50/50
        assert gap["separated"].iloc[0] > min_separated


@pytest.mark.slow
def test_pca_default_agrees_with_caa_on_real_data(smol, shared_data):
    """The uncentred PCA direction has cosine >= 0.9 with CAA on power-seeking at layer 12,
    and most training pairs project positive; the centred (repeng pca_diff) one does not."""
    train = sl.load_pairs(
        shared_data / "bipo/power-seeking/train.csv", invalid="skip", duplicates="ignore"
    )[:16]
    caa = sl.caa_vector(smol, train, layers=12, progress=False)
    pca = sl.pca_vector(smol, train, layers=12, progress=False)
    centred = sl.pca_vector(smol, train, layers=12, center=True, progress=False)
    hook = "blocks.12.hook_resid_post"
    assert pca.cosine(caa)[hook] >= 0.9
    m, n = collect_activations(smol, train, layers=12, progress=False)[hook]
    unit = pca.vectors[hook] / pca.vectors[hook].norm()
    assert float(((m - n) @ unit > 0).float().mean()) >= 0.9
    assert abs(centred.cosine(caa)[hook]) < pca.cosine(caa)[hook]
