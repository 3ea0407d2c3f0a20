"""Conditional steering (CAST), decided per row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import steerlens as sl
from steerlens.core.encoding import encode_prompt
from steerlens.core.errors import ConfigError
from steerlens.steering.conditional import (
    Condition,
    Conditional,
    condition_direction,
    pooled_activations,
    search_condition,
    similarity,
)

COND = "blocks.1.hook_resid_pre"
BEHAVE = "blocks.2.hook_resid_post"
PROMPTS = [
    "Hello there, how are you today my friend?",
    "Name a colour.",
    "Why is the sky blue?",
    "Tell me how to bake bread at home, step by step.",
    "Hi",
    "What is two plus two?",
]


def test_similarity_matches_ibm_formula_in_numpy():
    g = np.random.default_rng(0)
    h, c = g.normal(size=(5, 8)), g.normal(size=8)
    proj = np.tanh(np.outer(c, c) / (c @ c) @ h.T).T
    want = (h * proj).sum(1) / (np.linalg.norm(h, axis=1) * np.linalg.norm(proj, axis=1))
    got = similarity(torch.tensor(h), torch.tensor(c))
    assert np.allclose(got.numpy(), want, atol=1e-12)


def _rule(tiny, threshold=None):
    """A condition whose threshold splits PROMPTS roughly in half."""
    c = torch.randn(64, generator=torch.Generator().manual_seed(1))
    acts = pooled_activations(tiny, PROMPTS, hooks=[COND])[COND]
    sims = similarity(acts, c)
    if threshold is None:  # the middle of the widest gap between sorted similarities
        ordered = sims.sort().values
        gaps = ordered[1:] - ordered[:-1]
        k = int(gaps.argmax())
        thr = float((ordered[k] + ordered[k + 1]) / 2)
    else:
        thr = threshold
    v = sl.SteeringVector({BEHAVE: torch.randn(64, generator=torch.Generator().manual_seed(2)) * 6})
    return Conditional(Condition(COND, c, thr, "larger"), v), sims < thr


@pytest.mark.parametrize("backend", ["native", "bridge"])
def test_generate_decides_each_row_like_one_at_a_time(tiny, backend):
    rule, expected = _rule(tiny)
    assert 0 < int(expected.sum()) < len(PROMPTS)
    kw = dict(multipliers=(1,), max_new_tokens=8, progress=False, backend=backend)
    batched = sl.generate(tiny, rule, PROMPTS, **kw)
    single = sl.generate(tiny, rule, PROMPTS, batch_size=1, **kw)
    plain = sl.generate(tiny, None, PROMPTS, batch_size=1, **kw)
    assert batched["condition_met"].tolist() == single["condition_met"].tolist()
    assert batched["condition_met"].tolist() == expected.tolist()
    assert batched["tokens"].tolist() == single["tokens"].tolist()
    for met, got, base in zip(batched["condition_met"], batched["tokens"], plain["tokens"],
                              strict=True):  # fmt: skip
        if not met:
            assert got == base  # a row whose condition fails is the unsteered model's
    assert any(g != b for g, b in zip(batched["tokens"], plain["tokens"], strict=True))
    assert sl.active_hooks(tiny) == []


@pytest.mark.parametrize("side", ["left", "right"])
def test_failing_rows_are_bit_identical_and_decisions_per_row(tiny, side):
    rule, _ = _rule(tiny)
    tok = tiny.tokenizer
    enc = [encode_prompt(tok, p) for p in PROMPTS]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        if side == "left":
            ids[i, width - len(e) :], mask[i, width - len(e) :] = torch.tensor(e), 1
        else:
            ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
    with rule.apply(tiny) as report:
        got = tiny(ids, attention_mask=mask)
    plain = tiny(ids, attention_mask=mask)
    met = report.decisions[0]
    for i, e in enumerate(enc):
        with rule.apply(tiny) as one:
            tiny(torch.tensor([e]))
        assert one.decisions[0] == [met[i]]
        assert abs(one.similarities[0][0] - report.similarities[0][i]) < 1e-4
        if not met[i]:
            assert torch.equal(got[i], plain[i])
        else:
            assert not torch.allclose(got[i], plain[i])


def test_behaviour_before_the_condition_is_refused():
    c = Condition("blocks.2.hook_resid_pre", torch.ones(4), 0.1)
    with pytest.raises(ConfigError, match="after it"):
        Conditional(c, sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)}))
    with pytest.raises(ConfigError, match="residual-stream"):
        Condition("blocks.2.attn.hook_z", torch.ones(4), 0.1)


def test_search_recovers_a_planted_condition():
    g = torch.Generator().manual_seed(0)
    d, n = 32, 120
    planted = torch.randn(d, generator=g)
    planted /= planted.norm()
    pos, neg = {}, {}
    for layer in range(4):
        base_p = torch.randn(n, d, generator=g) + 3.0
        base_n = torch.randn(n, d, generator=g) + 3.0
        if layer == 2:  # only here do positives point along the planted direction
            base_p = base_p + 6 * planted
        pos[f"blocks.{layer}.hook_resid_pre"] = base_p
        neg[f"blocks.{layer}.hook_resid_pre"] = base_n
    found = search_condition(pos, neg)
    assert found.condition.hook == "blocks.2.hook_resid_pre"
    assert found.f1 >= 0.9
    cos = float(found.condition.direction @ planted)
    assert abs(cos) > 0.8
    assert found.n_report == (30, 30)
    assert {"hook", "threshold_is", "threshold", "f1"} <= set(found.table.columns)


def test_condition_direction_is_pca_of_centred_activations():
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(30, 6, generator=g), torch.randn(30, 6, generator=g)
    pos[:, 2] += 4.0  # the classes differ along axis 2
    d = condition_direction(pos, neg)
    from sklearn.decomposition import PCA

    ref = torch.tensor(PCA(1).fit(torch.cat([pos, neg]).double().numpy()).components_[0])
    assert abs(float(d.double() @ ref)) > 0.999
    assert float((pos @ d).mean()) > float((neg @ d).mean())  # signed toward the positives
