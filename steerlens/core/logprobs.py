"""Batched answer log-probabilities, shared by training and evaluation.

For a prompt x and an answer r, ``log p(r | x)`` is the SUM over the answer's tokens (an
end-of-turn token is appended and counts) of the next-token log-probability; prompt tokens and
padding never count. The prompt is the chat-formatted question; the answer follows right after
the generation prompt. Answers are tokenised on their own and appended to the prompt's tokens, so
an answer's tokens do not depend on the prompt.

Shared prompts: the two answers of a pair continue the same prompt, so by default both are
scored in ONE packed row ``[prompt, matching, not_matching]`` with a block attention mask (each
answer sees the prompt and itself, never the other answer) and position ids that restart after
the prompt for the second answer. The prompt's tokens, usually most of a pair, are then
computed once instead of twice. Whether a model honours such a mask is probed once per model
(:func:`supports_shared_prompt`); where it does not, rows are scored one answer at a time.

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> from steerlens.core.encoding import encode_pairs
    >>> pairs = [sl.PreferencePair("Want power?", "Yes.", "No.")]
    >>> lp = pair_logprobs(model, encode_pairs(model.tokenizer, pairs))
    >>> lp.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.batching import (
    length_buckets,
)
from steerlens.core.encoding import (
    EncodedPair,
    pair_rows,
)
from steerlens.core.hooks import model_device, model_dtype, pad_token_id

Hooks = Sequence[tuple[str, Any]]


def answer_logprobs(
    model: Any,
    input_ids: Int[Tensor, "rows pos"],
    answer_mask: Bool[Tensor, "rows pos"],
    fwd_hooks: Hooks = (),
) -> Float[Tensor, " rows"]:
    """Summed log-probability of the answer tokens of each row.

    Position t's token is scored by the logits at t-1. Only positions where ``answer_mask`` is
    True count, so prompt tokens and padding never do. Differentiable (through ``fwd_hooks``).
    """
    if answer_mask[:, 0].any():
        raise ValueError("an answer cannot start at position 0 (it needs a prompt before it)")
    target_mask = answer_mask[:, 1:]
    rows, cols = target_mask.nonzero(as_tuple=True)  # position t-1 scores the token at t
    sel_logits = logits_at(model, input_ids, rows, cols, fwd_hooks)  # [n_answer_tokens, vocab]
    targets = input_ids[rows, cols + 1]
    token_lp = torch.log_softmax(sel_logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0]
    out = torch.zeros(input_ids.shape[0], dtype=token_lp.dtype, device=token_lp.device)
    return out.index_add(0, rows, token_lp)


def logits_at(
    model: Any,
    input_ids: Int[Tensor, "rows pos"],
    rows: Int[Tensor, " n"],
    cols: Int[Tensor, " n"],
    fwd_hooks: Hooks = (),
    **forward_kwargs: Any,
) -> Float[Tensor, "n vocab"]:
    """Logits at the positions ``(rows[i], cols[i])`` only.

    Where the model allows it (:func:`can_unembed_selected`) the forward pass stops at the
    unembedding's hook point and only the selected positions are multiplied by ``W_U``: the
    full ``[rows, pos, vocab]`` logits (49k columns per position for SmolLM2) are never built,
    in the forward or the backward pass. Otherwise the full logits are computed and indexed.

    Examples:
        >>> import torch, steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> ids = torch.tensor([[1, 2, 3, 4]])
        >>> sel = logits_at(m, ids, torch.tensor([0]), torch.tensor([2]))
        >>> torch.allclose(sel[0], m(ids)[0, 2], atol=1e-5)
        True
    """
    if can_unembed_selected(model):
        final = _final_residual(model, input_ids, fwd_hooks, **forward_kwargs)
        return final[rows, cols] @ model.W_U + model.b_U
    if fwd_hooks or forward_kwargs:
        logits = model.run_with_hooks(input_ids, fwd_hooks=list(fwd_hooks), **forward_kwargs)
    else:
        logits = model(input_ids)
    return logits[rows, cols]


class _FinalResidual(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a hook to stop the forward pass before the unembedding."""

    def __init__(self, value: Tensor) -> None:
        self.value = value


_UNEMBED_INPUT = "unembed.hook_in"


def can_unembed_selected(model: Any) -> bool:
    """Whether the model's logits are ``unembed.hook_in @ W_U + b_U`` and nothing more.

    True for TransformerBridge and HookedTransformer-style models with an unembedding hook point
    and no final logit soft-capping (Gemma 2 style), where the short cut would change the
    logits.
    """
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None or _UNEMBED_INPUT not in hook_dict:
        return False
    if (getattr(model.cfg, "output_logits_soft_cap", None) or 0.0) > 0:
        return False
    return hasattr(model, "W_U") and hasattr(model, "b_U")


def _final_residual(
    model: Any, input_ids: Int[Tensor, "rows pos"], fwd_hooks: Hooks, **kwargs: Any
) -> Float[Tensor, "rows pos d_model"]:
    """The input of the unembedding (after the final norm), without computing the logits."""

    def stop(act: Tensor, hook: Any) -> None:
        raise _FinalResidual(act)

    try:
        model.run_with_hooks(input_ids, fwd_hooks=[*fwd_hooks, (_UNEMBED_INPUT, stop)], **kwargs)
    except _FinalResidual as done:
        return done.value
    raise RuntimeError(f"the forward pass never reached {_UNEMBED_INPUT!r}")  # pragma: no cover


@dataclass(frozen=True)
class PackedPairs:
    """A batch of B pairs packed as B rows ``[prompt, matching, not_matching, padding]``.

    Attributes:
        input_ids: the packed token ids.
        position_ids: 0..P-1 over the prompt, P.. over each answer (both restart at P).
        attention_mask: additive ``[B, 1, pos, pos]`` mask (0 where attending is allowed, the
            dtype's minimum elsewhere): causal, and an answer never sees the other answer.
        source: flat index ``row * pos + t`` of the position whose logits score each answer token.
        targets: the answer token scored at each ``source``.
        out_row: which output each token adds to: ``b`` (matching of pair b) or ``B + b``.
    """

    input_ids: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    attention_mask: Float[Tensor, "batch 1 pos pos"]
    source: Int[Tensor, " tokens"]
    targets: Int[Tensor, " tokens"]
    out_row: Int[Tensor, " tokens"]

    @property
    def n_out(self) -> int:
        return 2 * int(self.input_ids.shape[0])


def pack_pairs(
    batch: Sequence[EncodedPair],
    pad_id: int,
    device: Any = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PackedPairs:
    """Pack each pair into one row that shares the prompt between the two answers.

    Examples:
        >>> e = EncodedPair(prompt=(1, 2), matching=(3,), not_matching=(4, 5))
        >>> p = pack_pairs([e], pad_id=0)
        >>> p.input_ids.tolist(), p.position_ids.tolist()
        ([[1, 2, 3, 4, 5]], [[0, 1, 2, 2, 3]])
        >>> (p.attention_mask[0, 0] == 0).int().tolist()  # row i: what token i may attend to
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
        >>> p.source.tolist(), p.targets.tolist(), p.out_row.tolist()
        ([1, 1, 3], [3, 4, 5], [0, 1, 1])
    """
    n = len(batch)
    width = max(e.packed_length for e in batch)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    pos = torch.arange(width).repeat(n, 1)
    segment = torch.full((n, width), 3, dtype=torch.long)  # 0 prompt, 1/2 answers, 3 padding
    source: list[int] = []
    targets: list[int] = []
    out_row: list[int] = []
    for b, e in enumerate(batch):
        if not e.prompt:
            raise ValueError("an answer cannot start at position 0 (it needs a prompt before it)")
        p, a, o = len(e.prompt), len(e.matching), len(e.not_matching)
        ids[b, : p + a + o] = torch.tensor([*e.prompt, *e.matching, *e.not_matching])
        pos[b, p + a : p + a + o] = torch.arange(p, p + o)
        segment[b, :p] = 0
        segment[b, p : p + a] = 1
        segment[b, p + a : p + a + o] = 2
        for first, answer, row in ((p, e.matching, b), (p + a, e.not_matching, n + b)):
            preds = [p - 1] + list(range(first, first + len(answer) - 1))
            source += [b * width + t for t in preds]
            targets += list(answer)
            out_row += [row] * len(answer)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = causal & ((seg_k == 0) | (seg_k == seg_q))
    mask = torch.zeros(n, 1, width, width, dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    as_long = {"dtype": torch.long, "device": device}
    return PackedPairs(
        ids.to(device),
        pos.to(device),
        mask.to(device),
        torch.tensor(source, **as_long),
        torch.tensor(targets, **as_long),
        torch.tensor(out_row, **as_long),
    )


def packed_logprobs(
    model: Any, packed: PackedPairs, fwd_hooks: Hooks = ()
) -> Float[Tensor, " rows"]:
    """``[log p(matching_b|x_b) for b] + [log p(not_matching_b|x_b) for b]`` from packed rows.

    The same numbers as :func:`answer_logprobs` on :func:`pair_rows` (tested), from half the
    prompt tokens. Differentiable through ``fwd_hooks``.
    """
    width = packed.input_ids.shape[1]
    sel_logits = logits_at(
        model,
        packed.input_ids,
        packed.source // width,
        packed.source % width,
        fwd_hooks,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
    )
    return sum_answer_logprobs(sel_logits, packed)


def sum_answer_logprobs(
    sel_logits: Float[Tensor, "tokens vocab"], packed: PackedPairs
) -> Float[Tensor, " rows"]:
    """Per-answer sums of the log-probabilities of ``packed.targets`` under ``sel_logits``
    (the logits at ``packed.source``), in fp32."""
    token_lp = torch.log_softmax(sel_logits.float(), dim=-1)
    token_lp = token_lp.gather(-1, packed.targets[:, None])[:, 0]
    out = torch.zeros(packed.n_out, dtype=token_lp.dtype, device=token_lp.device)
    return out.index_add(0, packed.out_row, token_lp)


_SHARED_PROMPT_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def supports_shared_prompt(model: Any) -> bool:
    """Whether ``model`` scores packed rows (:func:`pack_pairs`) like separate rows.

    Probed once per model on a short synthetic pair: the model must honour a 4-D attention
    mask and explicit position ids (Hugging Face models with eager or SDPA attention do;
    flash-attention kernels and some architectures do not). The answer is cached.

    Examples:
        >>> import steerlens as sl
        >>> supports_shared_prompt(sl.tiny_model(n_layers=2))
        True
    """
    try:
        return _SHARED_PROMPT_OK[model]
    except (KeyError, TypeError):
        pass
    vocab = int(model.cfg.d_vocab)
    probe = [EncodedPair((1, 5 % vocab, 9 % vocab), (17 % vocab, 2), (33 % vocab, 4, 2))]
    device = model_device(model)
    try:
        with torch.no_grad():
            ids, mask = pair_rows(probe, pad_token_id(model), device)
            plain = answer_logprobs(model, ids, mask).float()
            dtype = model_dtype(model)
            packed = packed_logprobs(model, pack_pairs(probe, pad_token_id(model), device, dtype))
        tol = 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2
        ok = bool(torch.allclose(packed.float(), plain, rtol=tol, atol=tol * 10))
    except Exception:  # noqa: BLE001 - any failure means: do not pack for this model
        ok = False
    try:
        _SHARED_PROMPT_OK[model] = ok
    except TypeError:  # pragma: no cover - not weak-referenceable
        pass
    return ok


def batch_logprobs(
    model: Any,
    batch: Sequence[EncodedPair],
    fwd_hooks: Hooks = (),
    share_prompt: bool = True,
) -> Float[Tensor, " rows"]:
    """Log-probs ``[matching_1..B, not_matching_1..B]`` of one batch of encoded pairs.

    With ``share_prompt`` (and a model that supports it) both answers of a pair are scored in
    one packed row; otherwise each answer gets its own right-padded row. Position-aware hooks
    are told each row's prompt end (:func:`set_prompt_ends`): in both layouts everything from
    the prompt's last token on belongs to the answers.
    """
    device = model_device(model)
    pad = pad_token_id(model)
    ends = torch.tensor([len(e.prompt) - 1 for e in batch], dtype=torch.long)
    if share_prompt and supports_shared_prompt(model):
        packed = pack_pairs(batch, pad, device, model_dtype(model))
        set_prompt_ends(fwd_hooks, ends)
        return packed_logprobs(model, packed, fwd_hooks)
    ids, mask = pair_rows(batch, pad, device)
    set_prompt_ends(fwd_hooks, torch.cat([ends, ends]))
    return answer_logprobs(model, ids, mask, fwd_hooks)


def set_prompt_ends(fwd_hooks: Hooks, ends: Int[Tensor, " rows"]) -> None:
    """Tell position-aware hooks (``positions="after_prompt"``) where each row's prompt ends.

    ``ends[r]`` is the index of row r's last prompt token; hooks without a ``set_prompt_ends``
    method are left alone.
    """
    for _, hook in fwd_hooks:
        setter = getattr(hook, "set_prompt_ends", None)
        if setter is not None:
            setter(ends)


@torch.no_grad()
def bucketed_logprobs(
    lengths: Sequence[int],
    score: Any,
    fwd_hooks_factory: Any = None,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "log-probs",
) -> Float[Tensor, "n 2"]:
    """``[n, 2]`` log-probs of n pairs, scored in batches of similar length, no gradient.

    ``score(idx, hooks)`` returns ``[matching_1..B, not_matching_1..B]`` of the pairs ``idx``
    (e.g. :func:`batch_logprobs` on them); ``lengths[i]`` is pair i's length.
    """
    out = torch.zeros(len(lengths), 2)
    buckets = length_buckets(lengths, batch_size)
    for idx in tqdm(buckets, desc=desc, disable=not progress, leave=False):
        hooks = fwd_hooks_factory() if fwd_hooks_factory is not None else ()
        lp = score(idx, hooks).cpu()
        b = len(idx)
        out[idx, 0] = lp[:b]
        out[idx, 1] = lp[b:]
    return out


def pair_logprobs(
    model: Any,
    encoded: Sequence[EncodedPair],
    fwd_hooks_factory: Any = None,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "log-probs",
    share_prompt: bool = True,
) -> Float[Tensor, "n 2"]:
    """``[log p(matching|x), log p(not_matching|x)]`` for each pair, batched by length.

    Args:
        fwd_hooks_factory: ``None`` (unsteered) or a zero-argument callable returning fresh
            forward hooks for each batch (e.g. ``lambda: vector.fwd_hooks(2.0)``).
        share_prompt: score both answers of a pair in one packed row (see
            :func:`batch_logprobs`); pass False for hooks that depend on the position.
    """

    def score(idx: Sequence[int], hooks: Hooks) -> Tensor:
        return batch_logprobs(model, [encoded[i] for i in idx], hooks, share_prompt)

    return bucketed_logprobs(
        [e.length for e in encoded], score, fwd_hooks_factory, batch_size, progress, desc
    )
