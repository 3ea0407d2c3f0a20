from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_logprobs import seq_logprob

import steerlens as sl
from steerlens.logprobs import encode_pairs, pair_logprobs
from steerlens.models import tiny_hf_model


@pytest.fixture(scope="module")
def pairs():
    return sl.load_pairs(sl.demo_data_path("train"))


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_reps_loss_and_gradient_match_the_formula(tiny, pairs, alpha):
    """reps_loss equals an independent float64 computation of the paper's objective:
    -log s(b+ l+(y_c) - l+(y)) - log s(b- l-(y) - l-(y_c)), l = log p / |r|,
    b+ = max(l0(y) - l0(y_c), 1), b- = max(l0(y_c) - l0(y), 1) with l0 unsteered."""
    layer = 2
    enc = encode_pairs(tiny.tokenizer, pairs[:3])
    v0 = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 0.7
    v_lib = v0.clone().requires_grad_(True)
    ref = pair_logprobs(tiny, enc)
    loss_lib, dplus, dminus = sl.reps_loss(
        tiny, enc, [f"blocks.{layer}.hook_resid_post"], [v_lib], alpha, ref
    )
    loss_lib.backward()

    hf, _ = tiny_hf_model(n_layers=4, d_model=64, seed=0)
    hf = hf.double()
    for p in hf.parameters():
        p.requires_grad_(False)
    v = v0.clone().double().requires_grad_(True)
    terms = []
    for e in enc:
        with torch.no_grad():
            base_c = seq_logprob(hf, layer, lambda h: h, e.prompt, e.matching)
            base_y = seq_logprob(hf, layer, lambda h: h, e.prompt, e.not_matching)
        unit = v / v.norm()

        def add(h):
            return h + alpha * v

        def null(h, unit=unit):
            return h - (h @ unit).unsqueeze(-1) * unit

        lp = {
            (k, name): seq_logprob(hf, layer, fn, e.prompt, ans) / len(ans)
            for k, fn in (("+", add), ("0", null))
            for name, ans in (("c", e.matching), ("y", e.not_matching))
        }
        l0_c, l0_y = base_c / len(e.matching), base_y / len(e.not_matching)
        b_plus = max(float(l0_y - l0_c), 1.0)
        b_minus = max(float(l0_c - l0_y), 1.0)
        d_plus = b_plus * lp[("+", "c")] - lp[("+", "y")]
        d_minus = b_minus * lp[("0", "y")] - lp[("0", "c")]
        terms.append(-F.logsigmoid(d_plus) - F.logsigmoid(d_minus))
    loss_ind = torch.stack(terms).mean()
    loss_ind.backward()
    assert math.isclose(loss_lib.item(), loss_ind.item(), rel_tol=1e-4, abs_tol=1e-6)
    cos = F.cosine_similarity(v_lib.grad.double(), v.grad, dim=0)
    assert cos > 0.9999 and torch.allclose(v_lib.grad.double(), v.grad, rtol=1e-3, atol=1e-6)
    assert dplus.shape == dminus.shape == (3,)


def test_train_reps_shares_trainer_resume_and_metadata(tiny, pairs, tmp_path):
    cfg = sl.RePSConfig(epochs=2, lr=1e-2, warmup_steps=0, batch_size=2, progress=False)
    full = sl.train_reps(tiny, pairs[:6], layers=2, config=cfg)
    assert full.metadata["method"] == "reps" and list(full.metadata["config"]["factors"]) == [
        1,
        2,
        4,
    ]
    ckpt = tmp_path / "reps.ckpt"
    one = sl.RePSConfig(epochs=1, lr=1e-2, warmup_steps=0, batch_size=2, progress=False)
    with pytest.raises(sl.CheckpointError):  # a 1-epoch run's checkpoint is another run
        sl.train_reps(tiny, pairs[:6], layers=2, config=one, checkpoint=ckpt)
        sl.train_reps(tiny, pairs[:6], layers=2, config=cfg, checkpoint=ckpt, resume=True)
    ckpt.unlink()
    calls = {"n": 0}

    def stop_after_two(info):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    cfg_ck = sl.RePSConfig(
        epochs=2, lr=1e-2, warmup_steps=0, batch_size=2, progress=False, checkpoint_every=1
    )
    with pytest.raises(KeyboardInterrupt):
        sl.train_reps(
            tiny, pairs[:6], layers=2, config=cfg_ck, checkpoint=ckpt, callback=stop_after_two
        )
    resumed = sl.train_reps(tiny, pairs[:6], layers=2, config=cfg_ck, checkpoint=ckpt, resume=True)
    again = sl.train_reps(tiny, pairs[:6], layers=2, config=cfg_ck)
    assert torch.equal(
        resumed.vectors["blocks.2.hook_resid_post"], again.vectors["blocks.2.hook_resid_post"]
    )
    with pytest.raises(sl.ConfigError, match="RePSConfig"):
        sl.train_reps(tiny, pairs[:2], layers=1, config=sl.BiPOConfig(progress=False))
    with pytest.raises(sl.ConfigError, match="factors"):
        sl.RePSConfig(factors=(0.0,))


@pytest.mark.slow
def test_train_reps_moves_heldout_margin_monotonically(smol, shared_data):
    train = sl.load_pairs(shared_data / "bipo/power-seeking/train.csv", invalid="skip")[:32]
    test = sl.load_pairs(shared_data / "bipo/power-seeking/test.csv")[:24]
    cfg = sl.RePSConfig(epochs=2, lr=1e-2, warmup_steps=0, progress=False)
    v = sl.train_reps(smol, train, layers=12, config=cfg)
    margins = sl.preference_margin(smol, v, test, multipliers=(-2, -1, 0, 1, 2))["margin"]
    assert margins.is_monotonic_increasing and margins.iloc[-1] > margins.iloc[0] + 1.0, margins
