"""Training at the floor: the cached residual below the steered layer gives today's numbers."""

from __future__ import annotations

import pytest
import torch
from interrupting import fail_at_call

import steerlens as sl
from steerlens.core.encoding import encode_pairs
from steerlens.core.logprobs import batch_logprobs, pair_logprobs
from steerlens.methods import bipo as bipo_mod
from steerlens.methods.prefix import PrefixCache, floor_supported, start_block
from steerlens.methods.reps import NullHook
from steerlens.steering.hookpoints import SteerHook

FAST = {"lr": 1e-2, "warmup_steps": 0, "progress": False}


@pytest.fixture(scope="module")
def pairs():
    return sl.load_pairs(sl.demo_data_path("train"))


def _both_ways(model, enc, idx, hook_names, make_hook, cache_kwargs=None):
    """Log-probs and gradients through the full forward and through the cache."""
    gen = torch.Generator().manual_seed(1)
    base = [torch.randn(model.cfg.d_model, generator=gen) for _ in hook_names]
    cache = PrefixCache(model, enc, hook_names, **(cache_kwargs or {}))
    out = []
    for path in ("full", "floor"):
        params = [b.clone().requires_grad_(True) for b in base]
        hooks = [(n, make_hook(p)) for n, p in zip(hook_names, params, strict=True)]
        if path == "full":
            lp = batch_logprobs(model, [enc[i] for i in idx], hooks)
        else:
            lp = cache.logprobs(idx, hooks)
        # a loss that weights rows differently, so the gradient checks every row
        loss = (lp * torch.linspace(0.5, 1.5, lp.shape[0])).sum()
        grads = torch.autograd.grad(loss, params)
        out.append((lp.detach(), grads))
    return out, cache


HOOK_SETS = [
    ["blocks.1.hook_resid_post"],
    ["blocks.2.hook_resid_pre"],
    ["blocks.2.hook_resid_mid"],
    ["blocks.3.hook_resid_post"],  # the last block: only the final norm runs
    ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"],
    ["blocks.1.hook_resid_post", "blocks.2.hook_resid_mid"],
]


@pytest.mark.parametrize("hook_names", HOOK_SETS, ids=lambda h: "+".join(h))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_logprobs_and_gradients_equal_the_full_forward(tiny, pairs, hook_names, sign):
    enc = encode_pairs(tiny.tokenizer, pairs[:8])
    idx = [5, 0, 3, 7]  # pairs of different lengths: rows are padded
    (full, g_full), (floor, g_floor) = _both_ways(
        tiny, enc, idx, hook_names, lambda p: SteerHook(p, sign, "all")
    )[0]
    assert torch.allclose(floor, full, atol=1e-5, rtol=0)
    for a, b in zip(g_floor, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_rePS_nulling_hook_equal_too(tiny, pairs):
    enc = encode_pairs(tiny.tokenizer, pairs[:6])
    (full, g_full), (floor, g_floor) = _both_ways(
        tiny, enc, [4, 1, 2], ["blocks.1.hook_resid_post"], NullHook
    )[0]
    assert torch.allclose(floor, full, atol=1e-5, rtol=0)
    assert torch.allclose(g_floor[0], g_full[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_independent_of_the_tokenizers_padding_side(pairs, padding_side):
    model = sl.tiny_model(n_layers=4, d_model=64, seed=0)
    model.tokenizer.padding_side = padding_side
    enc = encode_pairs(model.tokenizer, pairs[:6])
    (full, _), (floor, _) = _both_ways(
        model, enc, [0, 5, 2], ["blocks.1.hook_resid_post"], lambda p: SteerHook(p, 1.0, "all")
    )[0]
    assert torch.allclose(floor, full, atol=1e-5, rtol=0)


def test_over_the_budget_pairs_are_recomputed(tiny, pairs):
    enc = encode_pairs(tiny.tokenizer, pairs[:8])
    budget = 2.5 * enc[0].packed_length * 64 * 4 / 2**20  # room for about two pairs
    ((full, g_full), (floor, g_floor)), cache = _both_ways(
        tiny,
        enc,
        [0, 6, 1, 7],
        ["blocks.1.hook_resid_post"],
        lambda p: SteerHook(p, 1.0, "all"),
        {"budget_mb": budget},
    )
    assert 1 <= cache.cached < len(enc)
    assert cache.cached_bytes <= budget * 2**20
    assert torch.allclose(floor, full, atol=1e-5, rtol=0)
    assert torch.allclose(g_floor[0], g_full[0], atol=1e-5, rtol=1e-5)


def test_steps_do_not_run_the_blocks_below(pairs):
    """After the cache is filled, a training step calls only blocks >= the start block
    (blocks[0] is entered by its pre-hook only, to read the arguments the model passes)."""
    model = sl.tiny_model(n_layers=4, d_model=64, seed=0)
    trainer = bipo_mod.BiPOTrainer(
        model, pairs[:8], layers=1, config=sl.BiPOConfig(epochs=1, **FAST)
    )
    with bipo_mod.frozen(model):
        trainer.prepare()
        assert trainer.prefix is not None and trainer.prefix.start == 2
        calls = [0] * 4
        handles = [
            b.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
            for i, b in enumerate(model.blocks)
        ]
        try:
            trainer.step([0, 1, 2, 3], 1.0)
        finally:
            for h in handles:
                h.remove()
    assert calls == [0, 0, 1, 1]


def _train(model, data, method, cache_mb, **kw):
    if method == "bipo":
        cfg = sl.BiPOConfig(epochs=2, batch_size=3, cache_mb=cache_mb, **FAST)
        return sl.train_bipo(model, data, config=cfg, **kw)
    cfg = sl.RePSConfig(epochs=2, batch_size=3, cache_mb=cache_mb, **FAST)
    return sl.train_reps(model, data, config=cfg, **kw)


@pytest.mark.parametrize("method", ["bipo", "reps"])
@pytest.mark.parametrize("layers", [1, [0, 2]])
def test_training_equals_the_full_forward_path(tiny, pairs, method, layers):
    data, held = pairs[:9], pairs[20:24]
    full = _train(tiny, data, method, 0.0, layers=layers, eval_pairs=held)
    floor = _train(tiny, data, method, 1024.0, layers=layers, eval_pairs=held)
    for h in full.hook_names:
        assert torch.allclose(floor.vectors[h], full.vectors[h], atol=1e-5, rtol=1e-4)
    for a, b in zip(floor.metadata["history"], full.metadata["history"], strict=True):
        for key in ("train_loss", "eval_loss_plus", "eval_loss_minus", "eval_margin_plus"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_resume_with_the_cache_equals_uninterrupted(tiny, pairs, tmp_path, monkeypatch):
    data = pairs[:9]
    cfg = sl.BiPOConfig(epochs=2, batch_size=3, checkpoint_every=1, **FAST)
    full = sl.train_bipo(tiny, data, layers=2, config=cfg)
    no_cache = sl.train_bipo(
        tiny, data, layers=2, config=sl.BiPOConfig(**{**vars(cfg), "cache_mb": 0})
    )
    ckpt = tmp_path / "run.ckpt"
    restore = fail_at_call(monkeypatch, bipo_mod, "bipo_loss", 4)  # first step of epoch 2
    with pytest.raises(KeyboardInterrupt):
        sl.train_bipo(tiny, data, layers=2, config=cfg, checkpoint=ckpt)
    restore()
    # the budget does not belong to the run's identity: resume with the cache off
    resumed = sl.train_bipo(
        tiny,
        data,
        layers=2,
        config=sl.BiPOConfig(**{**vars(cfg), "cache_mb": 0}),
        checkpoint=ckpt,
        resume=True,
    )
    again = sl.train_bipo(tiny, data, layers=2, config=cfg, checkpoint=ckpt, resume=True)
    h = "blocks.2.hook_resid_post"
    assert torch.equal(again.vectors[h], resumed.vectors[h])  # finished run: loaded as saved
    assert torch.allclose(resumed.vectors[h], full.vectors[h], atol=1e-5)
    assert torch.allclose(no_cache.vectors[h], full.vectors[h], atol=1e-5)
    assert resumed.metadata["steps"] == 6


def test_falls_back_where_blocks_get_different_arguments(pairs):
    """A model whose blocks do not all receive the same arguments (here: block 2's position
    ids are shifted by a pre-hook) is trained through the full forward, correctly."""
    model = sl.tiny_model(n_layers=4, d_model=64, seed=3)

    def shift(module, args, kwargs):
        if kwargs.get("position_ids") is not None:
            kwargs = {**kwargs, "position_ids": kwargs["position_ids"] + 1}
        return args, kwargs

    handle = model.blocks[2].register_forward_pre_hook(shift, with_kwargs=True)
    try:
        assert not floor_supported(model, ["blocks.1.hook_resid_post"])
        trainer = bipo_mod.BiPOTrainer(
            model, pairs[:6], layers=1, config=sl.BiPOConfig(epochs=1, **FAST)
        )
        with bipo_mod.frozen(model):
            trainer.prepare()
        assert trainer.prefix is None
    finally:
        handle.remove()


def test_start_block_and_support(tiny):
    assert start_block(["blocks.2.hook_resid_post", "blocks.1.hook_resid_pre"]) == 1
    assert start_block(["hook_embed"]) is None
    assert not floor_supported(tiny, ["hook_embed"])
    assert floor_supported(tiny, ["blocks.1.hook_resid_post"])


@pytest.mark.slow
@pytest.mark.parametrize("layers", [[12], [8, 12]], ids=["L12", "L8+12"])
def test_smollm2_losses_and_gradients_equal_the_full_forward(smol, shared_data, layers):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = sl.load_pairs(
            shared_data / "bipo/power-seeking/train.csv", invalid="skip", duplicates="ignore"
        )[:4]
    enc = encode_pairs(smol.tokenizer, data)
    names = [f"blocks.{n}.hook_resid_post" for n in layers]
    assert floor_supported(smol, names)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(576, generator=gen) for _ in names]
    cache = PrefixCache(smol, enc, names)
    ref = pair_logprobs(smol, enc)
    for idx, d in (([0, 3], 1.0), ([2, 1], -1.0)):
        got = []
        for path in ("full", "floor"):
            params = [b.clone().requires_grad_(True) for b in base]
            fn = (lambda hooks, idx=idx: cache.logprobs(idx, hooks)) if path == "floor" else None
            loss, _ = sl.bipo_loss(
                smol, [enc[i] for i in idx], names, params, d, 0.1, ref[idx], logprobs_fn=fn
            )
            loss.backward()
            got.append((loss.item(), [p.grad for p in params]))
        (l_full, g_full), (l_floor, g_floor) = got
        assert l_floor == pytest.approx(l_full, abs=1e-5)
        for a, b in zip(g_floor, g_full, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "64"])
def test_cache_budget_is_checked(bad):
    with pytest.raises(sl.ConfigError, match="BiPOConfig.cache_mb"):
        sl.BiPOConfig(cache_mb=bad)


def test_a_hook_below_the_cache_is_refused(tiny, pairs):
    enc = encode_pairs(tiny.tokenizer, pairs[:2])
    cache = PrefixCache(tiny, enc, ["blocks.2.hook_resid_post"])
    hook = SteerHook(torch.ones(64), 1.0, "all")
    with pytest.raises(ValueError, match="below block 3"):
        cache.logprobs([0, 1], [("blocks.1.hook_resid_post", hook)])
