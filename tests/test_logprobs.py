from __future__ import annotations

import torch

import steerlens as sl
from steerlens.core.encoding import encode_pairs, end_of_turn_id, pair_rows
from steerlens.core.logprobs import answer_logprobs, pair_logprobs
from steerlens.steering.hookpoints import SteerHook


def _reference_logprob(hf, prompt, answer):
    """Token-by-token sum of log p(answer_t | prefix) with a plain HF model, no padding."""
    seq = torch.tensor([list(prompt) + list(answer)])
    with torch.no_grad():
        logp = torch.log_softmax(hf(seq).logits[0].double(), -1)
    return sum(float(logp[len(prompt) + i - 1, tok]) for i, tok in enumerate(answer))


def test_answer_ends_with_end_of_turn(tiny):
    enc = encode_pairs(tiny.tokenizer, [sl.PreferencePair("Q?", "Yes.", "No.")])[0]
    eot = end_of_turn_id(tiny.tokenizer)
    assert tiny.tokenizer.convert_ids_to_tokens(eot) == "<|im_end|>"
    assert enc.matching[-1] == eot and enc.not_matching[-1] == eot
    assert tiny.tokenizer.decode(list(enc.matching[:-1])) == "Yes."


def test_pair_logprobs_match_unpadded_reference(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:5]
    enc = encode_pairs(tiny.tokenizer, pairs)
    got = pair_logprobs(tiny, enc, batch_size=3)
    hf = tiny.original_model
    for i, e in enumerate(enc):
        assert abs(got[i, 0] - _reference_logprob(hf, e.prompt, e.matching)) < 1e-3
        assert abs(got[i, 1] - _reference_logprob(hf, e.prompt, e.not_matching)) < 1e-3


def test_padding_and_prompt_tokens_do_not_count(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:2]
    enc = encode_pairs(tiny.tokenizer, pairs)
    ids, mask = pair_rows(enc, pad_id=0)
    lp = answer_logprobs(tiny, ids, mask)
    # changing a padding token or the mask-excluded prompt's scores must not change results
    ids2 = ids.clone()
    ids2[~mask & (ids2 == 0)] = 7
    assert torch.allclose(answer_logprobs(tiny, ids2, mask), lp, atol=1e-5)
    assert mask.sum() == sum(len(e.matching) + len(e.not_matching) for e in enc)


def test_batch_size_does_not_change_results(tiny):
    enc = encode_pairs(tiny.tokenizer, sl.load_pairs(sl.demo_data_path("eval")))
    a = pair_logprobs(tiny, enc, batch_size=1)
    b = pair_logprobs(tiny, enc, batch_size=5)
    assert torch.allclose(a, b, atol=1e-4)


def test_answer_only_unembedding_equals_full_logits(tiny, rand_vec, monkeypatch):
    """The short cut (unembed only answer positions) gives the full path's values and grads."""
    import steerlens.core.logprobs as lp_mod

    enc = encode_pairs(tiny.tokenizer, sl.load_pairs(sl.demo_data_path("train"))[:3])
    ids, mask = pair_rows(enc, pad_id=0)
    assert lp_mod.can_unembed_selected(tiny)

    def run():
        v = rand_vec(tiny, layer=1).vectors["blocks.1.hook_resid_post"].requires_grad_(True)
        hook = SteerHook(v, 1.5, "all")
        out = answer_logprobs(tiny, ids, mask, [("blocks.1.hook_resid_post", hook)])
        (grad,) = torch.autograd.grad(out.sum(), v)
        return out.detach(), grad

    fast, fast_grad = run()
    assert sl.active_hooks(tiny) == []
    monkeypatch.setattr(lp_mod, "can_unembed_selected", lambda model: False)
    full, full_grad = run()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(fast_grad, full_grad, atol=1e-5, rtol=1e-5)
    # and the model still runs normally afterwards (the aborted forward left nothing behind)
    torch.testing.assert_close(tiny(ids), tiny.original_model(ids).logits, atol=1e-5, rtol=1e-5)


def test_unembedding_short_cut_is_off_for_soft_capped_logits(tiny, monkeypatch):
    import steerlens.core.logprobs as lp_mod

    monkeypatch.setattr(tiny.cfg, "output_logits_soft_cap", 30.0)
    assert not lp_mod.can_unembed_selected(tiny)


def test_shared_prompt_packing_equals_separate_rows(tiny, rand_vec, monkeypatch):
    """One packed row per pair (prompt once, block mask) == one padded row per answer:
    values and the gradient w.r.t. the steering vector, with and without the unembed short cut.
    """
    import steerlens.core.logprobs as lp_mod

    enc = encode_pairs(tiny.tokenizer, sl.load_pairs(sl.demo_data_path("train"))[:4])
    assert lp_mod.supports_shared_prompt(tiny)

    def run(share):
        v = rand_vec(tiny, layer=1).vectors["blocks.1.hook_resid_post"].requires_grad_(True)
        hooks = [("blocks.1.hook_resid_post", SteerHook(v, -2.0, "all"))]
        out = lp_mod.batch_logprobs(tiny, enc, hooks, share_prompt=share)
        (grad,) = torch.autograd.grad(out.sum(), v)
        return out.detach(), grad

    for short_cut in (True, False):
        monkeypatch.setattr(lp_mod, "can_unembed_selected", lambda m, s=short_cut: s)
        packed, packed_grad = run(True)
        rows, rows_grad = run(False)
        torch.testing.assert_close(packed, rows, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(packed_grad, rows_grad, atol=1e-4, rtol=1e-4)
    # and against the plain HF model, one unpadded sequence at a time
    got = pair_logprobs(tiny, enc, batch_size=3, share_prompt=True)
    hf = tiny.original_model
    for i, e in enumerate(enc):
        assert abs(got[i, 0] - _reference_logprob(hf, e.prompt, e.matching)) < 1e-3
        assert abs(got[i, 1] - _reference_logprob(hf, e.prompt, e.not_matching)) < 1e-3


def test_packed_layout_masks_the_other_answer():
    from steerlens.core.encoding import EncodedPair
    from steerlens.core.logprobs import pack_pairs

    a = EncodedPair(prompt=(1, 2, 3), matching=(4, 5), not_matching=(6,))
    b = EncodedPair(prompt=(7,), matching=(8,), not_matching=(9, 10))
    p = pack_pairs([a, b], pad_id=0)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 0, 0]]
    assert p.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3]
    assert p.position_ids[1, :4].tolist() == [0, 1, 1, 2]
    ok = p.attention_mask[:, 0] == 0
    assert not ok[0, 5, 3] and not ok[0, 5, 4] and ok[0, 5, 2] and ok[0, 5, 5]
    assert not ok[1, 2, 1] and ok[1, 3, 2] and ok[1, 3, 0]
    assert not ok.triu(1).any()  # causal
    assert ok.any(-1).all()  # no row (padding included) attends to nothing
    # token 6 (not-matching of pair 0) is scored by the last prompt position, not by token 5
    width = p.input_ids.shape[1]
    assert p.source.tolist() == [2, 3, 2, width + 0, width + 0, width + 2]
    assert p.targets.tolist() == [4, 5, 6, 8, 9, 10]
    assert p.out_row.tolist() == [0, 0, 2, 1, 3, 3]


def test_models_that_ignore_the_mask_fall_back_to_separate_rows(monkeypatch):
    """If packed scoring disagrees with separate rows, the probe says no and rows are used."""
    import steerlens.core.logprobs as lp_mod

    model = sl.tiny_model(n_layers=2, d_model=32, seed=1)
    real = lp_mod.packed_logprobs

    def ignores_mask(m, packed, hooks=()):
        full = torch.zeros_like(packed.attention_mask).masked_fill(
            ~torch.ones_like(packed.attention_mask, dtype=torch.bool).tril(), -1e9
        )
        return real(m, lp_mod.PackedPairs(**{**packed.__dict__, "attention_mask": full}), hooks)

    monkeypatch.setattr(lp_mod, "packed_logprobs", ignores_mask)
    assert not lp_mod.supports_shared_prompt(model)
    enc = encode_pairs(model.tokenizer, sl.load_pairs(sl.demo_data_path("eval"))[:3])
    monkeypatch.setattr(lp_mod, "packed_logprobs", None)  # must not be called any more
    rows = lp_mod.batch_logprobs(model, enc, share_prompt=True)
    assert rows.shape == (6,) and torch.isfinite(rows).all()
