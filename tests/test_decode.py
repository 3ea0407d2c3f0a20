"""Batch planning and paired sampling."""

from __future__ import annotations

import math

import pytest
import torch

import steerlens as sl
from steerlens.core.batching import CPU_BATCH_TOKENS, plan_batches
from steerlens.evaluation.decode import DecodeOptions, PairedSampler


def test_batch_plan_sorts_and_bounds():
    lengths = [30, 5, 200, 6, 31, 7]
    plan = plan_batches(lengths, 10, batch_size=2)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert all(len(b) <= 2 for b in plan)
    flat = [lengths[i] for b in plan for i in b]
    assert flat == sorted(lengths)
    big = plan_batches([100] * 100, 28)
    assert all(len(b) * 128 <= CPU_BATCH_TOKENS for b in big)
    with pytest.raises(sl.ConfigError):
        plan_batches([1], 1, batch_size=0)


def test_paired_sampler_draws_from_the_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, generator=g) * 2
    opts = DecodeOptions(temperature=0.8, seed=1)
    counts = torch.zeros(6)
    n = 4000
    sampler = PairedSampler([(0,)], opts)
    for _ in range(n):
        counts[int(sampler(torch.zeros(1, 1), logits).argmax())] += 1
    p = torch.softmax(logits[0] / 0.8, -1)
    # chi-square goodness of fit, 5 degrees of freedom: 20.5 is the 0.999 quantile
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 20.5, (counts / n, p)


def test_paired_sampler_top_p_matches_transformers():
    from transformers.generation.logits_process import TopPLogitsWarper

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50, generator=g) * 3
    for top_p in (0.5, 0.9):
        ref = TopPLogitsWarper(top_p)(torch.zeros(3, 1, dtype=torch.long), logits.clone())
        sampler = PairedSampler(
            [(i,) for i in range(3)], DecodeOptions(temperature=1.0, top_p=top_p)
        )
        for _ in range(50):
            pick = sampler(torch.zeros(3, 1), logits).argmax(-1)
            assert torch.isfinite(ref.gather(-1, pick[:, None])).all()
        kept = torch.isfinite(ref).sum(-1)
        assert (kept >= 1).all() and (kept < 50).all()


def test_each_row_has_its_own_stream():
    opts = DecodeOptions(temperature=1.0, seed=3)
    logits = torch.zeros(2, 1000)
    a = PairedSampler([(0, 0), (1, 0)], opts)(None, logits).argmax(-1)
    b = PairedSampler([(1, 0)], opts)(None, logits[:1]).argmax(-1)
    assert int(a[1]) == int(b[0])  # the same key draws the same, whatever the batch
    assert int(a[0]) != int(a[1])
    assert not math.isnan(float(a[0]))


def test_sampled_generation_is_paired_and_batch_invariant(tiny, rand_vec):
    v = rand_vec(tiny, layer=1, scale=2.0)
    s = sl.Sampling(temperature=1.0, top_p=0.95, samples=2, seed=5)
    prompts = ["Tell me a story.", "What is your favourite food?", "Hi!"]
    kw = dict(max_new_tokens=6, sampling=s, progress=False)
    whole = sl.generate(tiny, v, prompts, multipliers=(0, 1), **kw)
    alone = sl.generate(tiny, v, prompts[2:], multipliers=(0,), batch_size=1, **kw)
    got = whole[(whole.prompt == prompts[2]) & (whole.multiplier == 0)]["tokens"].tolist()
    assert got == alone["tokens"].tolist()
    # the two samples of one prompt differ (own streams), and a rerun repeats them
    again = sl.generate(tiny, v, prompts, multipliers=(0, 1), **kw)
    assert again["tokens"].tolist() == whole["tokens"].tolist()
    unsteered = whole[whole.multiplier == 0]
    assert len(set(unsteered["tokens"])) > 1
