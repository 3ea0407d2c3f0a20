"""The model is never left steered: after an exception anywhere, no hook remains."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.encoding import encode_prompt
from steerlens.experiments import grid as grid_mod
from steerlens.methods import bipo as bipo_mod

H = "blocks.1.hook_resid_post"


def _clean(model):
    return sl.active_hooks(model) == [] and not sl.is_steered(model)


def test_exception_inside_apply(tiny):
    v = sl.SteeringVector({H: torch.ones(64)})
    with pytest.raises(ZeroDivisionError), v.apply(tiny):
        1 / 0  # noqa: B018
    assert _clean(tiny)


@pytest.mark.parametrize("cache_mb", [0.0, 1024.0])
def test_exception_inside_training(tiny, monkeypatch, cache_mb):
    real = bipo_mod.BiPOTrainer.batch_logprobs
    calls = {"n": 0}

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second steered training step
            raise RuntimeError("boom in the forward")
        return real(*a, **k)

    monkeypatch.setattr(bipo_mod.BiPOTrainer, "batch_logprobs", boom)
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:8]
    cfg = sl.BiPOConfig(epochs=1, progress=False, cache_mb=cache_mb)
    with pytest.raises(RuntimeError, match="boom"):
        sl.train_bipo(tiny, pairs, layers=1, config=cfg)
    assert _clean(tiny)
    assert not any(p.requires_grad for p in tiny.parameters())


def test_exception_inside_a_hook_during_training(tiny, monkeypatch):
    """An error raised by the steering hook itself, mid-forward."""
    real_call = bipo_mod.SteerHook.__call__
    calls = {"n": 0}

    def failing(self, act, hook):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("hook failed")
        return real_call(self, act, hook)

    monkeypatch.setattr(bipo_mod.SteerHook, "__call__", failing)
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:8]
    with pytest.raises(RuntimeError, match="hook failed"):
        sl.train_bipo(tiny, pairs, layers=1, config=sl.BiPOConfig(epochs=1, progress=False))
    assert _clean(tiny)


def test_exception_inside_sweep(tiny, monkeypatch):
    items = sl.load_pairs(sl.demo_data_path("ab"))

    def bad_score(*a, **k):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(grid_mod, "ab_score", bad_score)  # the engine under sweep_layers
    with pytest.raises(RuntimeError, match="scoring failed"):
        sl.sweep_layers(tiny, items[:4], items[4:], layers=[1], method="caa", progress=False)
    assert _clean(tiny)


def test_exception_inside_generation(tiny):
    v = sl.SteeringVector({H: torch.ones(64)})
    with pytest.raises(Exception):  # noqa: B017 - whatever the bridge raises for bad tokens
        sl.generate(tiny, v, ["hi"], multipliers=(1,), max_new_tokens=-5)
    assert _clean(tiny)
    with pytest.raises((IndexError, RuntimeError)), v.apply(tiny):
        tiny.generate(torch.tensor([[10**7]]), max_new_tokens=2, verbose=False)
    assert _clean(tiny)


def test_nested_and_interleaved_apply_add_exactly(tiny):
    g = torch.Generator().manual_seed(0)
    vs = [
        sl.SteeringVector({f"blocks.{i % 3}.hook_resid_post": torch.randn(64, generator=g)})
        for i in range(4)
    ]
    x = torch.tensor([encode_prompt(tiny.tokenizer, "Hello")])
    with vs[0].apply(tiny, 0.5), vs[1].apply(tiny, -1), vs[2].apply(tiny), vs[3].apply(tiny, 2):
        nested = tiny(x)
    total = 0.5 * vs[0] - vs[1] + vs[2] + 2 * vs[3]
    with total.apply(tiny):
        combined = tiny(x)
    assert torch.allclose(nested, combined, atol=1e-5)
    assert _clean(tiny)
    # an exception in the innermost block unwinds every level
    with pytest.raises(KeyError), vs[0].apply(tiny), vs[1].apply(tiny), vs[2].apply(tiny):
        raise KeyError("x")
    assert _clean(tiny)
    assert torch.equal(tiny(x), tiny(x))
