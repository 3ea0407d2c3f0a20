"""The native module tree under the bridge: same logits, same steering, same generations."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.encoding import encode_prompt, end_of_turn_id
from steerlens.evaluation.decode import GenRow, generate_rows
from steerlens.steering.native import can_run_native, native_hooks, native_model, native_sites

PROMPTS = ["Hello there, how are you today?", "Name a colour.", "Why is the sky blue, really?"]


def _native_hooks_left(tiny):
    nat = native_model(tiny)
    return [m for m in nat.module.modules() if m._forward_hooks or m._forward_pre_hooks]


def test_native_tree_shares_parameters_and_matches(tiny):
    nat = native_model(tiny)
    assert nat is native_model(tiny)  # cached
    assert not any("Bridge" in type(m).__name__ for m in nat.module.modules())
    ptrs = {p.data_ptr() for p in tiny.original_model.parameters()}
    assert all(p.data_ptr() in ptrs for p in nat.module.parameters())
    ids = torch.randint(100, 5000, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(nat.module(ids).logits, tiny(ids), atol=1e-5)
    assert native_sites(tiny) == {"post", "pre"}


@pytest.mark.parametrize("site", ["post", "pre"])
def test_native_hooks_equal_bridge_hooks(tiny, rand_vec, site):
    g = torch.Generator().manual_seed(1)
    v = sl.SteeringVector({f"blocks.2.hook_resid_{site}": torch.randn(64, generator=g) * 3})
    ids = torch.randint(100, 5000, (3, 8), generator=g)
    mults = [1.0, -2.0, 0.0]
    with torch.no_grad():
        with v.apply(tiny, mults):
            want = tiny(ids)
        nat = native_model(tiny)
        with native_hooks(nat, v.fwd_hooks(mults)):
            got = nat.module(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert _native_hooks_left(tiny) == []


def test_user_hooks_and_unknown_sites_fall_back_to_bridge(tiny):
    assert can_run_native(tiny, ["blocks.1.hook_resid_post"])
    assert not can_run_native(tiny, ["blocks.1.hook_resid_mid"])
    assert not can_run_native(tiny, ["blocks.1.attn.hook_z"])
    with tiny.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: act)]):
        assert not can_run_native(tiny, ["blocks.1.hook_resid_post"])


def _gen(tiny, vecs, mults, positions, backend, batch_size=None):
    tok = tiny.tokenizer
    enc = [tuple(encode_prompt(tok, p)) for p in PROMPTS]
    rows = [GenRow(e, v, m) for v, m in zip(vecs, mults, strict=True) for e in enc]
    return generate_rows(tiny, rows, max_new_tokens=8, eos_token_id=end_of_turn_id(tok),
                         positions=positions, backend=backend, batch_size=batch_size)  # fmt: skip


@pytest.mark.parametrize("positions", ["all", "after_prompt"])
def test_grid_in_one_batch_equals_one_at_a_time(tiny, rand_vec, positions):
    a, b = rand_vec(tiny, layer=1, scale=4.0, seed=1), rand_vec(tiny, layer=2, scale=4.0, seed=2)
    vecs, mults = [a, a, a, b, None], [-1.0, 0.0, 2.0, 1.0, 0.0]
    grid = {bk: _gen(tiny, vecs, mults, positions, bk) for bk in ("native", "bridge")}
    single = _gen(tiny, vecs, mults, positions, "bridge", batch_size=1)
    assert grid["native"] == grid["bridge"] == single
    # TransformerLens' own generate, one row at a time, with apply: the same tokens
    tok = tiny.tokenizer
    eot = end_of_turn_id(tok)
    for j, (v, m) in enumerate(zip(vecs, mults, strict=True)):
        for i, p in enumerate(PROMPTS):
            x = torch.tensor([encode_prompt(tok, p)])
            kw = dict(max_new_tokens=8, do_sample=False, verbose=False, eos_token_id=eot)
            if v is None or m == 0:
                out = tiny.generate(x, **kw)
            else:
                with v.apply(tiny, m, positions):
                    out = tiny.generate(x, **kw)
            new = out[0, x.shape[1] :].tolist()
            new = new[: new.index(eot)] if eot in new else new
            assert single[j * len(PROMPTS) + i] == new
    assert grid["native"][:3] != grid["native"][6:9]  # steering changed something


def test_native_and_bridge_hooks_gone_after_error_mid_generation(tiny, rand_vec, monkeypatch):
    from steerlens.steering.hookpoints import SteerHook

    v = rand_vec(tiny, layer=1, scale=2.0)
    calls = {"n": 0}
    real = SteerHook.__call__

    def failing(self, act, hook):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom mid-batch")
        return real(self, act, hook)

    monkeypatch.setattr(SteerHook, "__call__", failing)
    for backend in ("native", "bridge"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom"):
            _gen(tiny, [v, v], [1.0, -1.0], "all", backend)
        assert sl.active_hooks(tiny) == [] and _native_hooks_left(tiny) == []
        assert not sl.is_steered(tiny)


def test_backend_native_refuses_what_it_cannot_run(tiny):
    v = sl.SteeringVector({"blocks.1.hook_resid_mid": torch.ones(64)})
    with pytest.raises(sl.ConfigError, match="native"):
        _gen(tiny, [v], [1.0], "all", "native")
    auto = _gen(tiny, [v], [1.0], "all", "auto")  # falls back to the bridge
    assert auto == _gen(tiny, [v], [1.0], "all", "bridge")
