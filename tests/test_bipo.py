from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from interrupting import fail_at_call
from reference_logprobs import seq_logprob

import steerlens as sl
from steerlens.core.encoding import encode_pairs
from steerlens.core.errors import CheckpointError, ConfigError, TrainingDivergedError
from steerlens.core.logprobs import pair_logprobs
from steerlens.core.models import tiny_hf_model
from steerlens.methods import bipo as bipo_mod

FAST = dict(lr=1e-2, warmup_steps=0, weight_decay=0.0, progress=False)


@pytest.fixture(scope="module")
def pairs():
    return sl.load_pairs(sl.demo_data_path("train"))


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("d", [1.0, -1.0])
def test_loss_and_gradient_parity_with_formula(tiny, pairs, d, share_prompt):
    """bipo_loss == -mean log sigmoid(d*beta*z) computed independently, loss and gradient."""
    layer, beta = 2, 0.1
    batch = pairs[:3]
    enc = encode_pairs(tiny.tokenizer, batch)
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(64, generator=g) * 0.5

    # library
    v_lib = v0.clone().requires_grad_(True)
    ref = pair_logprobs(tiny, enc)
    loss_lib, _ = sl.bipo_loss(
        tiny, enc, [f"blocks.{layer}.hook_resid_post"], [v_lib], d, beta, ref, share_prompt
    )
    loss_lib.backward()

    # independent: a separate HF model with identical weights, one sequence at a time
    hf, _ = tiny_hf_model(n_layers=4, d_model=64, seed=0)
    for p in hf.parameters():
        p.requires_grad_(False)
    v_ind = v0.clone().double().requires_grad_(True)
    hf = hf.double()
    terms = []
    zero = torch.zeros(64, dtype=torch.float64)
    for e in enc:
        lp = {}
        for key, ans in (("T", e.matching), ("O", e.not_matching)):
            steered = seq_logprob(hf, layer, lambda h: h + d * v_ind, e.prompt, ans)
            with torch.no_grad():
                base = seq_logprob(hf, layer, lambda h: h + zero, e.prompt, ans)
            lp[key] = steered - base
        z = lp["T"] - lp["O"]
        terms.append(-F.logsigmoid(d * beta * z))
    loss_ind = torch.stack(terms).mean()
    loss_ind.backward()

    assert math.isclose(loss_lib.item(), loss_ind.item(), rel_tol=1e-4, abs_tol=1e-6)
    assert v_lib.grad is not None and v_ind.grad is not None
    assert torch.allclose(v_lib.grad.double(), v_ind.grad, rtol=1e-3, atol=1e-6)
    assert v_ind.grad.norm() > 0


def test_training_is_deterministic_and_moves_margin(tiny, pairs):
    cfg = sl.BiPOConfig(epochs=2, batch_size=4, seed=3, **FAST)
    a = sl.train_bipo(tiny, pairs[:12], layers=2, config=cfg)
    b = sl.train_bipo(tiny, pairs[:12], layers=2, config=cfg)
    assert torch.equal(a.vectors["blocks.2.hook_resid_post"], b.vectors["blocks.2.hook_resid_post"])
    c = sl.train_bipo(tiny, pairs[:12], layers=2, config=sl.BiPOConfig(epochs=2, seed=4, **FAST))
    assert not torch.equal(
        a.vectors["blocks.2.hook_resid_post"], c.vectors["blocks.2.hook_resid_post"]
    )
    from steerlens.evaluation.metrics import preference_margin

    df = preference_margin(tiny, a, pairs[:12], multipliers=(-1, 0, 1))
    m = df.set_index("multiplier")["margin"]
    assert m[-1.0] < m[0.0] < m[1.0]
    assert sl.active_hooks(tiny) == []


def test_metadata_records_config_and_history(tiny, pairs):
    ev = sl.load_pairs(sl.demo_data_path("eval"))[:4]
    cfg = sl.BiPOConfig(epochs=2, behaviour="power-seeking", **FAST)
    v = sl.train_bipo(tiny, pairs[:8], layers=-1, config=cfg, eval_pairs=ev)
    meta = v.metadata
    assert meta["method"] == "bipo" and meta["layers"] == [3]
    assert meta["config"]["lr"] == 1e-2 and meta["config"]["beta"] == 0.1
    assert meta["behaviour"] == "power-seeking" and meta["n_train"] == 8
    hist = meta["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    for key in (
        "train_loss",
        "eval_loss_plus",
        "eval_loss_minus",
        "eval_moved_plus",
        "eval_moved_minus",
    ):
        assert all(math.isfinite(h[key]) for h in hist), key


@pytest.mark.parametrize("cache_mb", [0.0, 1024.0])
def test_reference_is_computed_once(tiny, pairs, monkeypatch, cache_mb):
    calls = []
    real = bipo_mod.BiPOTrainer.pair_logprobs

    def spy(self, indices, factory, *a, **k):
        calls.append(factory)
        return real(self, indices, factory, *a, **k)

    monkeypatch.setattr(bipo_mod.BiPOTrainer, "pair_logprobs", spy)
    cfg = sl.BiPOConfig(epochs=3, cache_mb=cache_mb, **FAST)
    sl.train_bipo(tiny, pairs[:8], layers=1, config=cfg)
    assert calls == [None]  # one unsteered pass over the training pairs, for all 3 epochs


def test_multi_layer_joint(tiny, pairs):
    v = sl.train_bipo(tiny, pairs[:8], layers=[1, 3], config=sl.BiPOConfig(epochs=1, **FAST))
    assert v.hook_names == ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    assert all(n > 0 for n in v.norms().values())


def test_resume_after_interruption_equals_uninterrupted(tiny, pairs, tmp_path, monkeypatch):
    cfg = sl.BiPOConfig(epochs=3, batch_size=4, checkpoint_every=1, **FAST)
    data = pairs[:12]  # 3 steps per epoch
    full = sl.train_bipo(tiny, data, layers=2, config=cfg)

    ckpt = tmp_path / "run.ckpt"
    restore = fail_at_call(monkeypatch, bipo_mod, "bipo_loss", 5)  # in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        sl.train_bipo(tiny, data, layers=2, config=cfg, checkpoint=ckpt)
    restore()
    assert ckpt.exists() and sl.active_hooks(tiny) == []
    resumed = sl.train_bipo(tiny, data, layers=2, config=cfg, checkpoint=ckpt, resume=True)
    h = "blocks.2.hook_resid_post"
    assert torch.equal(full.vectors[h], resumed.vectors[h])
    assert resumed.metadata["steps"] == 9


def test_resume_rejects_other_run(tiny, pairs, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    sl.train_bipo(
        tiny, pairs[:4], layers=1, config=sl.BiPOConfig(epochs=1, **FAST), checkpoint=ckpt
    )
    with pytest.raises(CheckpointError, match="another run"):
        sl.train_bipo(
            tiny,
            pairs[:4],
            layers=2,
            config=sl.BiPOConfig(epochs=1, **FAST),
            checkpoint=ckpt,
            resume=True,
        )
    with pytest.raises(ConfigError, match="resume=True needs checkpoint"):
        sl.train_bipo(tiny, pairs[:4], layers=1, resume=True)


def test_nan_loss_stops_with_last_good_vector(tiny, pairs, monkeypatch):
    real = bipo_mod.bipo_loss
    seen = []

    def poisoned(model, batch, hooks, vectors, *a, **k):
        seen.append(vectors[0].detach().clone())
        loss, z = real(model, batch, hooks, vectors, *a, **k)
        return (loss * float("nan"), z) if len(seen) == 3 else (loss, z)

    monkeypatch.setattr(bipo_mod, "bipo_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 2") as info:
        sl.train_bipo(tiny, pairs[:12], layers=1, config=sl.BiPOConfig(epochs=1, **FAST))
    err = info.value
    assert err.step == 2 and err.vector is not None
    # the last vector whose loss was finite: the one used at step 1 (after one update)
    assert torch.equal(err.vector.vectors["blocks.1.hook_resid_post"], seen[1])
    assert not torch.equal(seen[1], seen[2])
    assert sl.active_hooks(tiny) == []


def test_config_validation():
    with pytest.raises(ConfigError, match="BiPOConfig.lr must be a positive finite number"):
        sl.BiPOConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="batch_size"):
        sl.BiPOConfig(batch_size=0)
    with pytest.raises(ConfigError, match="hook"):
        sl.BiPOConfig(hook="attn")


def test_lr_schedule_warmup_then_cosine():
    f = [bipo_mod.lr_factor(s, 10, 110) for s in range(111)]
    assert f[0] == 0 and f[5] == 0.5 and f[10] == 1.0
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[110] == 0.0


def test_callback_sees_every_step(tiny, pairs):
    seen = []
    sl.train_bipo(
        tiny, pairs[:8], layers=1, config=sl.BiPOConfig(epochs=2, **FAST), callback=seen.append
    )
    assert [s["step"] for s in seen] == [1, 2, 3, 4]
    assert all(s["d"] in (-1.0, 1.0) and math.isfinite(s["loss"]) for s in seen)
    assert seen[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # v starts at zero


def test_defaults_follow_the_authors_effective_run():
    """CaoYuanpu/BiPO train.py: weight_decay is never passed (0.0), HF clips at 1.0."""
    cfg = sl.BiPOConfig()
    assert (cfg.lr, cfg.beta, cfg.batch_size, cfg.warmup_steps) == (5e-4, 0.1, 4, 100)
    assert cfg.weight_decay == 0.0
    assert cfg.max_grad_norm == 1.0
    assert cfg.schedule_epochs is None
    with pytest.raises(ConfigError, match="schedule_epochs"):
        sl.BiPOConfig(epochs=5, schedule_epochs=4)


def test_schedule_epochs_matches_hf_cosine_schedule(tiny, pairs):
    """epochs=2 of a 10-epoch schedule: the learning rate of each step equals transformers'
    get_cosine_schedule_with_warmup over the full 10 epochs (independent computation)."""
    from transformers import get_cosine_schedule_with_warmup

    lrs = []
    cfg = sl.BiPOConfig(
        epochs=2, schedule_epochs=10, lr=1e-2, warmup_steps=3, batch_size=2, progress=False
    )
    sub = pairs[:4]
    sl.train_bipo(tiny, sub, layers=1, config=cfg, callback=lambda i: lrs.append(i["lr"]))
    steps_per_epoch = 2
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-2)
    sched = get_cosine_schedule_with_warmup(opt, 3, steps_per_epoch * 10)
    expected = []
    for _ in range(len(lrs)):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert lrs[-1] > 0.9e-2  # still near the peak: the 10-epoch schedule has barely decayed


def test_gradient_clipped_at_max_grad_norm(tiny, pairs, monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        seen.append(max_norm)
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    sl.train_bipo(tiny, pairs[:4], layers=1, config=sl.BiPOConfig(epochs=1, progress=False))
    assert seen and set(seen) == {1.0}
