from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_logprobs import seq_logprob

import steerlens as sl
from steerlens.core.encoding import encode_pairs
from steerlens.core.logprobs import pair_logprobs
from steerlens.core.models import tiny_hf_model
from steerlens.methods.reps import NullHook


@pytest.fixture(scope="module")
def pairs():
    return sl.load_pairs(sl.demo_data_path("train"))


@pytest.mark.parametrize(("alpha", "beta_scale"), [(1.0, 1.0), (4.0, 1.0), (2.0, 0.05)])
def test_reps_loss_and_gradient_match_the_formula(tiny, pairs, alpha, beta_scale):
    """reps_loss equals an independent float64 computation of the authors' objective
    (arXiv 2505.20809 section 3; AxBench ``preference_loss(loss_type="scaled_simpo")`` and
    ``PreferenceVectorIntervention``): the mean over the 2B "add" and "sub" examples of
    -log s(b+ log p+(y_c)/|x y_c| - log p+(y)/|x y|) and
    -log s(b- log p-(y)/|x y| - log p-(y_c)/|x y_c|), summed log-probs, whole-row lengths,
    b+ = max(s * (log p0(y) - log p0(y_c)), 1), b- = max(s * (log p0(y_c) - log p0(y)), 1),
    p+ steered by h + alpha v, p- by h - relu(h.v)/|v|^2 v."""
    layer = 2
    enc = encode_pairs(tiny.tokenizer, pairs[:3])
    v0 = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 0.7
    v_lib = v0.clone().requires_grad_(True)
    ref = pair_logprobs(tiny, enc)
    loss_lib, dplus, dminus = sl.reps_loss(
        tiny, enc, [f"blocks.{layer}.hook_resid_post"], [v_lib], alpha, ref, beta_scale=beta_scale
    )
    loss_lib.backward()

    hf, _ = tiny_hf_model(n_layers=4, d_model=64, seed=0)
    hf = hf.double()
    for p in hf.parameters():
        p.requires_grad_(False)
    v = v0.clone().double().requires_grad_(True)
    add_terms, sub_terms = [], []
    for e in enc:
        with torch.no_grad():
            base_c = seq_logprob(hf, layer, lambda h: h, e.prompt, e.matching)
            base_y = seq_logprob(hf, layer, lambda h: h, e.prompt, e.not_matching)

        def add(h):
            return h + alpha * v

        def null(h):
            coef = torch.clamp(h @ v, min=0.0) / (v * v).sum()
            return h - coef.unsqueeze(-1) * v

        row_c, row_y = len(e.prompt) + len(e.matching), len(e.prompt) + len(e.not_matching)
        lp = {
            (k, name): seq_logprob(hf, layer, fn, e.prompt, ans) / row
            for k, fn in (("+", add), ("0", null))
            for name, ans, row in (("c", e.matching, row_c), ("y", e.not_matching, row_y))
        }
        b_plus = max(beta_scale * float(base_y - base_c), 1.0)
        b_minus = max(beta_scale * float(base_c - base_y), 1.0)
        add_terms.append(-F.logsigmoid(b_plus * lp[("+", "c")] - lp[("+", "y")]))
        sub_terms.append(-F.logsigmoid(b_minus * lp[("0", "y")] - lp[("0", "c")]))
    loss_ind = torch.stack(add_terms + sub_terms).mean()
    loss_ind.backward()
    assert math.isclose(loss_lib.item(), loss_ind.item(), rel_tol=1e-4, abs_tol=1e-6)
    cos = F.cosine_similarity(v_lib.grad.double(), v.grad, dim=0)
    assert cos > 0.9999 and torch.allclose(v_lib.grad.double(), v.grad, rtol=1e-3, atol=1e-6)
    assert dplus.shape == dminus.shape == (3,)


def test_null_hook_removes_only_the_positive_component():
    v = torch.tensor([0.0, 2.0, 0.0])
    h = torch.tensor([[[1.0, 3.0, -1.0], [1.0, -3.0, 5.0]]])
    out = NullHook(v)(h, None)
    assert torch.equal(out, torch.tensor([[[1.0, 0.0, -1.0], [1.0, -3.0, 5.0]]]))
    assert torch.equal(NullHook(torch.zeros(3))(h, None), h)  # v = 0: nothing removed


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
    train = sl.load_pairs(shared_data / "bipo/power-seeking/train.csv", invalid="skip")[:16]
    test = sl.load_pairs(shared_data / "bipo/power-seeking/test.csv")[:12]
    # lr 3e-2: at BiPO's quick lr (1e-2) the authors' objective moves this margin by < 0.2
    # nats over -2..+2, not always monotonically (measured: docs/howto/train.md)
    cfg = sl.RePSConfig(epochs=2, lr=3e-2, warmup_steps=0, progress=False)
    v = sl.train_reps(smol, train, layers=12, config=cfg)
    margins = sl.preference_margin(smol, v, test, multipliers=(-2, 0, 2))["margin"]
    assert margins.is_monotonic_increasing and margins.iloc[-1] > margins.iloc[0] + 0.3, margins
