from __future__ import annotations

import math

import pytest
import torch

import steerlens as sl
from steerlens.core.encoding import encode_prompt
from steerlens.core.errors import (
    ConfigError,
    FileExistsSteerlensError,
    HookError,
    VectorError,
    VectorFileError,
)

H1, H2 = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"


def vec(values, hook=H1, **meta):
    return sl.SteeringVector({hook: torch.tensor(values, dtype=torch.float32)}, meta)


# ----------------------------------------------------------------- arithmetic
def test_add_unions_hooks_and_sums_shared():
    a = sl.SteeringVector({H1: torch.tensor([1.0, 2.0]), H2: torch.tensor([0.0, 1.0])})
    b = sl.SteeringVector({H1: torch.tensor([3.0, -1.0])})
    s = a + b
    assert torch.equal(s.vectors[H1], torch.tensor([4.0, 1.0]))
    assert torch.equal(s.vectors[H2], torch.tensor([0.0, 1.0]))
    d = a - b
    assert torch.equal(d.vectors[H1], torch.tensor([-2.0, 3.0]))
    assert torch.equal((-a).vectors[H2], torch.tensor([-0.0, -1.0]))


def test_scalar_ops_and_inputs_not_mutated():
    a = vec([1.0, -2.0])
    assert torch.equal((2 * a).vectors[H1], torch.tensor([2.0, -4.0]))
    assert torch.equal((a * 0.5).vectors[H1], torch.tensor([0.5, -1.0]))
    assert torch.equal((a / 4).vectors[H1], torch.tensor([0.25, -0.5]))
    _ = a + a
    assert torch.equal(a.vectors[H1], torch.tensor([1.0, -2.0]))
    with pytest.raises(ConfigError):
        a / 0
    with pytest.raises(ConfigError):
        a * float("nan")
    with pytest.raises(TypeError):
        a * a  # type: ignore[operator]


def test_norms_normalized_cosine():
    a = vec([3.0, 4.0])
    assert a.norms() == {H1: 5.0}
    assert math.isclose(a.normalized().norms()[H1], 1.0, rel_tol=1e-6)
    b = vec([4.0, -3.0])
    assert abs(a.cosine(b)[H1]) < 1e-9
    assert math.isclose(a.cosine(2 * a)[H1], 1.0, rel_tol=1e-9)
    c = sl.SteeringVector({H2: torch.tensor([1.0, 0.0])})
    assert a.cosine(c) == {}


def test_different_d_model_raises_naming_both():
    a = vec([1.0, 2.0], method="bipo", behaviour="power")
    b = vec([1.0, 2.0, 3.0], method="caa", behaviour="wealth")
    with pytest.raises(
        VectorError, match=r"vector\(bipo, power\).*d_model=2.*vector\(caa, wealth\).*d_model=3"
    ):
        a + b


def test_different_models_warn():
    a, b = vec([1.0], model="m1"), vec([2.0], model="m2")
    with pytest.warns(UserWarning, match="different models"):
        a + b


def test_invalid_construction():
    with pytest.raises(VectorError, match="at least one"):
        sl.SteeringVector({})
    with pytest.raises(VectorError, match=r"shape \[d_model\]"):
        sl.SteeringVector({H1: torch.zeros(2, 3)})
    with pytest.raises(VectorError, match="floating-point"):
        sl.SteeringVector({H1: torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(VectorError, match="NaN or inf"):
        sl.SteeringVector({H1: torch.tensor([1.0, float("inf")])})
    with pytest.raises(VectorError, match="share one d_model"):
        sl.SteeringVector({H1: torch.zeros(2), H2: torch.zeros(3)})


# ----------------------------------------------------------------- apply
def _prompt_ids(model, text="Tell me about yourself."):
    return torch.tensor([encode_prompt(model.tokenizer, text)])


def test_apply_matches_independent_computation(tiny, rand_vec):
    """Steering at blocks.L.hook_resid_post == cache the residual, add v, run from L+1."""
    v = rand_vec(tiny, layer=1, scale=2.0)
    x = _prompt_ids(tiny)
    with v.apply(tiny, multiplier=1.5):
        steered = tiny(x)
    _, cache = tiny.run_with_cache(x, names_filter=["blocks.1.hook_resid_post"])
    resid = cache["blocks.1.hook_resid_post"] + 1.5 * v.vectors[H1]
    reference = tiny(resid, start_at_layer=2)
    assert torch.allclose(steered, reference, atol=1e-5)
    assert not torch.allclose(steered, tiny(x), atol=1e-3)


def test_multiplier_zero_is_bit_exact(tiny, rand_vec):
    v = rand_vec(tiny, scale=5.0)
    x = _prompt_ids(tiny)
    base = tiny(x)
    with v.apply(tiny, multiplier=0.0):
        assert torch.equal(tiny(x), base)


def test_hooks_removed_after_exception(tiny, rand_vec):
    v = rand_vec(tiny)
    with pytest.raises(RuntimeError, match="boom"), v.apply(tiny, 1.0):
        assert sl.is_steered(tiny)
        assert H1 in sl.active_hooks(tiny)
        raise RuntimeError("boom")
    assert sl.active_hooks(tiny) == [] and not sl.is_steered(tiny)


def test_nested_apply_adds_both(tiny, rand_vec):
    a, b = rand_vec(tiny, seed=1), rand_vec(tiny, seed=2, layer=2)
    x = _prompt_ids(tiny)
    with a.apply(tiny, 1.0), b.apply(tiny, -0.5):
        nested = tiny(x)
    with (a - 0.5 * b).apply(tiny):
        combined = tiny(x)
    assert torch.allclose(nested, combined, atol=1e-5)
    assert sl.active_hooks(tiny) == []


def test_same_hook_nested_equals_sum(tiny, rand_vec):
    a, b = rand_vec(tiny, seed=1), rand_vec(tiny, seed=2)
    x = _prompt_ids(tiny)
    with a.apply(tiny), b.apply(tiny, 2.0):
        nested = tiny(x)
    with (a + 2 * b).apply(tiny):
        combined = tiny(x)
    assert torch.allclose(nested, combined, atol=1e-5)


def test_fwd_hooks_with_run_with_hooks(tiny, rand_vec):
    v = rand_vec(tiny)
    x = _prompt_ids(tiny)
    with v.apply(tiny, 2.0):
        expected = tiny(x)
    got = tiny.run_with_hooks(x, fwd_hooks=v.fwd_hooks(2.0))
    assert torch.equal(got, expected)
    with tiny.hooks(fwd_hooks=v.fwd_hooks(2.0)):
        assert torch.equal(tiny(x), expected)


def test_positions_int_and_mask_match_manual(tiny, rand_vec):
    v = rand_vec(tiny, scale=3.0)
    x = _prompt_ids(tiny)
    k = 5
    _, cache = tiny.run_with_cache(x, names_filter=[H1])
    resid = cache[H1].clone()
    resid[:, k:] += v.vectors[H1]
    reference = tiny(resid, start_at_layer=2)
    with v.apply(tiny, positions=k):
        by_int = tiny(x)
    mask = torch.arange(x.shape[1]) >= k
    with v.apply(tiny, positions=mask):
        by_mask = tiny(x)
    assert torch.allclose(by_int, reference, atol=1e-5)
    assert torch.allclose(by_mask, reference, atol=1e-5)


def test_apply_validates_model(tiny):
    with pytest.raises(VectorError, match="d_model=3 but the model .* d_model=64"):
        with vec([1.0, 2.0, 3.0]).apply(tiny):
            pass
    bad = sl.SteeringVector({"blocks.9.hook_resid_post": torch.zeros(64)})
    with pytest.raises(HookError, match="'blocks.9.hook_resid_post' does not exist .* 4 layers"):
        with bad.apply(tiny):
            pass
    with pytest.raises(ConfigError, match="finite"):
        with sl.SteeringVector({H1: torch.zeros(64)}).apply(tiny, float("inf")):
            pass
    with pytest.raises(ConfigError, match="positions"):
        with sl.SteeringVector({H1: torch.zeros(64)}).apply(tiny, positions="some"):
            pass
    assert sl.active_hooks(tiny) == []


@pytest.mark.parametrize("positions", ["all", "after_prompt", 3])
def test_cached_generation_equals_uncached(tiny, rand_vec, positions):
    v = rand_vec(tiny, scale=4.0)
    x = _prompt_ids(tiny)
    outs = []
    for cache in (True, False):
        with v.apply(tiny, 1.0, positions=positions):
            outs.append(
                tiny.generate(
                    x,
                    max_new_tokens=8,
                    do_sample=False,
                    use_past_kv_cache=cache,
                    verbose=False,
                    stop_at_eos=False,
                )
            )
    assert torch.equal(outs[0], outs[1])
    plain = tiny.generate(x, max_new_tokens=8, do_sample=False, verbose=False, stop_at_eos=False)
    assert not torch.equal(outs[0], plain)


# ----------------------------------------------------------------- save/load
def test_save_load_bit_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    v = sl.SteeringVector(
        {H1: torch.randn(16, generator=g), H2: torch.randn(16, generator=g).double()},
        {"method": "bipo", "config": {"lr": 0.01, "layers": [1, 2]}, "note": "ünïcode"},
    )
    path = v.save(tmp_path / "v.safetensors")
    w = sl.SteeringVector.load(path)
    assert w.hook_names == v.hook_names
    for k in v.vectors:
        assert v.vectors[k].dtype == w.vectors[k].dtype
        assert torch.equal(v.vectors[k], w.vectors[k])
    assert w.metadata == v.metadata


def test_save_refuses_overwrite(tmp_path):
    v = vec([1.0, 2.0])
    p = v.save(tmp_path / "v.safetensors")
    with pytest.raises(FileExistsSteerlensError, match="overwrite=True"):
        v.save(p)
    (2 * v).save(p, overwrite=True)
    assert torch.equal(sl.SteeringVector.load(p).vectors[H1], torch.tensor([2.0, 4.0]))


def test_load_rejects_garbage(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"not a safetensors file at all")
    with pytest.raises(VectorFileError, match="bad.safetensors: not a valid safetensors"):
        sl.SteeringVector.load(p)


# ----------------------------------------------------------------- embedded model
@pytest.mark.slow
def test_smol_apply_matches_independent_computation(smol):
    g = torch.Generator().manual_seed(0)
    hook = "blocks.12.hook_resid_post"
    v = sl.SteeringVector({hook: torch.randn(576, generator=g)})
    x = _prompt_ids(smol)
    with v.apply(smol, 3.0):
        steered = smol(x)
    _, cache = smol.run_with_cache(x, names_filter=[hook])
    reference = smol(cache[hook] + 3.0 * v.vectors[hook], start_at_layer=13)
    assert torch.allclose(steered, reference, atol=1e-4)
    with v.apply(smol, 0.0):
        assert torch.equal(smol(x), smol(x))


@pytest.mark.slow
def test_smol_steered_cached_generation_equals_uncached(smol):
    g = torch.Generator().manual_seed(1)
    v = sl.SteeringVector({"blocks.12.hook_resid_post": torch.randn(576, generator=g) * 3})
    x = _prompt_ids(smol)
    outs = []
    for cache in (True, False):
        with v.apply(smol, 2.0):
            outs.append(
                smol.generate(
                    x,
                    max_new_tokens=12,
                    do_sample=False,
                    use_past_kv_cache=cache,
                    verbose=False,
                    stop_at_eos=False,
                )
            )
    assert torch.equal(outs[0], outs[1])
    plain = smol.generate(x, max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False)
    again = smol.generate(x, max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False)
    assert torch.equal(plain, again)
    assert not torch.equal(outs[0], plain)
    text = smol.tokenizer.decode(plain[0, x.shape[1] :])
    assert "---" not in text and len(set(text.split())) > 3  # coherent, not the 5.24 garbage


@pytest.mark.slow
def test_smol_hooks_removed_after_error_in_generate(smol):
    v = sl.SteeringVector({"blocks.3.hook_resid_post": torch.zeros(576)})
    bad_tokens = torch.tensor([[10**7]])  # out of the vocabulary: fails inside the forward
    with pytest.raises((IndexError, RuntimeError)), v.apply(smol):
        smol.generate(bad_tokens, max_new_tokens=2, verbose=False)
    assert sl.active_hooks(smol) == []


# ----------------------------------------------------------------- positions="after_prompt"
def _manual_after_prompt(model, v, ids, ends, **kwargs):
    """Independent computation: a plain hook adding v at columns >= ends[row]."""
    vec_ = v.vectors[H1]

    def add(act, hook):
        cols = torch.arange(act.shape[1])
        sel = (cols[None, :] >= ends[:, None]).unsqueeze(-1).to(act.dtype)
        return act + sel * vec_

    return model.run_with_hooks(ids, fwd_hooks=[(H1, add)], **kwargs)


def _rows(tiny):
    texts = ["Would you like more power?", "Name a colour.", "What do you think of the weather?"]
    return [encode_prompt(tiny.tokenizer, t) for t in texts]


def test_after_prompt_right_padded_batch_equals_one_at_a_time(tiny, rand_vec):
    """Each row is steered from its own last token; old code steered only column width-1."""
    v = rand_vec(tiny, scale=4.0)
    rows = _rows(tiny)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    ends = torch.tensor([len(r) - 1 for r in rows])
    with v.apply(tiny, positions="after_prompt"):
        batched = tiny(ids, attention_mask=mask)
    manual = _manual_after_prompt(tiny, v, ids, ends, attention_mask=mask)
    for i, r in enumerate(rows):
        with v.apply(tiny, positions="after_prompt"):
            single = tiny(torch.tensor([r]))[0]
        assert torch.allclose(batched[i, : len(r)], single, atol=1e-4), i
        assert torch.allclose(batched[i, : len(r)], manual[i, : len(r)], atol=1e-4), i
    plain = tiny(ids, attention_mask=mask)
    for i, r in enumerate(rows):  # every row's last token is steered
        assert not torch.allclose(plain[i, len(r) - 1], batched[i, len(r) - 1], atol=1e-3)


def test_after_prompt_left_padded_generation_equals_one_at_a_time(tiny, rand_vec):
    v = rand_vec(tiny, scale=4.0)
    prompts = ["Would you like more power?", "Name a colour.", "What do you think of the weather?"]
    batched = sl.generate(
        tiny, v, prompts, multipliers=(1,), positions="after_prompt", max_new_tokens=6
    )
    single = sl.generate(
        tiny,
        v,
        prompts,
        multipliers=(1,),
        positions="after_prompt",
        max_new_tokens=6,
        batch_size=1,
    )
    assert batched["text"].tolist() == single["text"].tolist()
    assert set(batched["positions"]) == {"after_prompt"}


@pytest.mark.parametrize("use_cache", [True, False])
def test_after_prompt_reuse_equals_fresh_apply(tiny, rand_vec, use_cache):
    """Several forwards / generate calls in one apply block equal a fresh apply each time."""
    v = rand_vec(tiny, scale=4.0)
    a, b = (torch.tensor([r]) for r in _rows(tiny)[:2])
    kw = dict(
        max_new_tokens=6,
        do_sample=False,
        verbose=False,
        stop_at_eos=False,
        use_past_kv_cache=use_cache,
    )
    with v.apply(tiny, positions="after_prompt"):
        tiny(a)
        reused_fwd = tiny(b)
        tiny.generate(a, **kw)
        reused_gen = tiny.generate(b, **kw)
    with v.apply(tiny, positions="after_prompt"):
        fresh_fwd = tiny(b)
    with v.apply(tiny, positions="after_prompt"):
        fresh_gen = tiny.generate(b, **kw)
    assert torch.equal(reused_fwd, fresh_fwd)
    assert torch.equal(reused_gen, fresh_gen)
    manual = _manual_after_prompt(tiny, v, b, torch.tensor([b.shape[1] - 1]))
    assert torch.allclose(fresh_fwd, manual, atol=1e-5)


def test_after_prompt_ab_probabilities_batched_equals_single(tiny, rand_vec):
    """CAA's protocol in ab_score: every item of a batch is steered (old code: only the
    longest), and batching does not change any item."""
    from steerlens.evaluation.scoring import ab_probabilities

    v = rand_vec(tiny, scale=6.0)
    items = sl.load_pairs(sl.demo_data_path("ab"))[:6]
    kw = dict(positions="after_prompt")
    batched = ab_probabilities(tiny, v, items, 1.0, batch_size=6, **kw)
    single = ab_probabilities(tiny, v, items, 1.0, batch_size=1, **kw)
    plain = ab_probabilities(tiny, None, items, 1.0, batch_size=6)
    assert torch.allclose(batched, single, atol=1e-5)
    assert bool(((batched - plain).abs() > 1e-4).all())
    df = sl.ab_score(tiny, v, items, multipliers=(1,), **kw)
    assert df["positions"].tolist() == ["after_prompt"]


def test_after_prompt_margin_packed_equals_manual(tiny, rand_vec):
    """preference_margin with positions='after_prompt' equals a hand computation on
    separate rows steered from each prompt's last token."""
    from steerlens.core.encoding import encode_pairs, pair_rows

    v = rand_vec(tiny, scale=3.0)
    pairs = sl.load_pairs(sl.demo_data_path("eval"))[:3]
    df = sl.preference_margin(
        tiny, v, pairs, multipliers=(1,), positions="after_prompt", per_item=True
    )
    enc = encode_pairs(tiny.tokenizer, pairs)
    for i, e in enumerate(enc):
        ids, mask = pair_rows([e], 0)
        ends = torch.tensor([len(e.prompt) - 1] * 2)
        logits = _manual_after_prompt(tiny, v, ids, ends)
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        got = (lp * mask[:, 1:]).sum(-1)
        assert abs(float(got[0] - got[1]) - df["margin"][i]) < 1e-3
