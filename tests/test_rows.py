"""Per-row steering: each row of a batch equals that row steered on its own."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.errors import ConfigError, VectorError
from steerlens.core.logprobs import set_prompt_ends

H1, H2 = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"


def _rows(tiny, n=4, width=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 5000, (n, width), generator=g)


def _vec(hook, seed, scale=3.0, width=64):
    g = torch.Generator().manual_seed(seed)
    return sl.SteeringVector({hook: torch.randn(width, generator=g) * scale})


def _one(tiny, v, ids, mult, **kw):
    if v is None or mult == 0:
        return tiny(ids, **kw)
    with v.apply(tiny, mult):
        return tiny(ids, **kw)


def test_per_row_multipliers_equal_one_at_a_time(tiny):
    v = _vec(H1, 0)
    ids = _rows(tiny)
    mults = [-2.0, 0.0, 0.5, 3.0]
    with v.apply(tiny, multiplier=mults):
        got = tiny(ids)
    for b, m in enumerate(mults):
        want = _one(tiny, v, ids[b : b + 1], m)
        assert torch.allclose(got[b], want[0], atol=1e-5)
    assert torch.equal(got[1], tiny(ids)[1])  # multiplier 0: bit-identical to unsteered


def test_different_vectors_per_row_equal_each_alone(tiny):
    a, b = _vec(H1, 1), _vec(H2, 2)
    both = a + b
    ids = _rows(tiny, n=5)
    vecs = [a, b, None, both, a]
    mults = [1.0, -2.0, 5.0, 0.7, 0.0]
    with sl.RowSteering(vecs, multipliers=mults).apply(tiny):
        got = tiny(ids)
    for r, (v, m) in enumerate(zip(vecs, mults, strict=True)):
        want = _one(tiny, v, ids[r : r + 1], m)
        assert torch.allclose(got[r], want[0], atol=1e-5), r
    plain = tiny(ids)
    assert torch.equal(got[2], plain[2]) and torch.equal(got[4], plain[4])


@pytest.mark.parametrize("side", ["left", "right"])
def test_after_prompt_per_row_with_padding(tiny, side):
    v = _vec(H1, 3)
    lengths = [9, 6, 7]
    ids = _rows(tiny, n=3)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        if side == "left":
            mask[r, 9 - n :] = 1
        else:
            mask[r, :n] = 1
    mults = [1.5, -1.0, 2.0]
    hooks = v.fwd_hooks(mults, positions="after_prompt")
    ends = torch.tensor([8 if side == "left" else n - 1 for n in lengths])
    set_prompt_ends(hooks, ends)
    got = tiny.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=mask)
    for r, m in enumerate(mults):
        one = v.fwd_hooks(m, positions="after_prompt")
        set_prompt_ends(one, ends[r : r + 1])
        want = tiny.run_with_hooks(ids[r : r + 1], fwd_hooks=one, attention_mask=mask[r : r + 1])
        keep = mask[r].bool()
        assert torch.allclose(got[r, keep], want[0, keep], atol=1e-5)


def test_wrong_batch_size_is_a_clear_error(tiny):
    v = _vec(H1, 0)
    with pytest.raises(VectorError, match="3 batch rows"):
        with v.apply(tiny, multiplier=[1.0, 2.0, 3.0]):
            tiny(_rows(tiny, n=2))
    assert sl.active_hooks(tiny) == []


def test_hooks_removed_after_exception_mid_batch(tiny):
    v = _vec(H1, 0)
    with pytest.raises(RuntimeError, match="boom"):
        with sl.RowSteering([v, None], multipliers=[1.0, 0.0]).apply(tiny):
            tiny(_rows(tiny, n=2))
            raise RuntimeError("boom")
    assert sl.active_hooks(tiny) == [] and not sl.is_steered(tiny)


def test_row_steering_validates():
    v = _vec(H1, 0)
    with pytest.raises(ConfigError, match="2 vectors but 3 multipliers"):
        sl.RowSteering([v, v], multipliers=[1, 2, 3])
    with pytest.raises(ConfigError, match="finite"):
        sl.RowSteering([v], multipliers=[float("nan")])
    with pytest.raises(ConfigError, match="list"):
        sl.RowSteering(v)  # type: ignore[arg-type]
    with pytest.raises(VectorError, match="d_model"):
        sl.RowSteering([v, _vec(H1, 0, width=32)])


def test_slots_share_one_table_entry_per_vector():
    a, b = _vec(H1, 0), _vec(H2, 1)
    steer = sl.RowSteering([a, b, a, None], multipliers=[1, 2, 3, 4])
    distinct, index = steer.slots()
    assert [id(v) for v in distinct] == [id(a), id(b)] and index == [0, 1, 0, -1]
    hooks = dict(steer.fwd_hooks())
    assert hooks[H1].vector.shape == (2, 64)
    assert torch.equal(hooks[H1].vector[1], torch.zeros(64))  # b has no H1 entry
    # row 3 has no vector: its multiplier is zeroed, so nothing is added
    assert hooks[H1].multiplier.tolist() == [1.0, 2.0, 3.0, 0.0]
