from __future__ import annotations

import torch

import steerlens as sl
from steerlens.vector import SteerHook
from steerlens.logprobs import (
    answer_logprobs,
    encode_pairs,
    end_of_turn_id,
    pair_logprobs,
    pair_rows,
)


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
    import steerlens.logprobs as lp_mod

    enc = encode_pairs(tiny.tokenizer, sl.load_pairs(sl.demo_data_path("train"))[:3])
    ids, mask = pair_rows(enc, pad_id=0)
    assert lp_mod._can_unembed_selected(tiny)

    def run():
        v = rand_vec(tiny, layer=1).vectors["blocks.1.hook_resid_post"].requires_grad_(True)
        hook = SteerHook(v, 1.5, "all")
        out = answer_logprobs(tiny, ids, mask, [("blocks.1.hook_resid_post", hook)])
        (grad,) = torch.autograd.grad(out.sum(), v)
        return out.detach(), grad

    fast, fast_grad = run()
    assert sl.active_hooks(tiny) == []
    monkeypatch.setattr(lp_mod, "_can_unembed_selected", lambda model: False)
    full, full_grad = run()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(fast_grad, full_grad, atol=1e-5, rtol=1e-5)
    # and the model still runs normally afterwards (the aborted forward left nothing behind)
    torch.testing.assert_close(tiny(ids), tiny.original_model(ids).logits, atol=1e-5, rtol=1e-5)


def test_unembedding_short_cut_is_off_for_soft_capped_logits(tiny, monkeypatch):
    import steerlens.logprobs as lp_mod

    monkeypatch.setattr(tiny.cfg, "output_logits_soft_cap", 30.0)
    assert not lp_mod._can_unembed_selected(tiny)
