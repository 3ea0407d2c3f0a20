"""Ablation, projection caps and their composition, against independent computations."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.errors import ConfigError, VectorError, VectorFileError
from steerlens.methods.reps import NullHook
from steerlens.steering.interventions import clamp_along

H = "blocks.1.hook_resid_post"


def _r(seed=0, width=64):
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def _ids(n=2, width=7, seed=0):
    return torch.randint(100, 5000, (n, width), generator=torch.Generator().manual_seed(seed))


def _manual(tiny, ids, fn, hook=H):
    """Logits with a hand-written hook applying ``fn`` (float64) at ``hook``."""

    def h(act, hook):
        return fn(act.double()).to(act.dtype)

    return tiny.run_with_hooks(ids, fwd_hooks=[(hook, h)])


def _captured(tiny, ids, hook=H):
    seen = {}

    def grab(act, hook):
        seen["act"] = act.detach().clone()

    tiny.run_with_hooks(ids, fwd_hooks=[(hook, grab)])
    return seen["act"]


def test_ablate_matches_independent_and_zeroes_projection(tiny):
    r = _r()
    ids = _ids()
    u = (r / r.norm()).double()
    want = _manual(tiny, ids, lambda a: a - torch.einsum("bpd,d->bp", a, u)[..., None] * u)
    inter = sl.Intervention([(H, sl.Ablate(r))])
    with inter.apply(tiny):
        got = tiny(ids)
        act = _captured(tiny, ids)
    assert torch.allclose(got, want, atol=1e-5)
    assert float((act.double() @ u).abs().max()) < 1e-6
    assert not torch.allclose(got, tiny(ids), atol=1e-3)  # it did something


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.0), (1.0, None)])
def test_cap_matches_independent_and_holds_bounds(tiny, lo, hi):
    r = _r(1)
    ids = _ids()
    u = (r / r.norm()).double()

    def cap(a):
        p = torch.einsum("bpd,d->bp", a, u)
        q = p.clone()
        if lo is not None:
            q = torch.where(q < lo, torch.full_like(q, lo), q)
        if hi is not None:
            q = torch.where(q > hi, torch.full_like(q, hi), q)
        return a + (q - p)[..., None] * u

    want = _manual(tiny, ids, cap)
    with sl.Intervention([(H, sl.Cap(r, min=lo, max=hi))]).apply(tiny):
        got = tiny(ids)
        proj = _captured(tiny, ids).double() @ u
    assert torch.allclose(got, want, atol=1e-5)
    if lo is not None:
        assert float(proj.min()) >= lo - 1e-5
    if hi is not None:
        assert float(proj.max()) <= hi + 1e-5


def test_add_equals_steering_vector(tiny):
    v = sl.SteeringVector({H: _r(2) * 3})
    ids = _ids()
    with v.apply(tiny, 1.5):
        want = tiny(ids)
    with sl.Intervention.from_vector(v).apply(tiny, 1.5):
        got = tiny(ids)
    assert torch.allclose(got, want, atol=1e-6)


def test_composition_order_is_respected(tiny):
    r = _r(3)
    u = r / r.norm()
    ids = _ids()
    ablate_then_add = sl.Intervention([(H, sl.Ablate(r))]) + sl.Intervention([(H, sl.Add(2 * u))])
    add_then_ablate = sl.Intervention([(H, sl.Add(2 * u)), (H, sl.Ablate(r))])
    with ablate_then_add.apply(tiny):
        p1 = _captured(tiny, ids) @ u
    with add_then_ablate.apply(tiny):
        p2 = _captured(tiny, ids) @ u
    assert torch.allclose(p1, torch.full_like(p1, 2.0), atol=1e-5)
    assert float(p2.abs().max()) < 1e-5


def test_ablation_everywhere_leaves_nothing_along_r(tiny):
    r = _r(4)
    u = (r / r.norm()).double()
    ids = _ids()
    abl = sl.ablation(tiny, r)
    assert len(abl.ops) == 3 * tiny.cfg.n_layers
    with abl.apply(tiny):
        for layer in range(tiny.cfg.n_layers):
            act = _captured(tiny, ids, f"blocks.{layer}.hook_resid_post").double()
            assert float((act @ u).abs().max()) < 1e-5 * max(1.0, float(act.abs().max()))
    plain = _captured(tiny, ids, "blocks.2.hook_resid_post").double()
    assert float((plain @ u).abs().max()) > 1e-3


def test_per_row_multiplier_zero_rows_are_untouched(tiny):
    r = _r(5)
    inter = sl.Intervention([(H, sl.Ablate(r)), (H, sl.Add(r))])
    ids = _ids(n=3)
    with inter.apply(tiny, multiplier=[1.0, 0.0, 2.0]):
        got = tiny(ids)
    plain = tiny(ids)
    assert torch.equal(got[1], plain[1])
    with inter.apply(tiny, multiplier=2.0):
        two = tiny(ids)
    assert torch.allclose(got[2], two[2], atol=1e-5)


def test_null_hook_is_a_cap_at_zero():
    g = torch.Generator().manual_seed(0)
    h, v = torch.randn(3, 5, 16, generator=g), torch.randn(16, generator=g)
    old = h - torch.relu(h @ v)[..., None] / (v @ v) * v  # RePS's formula, written out
    assert torch.allclose(NullHook(v)(h, None), old, atol=1e-6)
    assert torch.allclose(sl.Cap(v, max=0.0)(h, None), old, atol=1e-6)
    assert torch.equal(clamp_along(h, torch.zeros(16), max=0.0), h)  # zero vector: no change


def test_save_load_bit_exact_and_gguf_refused(tmp_path, tiny):
    r = _r(6)
    inter = sl.Intervention(
        [(H, sl.Ablate(r)), ("blocks.2.hook_attn_out", sl.Cap(r * 2, min=-1.0, max=0.5)),
         ("blocks.3.hook_resid_post", sl.Add(r / 3))],
        {"behaviour": "test"},
    )  # fmt: skip
    path = inter.save(tmp_path / "i.safetensors")
    back = sl.Intervention.load(path)
    assert [(n, type(op).__name__) for n, op in back.ops] == [
        (n, type(op).__name__) for n, op in inter.ops
    ]
    for (_, a), (_, b) in zip(inter.ops, back.ops, strict=True):
        ta = a.vector if isinstance(a, sl.Add) else a.direction
        tb = b.vector if isinstance(b, sl.Add) else b.direction
        assert torch.equal(ta, tb)
    assert back.ops[1][1].min == -1.0 and back.ops[1][1].max == 0.5
    assert back.metadata == {"behaviour": "test"}
    with pytest.raises(VectorError, match="ablate, cap"):
        inter.to_gguf(tmp_path / "x.gguf")
    adds = sl.Intervention([("blocks.3.hook_resid_post", sl.Add(r))])
    adds.to_gguf(tmp_path / "ok.gguf", n_layers=4)
    assert sl.SteeringVector.from_gguf(tmp_path / "ok.gguf").allclose(adds.to_vector())
    with pytest.raises(FileExistsError):
        inter.save(path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(VectorFileError):
        sl.Intervention.load(tmp_path / "bad.safetensors")


def test_bad_interventions_are_clear():
    with pytest.raises(ConfigError, match="non-zero"):
        sl.Ablate(torch.zeros(4))
    with pytest.raises(ConfigError, match="min"):
        sl.Cap(torch.ones(4), min=2.0, max=1.0)
    with pytest.raises(ConfigError, match="needs min"):
        sl.Cap(torch.ones(4))
    with pytest.raises(ConfigError, match="at least one"):
        sl.Intervention([])


def test_generate_with_an_intervention(tiny):
    r = _r(7) * 4
    inter = sl.Intervention([(H, sl.Add(r))])
    prompts = ["Hello there, how are you?", "Name a colour."]
    got = sl.generate(tiny, inter, prompts, multipliers=(0, 1), max_new_tokens=6, progress=False)
    want = sl.generate(tiny, sl.SteeringVector({H: r}), prompts, multipliers=(0, 1),
                       max_new_tokens=6, progress=False)  # fmt: skip
    assert got["tokens"].tolist() == want["tokens"].tolist()
    assert sl.active_hooks(tiny) == []


def test_cap_at_zero_has_finite_gradients_at_a_zero_vector():
    """RePS starts from a zero vector: the nulling's gradient must be finite there."""
    v = torch.zeros(16, requires_grad=True)
    h = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    out = clamp_along(h, v + 0.0, max=0.0) + (v * 1.0).sum()
    out.sum().backward()
    assert torch.isfinite(v.grad).all()
