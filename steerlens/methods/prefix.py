"""Training at the floor: what lies below the steered layer, computed once per pair.

A steering vector enters the residual stream at block L, so for a given pair everything
below L is the same in every optimiser step. :class:`PrefixCache` computes the residual stream
entering the first block that the vector can change (block L+1 for ``hook_resid_post`` at L,
block L for ``hook_resid_pre`` / ``hook_resid_mid``) once per pair, without gradient, and
each step runs only the blocks from there up, the final norm and the unembedding of the
answer positions, on the same packed rows as :func:`~steerlens.core.logprobs.batch_logprobs`
(prompt once, then both answers). With several steered layers the cache sits below the
lowest one and the higher hooks fire inside the blocks as usual.

Only public interfaces are used: ``forward(..., stop_at_layer=s)`` for the cached residual,
a forward pre-hook on ``blocks[0]`` for the keyword arguments the model's own loop passes to
every block (attention mask, rotary embeddings, position ids), the bridge's block list,
``ln_final``, ``W_U`` / ``b_U``, and ``hooks()`` for the steering hooks. Whether this gives the
same numbers as a full forward is checked once per model and layer on a short probe
(:func:`floor_supported`); where it does not (a model whose blocks get different arguments,
logit soft-capping, no packed rows), training takes the full forward as before.

Memory: the cache holds ``tokens x d_model`` activations per pair (SmolLM2: 2.3 KiB per token
in fp32). Pairs beyond ``budget_mb`` are not kept: their residual is recomputed, in one
no-gradient batch, in each step that needs them.

Examples:
    >>> import torch, steerlens as sl
    >>> from steerlens.core.encoding import encode_pairs
    >>> from steerlens.core.logprobs import batch_logprobs
    >>> from steerlens.steering.vector import SteerHook
    >>> m = sl.tiny_model(n_layers=3)
    >>> enc = encode_pairs(m.tokenizer, sl.load_pairs(sl.demo_data_path("train"))[:4])
    >>> hook = "blocks.1.hook_resid_post"
    >>> cache = PrefixCache(m, enc, [hook])
    >>> v = torch.randn(64)
    >>> fast = cache.logprobs([0, 2], [(hook, SteerHook(v, 1.0, "all"))])
    >>> full = batch_logprobs(m, [enc[0], enc[2]], [(hook, SteerHook(v, 1.0, "all"))])
    >>> torch.allclose(fast, full, atol=1e-5), cache.start, cache.cached
    (True, 2, 4)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.batching import length_buckets
from steerlens.core.encoding import EncodedPair
from steerlens.core.hooks import hook_layer, model_device, model_dtype, n_layers, pad_token_id
from steerlens.core.logprobs import (
    Hooks,
    PackedPairs,
    batch_logprobs,
    can_unembed_selected,
    pack_pairs,
    set_prompt_ends,
    sum_answer_logprobs,
    supports_shared_prompt,
)
from steerlens.steering.hookpoints import SteerHook


def start_block(hook_names: Sequence[str]) -> int | None:
    """The first block a vector at ``hook_names`` can change, or None if a hook is not inside
    a block.

    Examples:
        >>> start_block(["blocks.3.hook_resid_post", "blocks.5.hook_resid_pre"])
        4
        >>> start_block(["blocks.3.hook_resid_mid"]), start_block(["hook_embed"])
        (3, None)
    """
    starts = []
    for name in hook_names:
        layer = hook_layer(name)
        if layer is None:
            return None
        starts.append(layer + 1 if name.endswith(".hook_resid_post") else layer)
    return min(starts) if starts else None


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a pre-hook to end a forward pass early, carrying what it read."""

    def __init__(self, value: Any) -> None:
        self.value = value


def block_kwargs(model: Any, packed: PackedPairs) -> dict[str, Any]:
    """The keyword arguments the model's own loop passes to its blocks for ``packed``.

    The forward pass is stopped at ``blocks[0]``'s pre-hook (only the embedding runs); the KV
    cache is dropped.
    """

    def grab(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _Stop(dict(kwargs))

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(
            packed.input_ids,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
        )
    except _Stop as got:
        kwargs = got.value
    else:  # pragma: no cover - the pre-hook always fires
        raise RuntimeError("blocks[0] was never called")
    finally:
        handle.remove()
    kwargs.pop("past_key_values", None)
    kwargs.pop("past_key_value", None)
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return kwargs


@torch.no_grad()
def prefix_residual(
    model: Any, packed: PackedPairs, start: int
) -> Float[Tensor, "batch pos d_model"]:
    """The unsteered residual stream entering block ``start`` for packed rows (``start ==
    n_layers``: the input of the final norm)."""
    kwargs = {"attention_mask": packed.attention_mask, "position_ids": packed.position_ids}
    if start < n_layers(model):
        return model(packed.input_ids, stop_at_layer=start, **kwargs)

    def grab(module: Any, args: tuple[Any, ...]) -> None:
        raise _Stop(args[0])

    handle = model.ln_final.register_forward_pre_hook(grab)
    try:
        model(packed.input_ids, **kwargs)
    except _Stop as got:
        return got.value
    finally:
        handle.remove()
    raise RuntimeError("ln_final was never called")  # pragma: no cover


def run_from(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    kwargs: dict[str, Any],
) -> Float[Tensor, "batch pos d_model"]:
    """Blocks ``start..n-1`` then the final norm: the unembedding's input."""
    h = resid
    for block in list(model.blocks)[start:]:
        out = block(h, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
    return model.ln_final(h)


class PrefixCache:
    """Residual stream entering the first steerable block, per encoded pair, computed once.

    Args:
        model: the hooked model (frozen).
        encoded: the encoded pairs (training, then any held-out ones).
        hook_names: where the vectors enter (one or several layers).
        budget_mb: keep at most this many MiB of activations; pairs beyond it are recomputed
            in each step that needs them.
        batch_size: pairs per no-gradient batch when filling the cache.

    Attributes:
        start: the first block that runs in each step.
        cached: how many pairs are held.
    """

    def __init__(
        self,
        model: Any,
        encoded: Sequence[EncodedPair],
        hook_names: Sequence[str],
        *,
        budget_mb: float = 1024.0,
        batch_size: int = 8,
    ) -> None:
        start = start_block(hook_names)
        if start is None:
            raise ValueError(f"hooks {list(hook_names)} are not inside blocks")
        self.model = model
        self.encoded = list(encoded)
        self.start = start
        # a hook at the output of block start-1 sees the cached tensor itself: applied by hand
        self.entry = f"blocks.{start - 1}.hook_resid_post" if start > 0 else None
        self.device = model_device(model)
        self.dtype = model_dtype(model)
        self.pad = pad_token_id(model)
        self._store: dict[int, Tensor] = {}
        width = int(model.cfg.d_model) * torch.finfo(self.dtype).bits // 8
        budget = budget_mb * 2**20
        keep: list[int] = []
        used = 0.0
        for i, e in enumerate(self.encoded):
            size = e.packed_length * width
            if used + size > budget:
                break
            keep.append(i)
            used += size
        self.cached_bytes = int(used)
        lengths = [self.encoded[i].length for i in keep]
        for chunk in length_buckets(lengths, batch_size):
            idx = [keep[j] for j in chunk]
            resid = self._compute(idx)
            for row, i in enumerate(idx):
                self._store[i] = resid[row, : self.encoded[i].packed_length].clone()

    @property
    def cached(self) -> int:
        return len(self._store)

    def _compute(self, idx: Sequence[int]) -> Tensor:
        packed = pack_pairs([self.encoded[i] for i in idx], self.pad, self.device, self.dtype)
        return prefix_residual(self.model, packed, self.start)

    def residual(self, idx: Sequence[int], width: int) -> Float[Tensor, "batch pos d_model"]:
        """The cached residual of pairs ``idx``, right-padded with zeros to ``width``."""
        d = int(self.model.cfg.d_model)
        out = torch.zeros(len(idx), width, d, device=self.device, dtype=self.dtype)
        missing = [i for i in idx if i not in self._store]
        fresh = dict(zip(missing, self._compute(missing), strict=True)) if missing else {}
        for row, i in enumerate(idx):
            n = self.encoded[i].packed_length
            out[row, :n] = self._store[i] if i in self._store else fresh[i][:n]
        return out

    def logprobs(self, idx: Sequence[int], fwd_hooks: Hooks = ()) -> Float[Tensor, " rows"]:
        """``[log p(matching_b|x_b) for b] + [log p(not_matching_b|x_b) for b]`` of the pairs
        ``idx``, steered by ``fwd_hooks``: the numbers of
        :func:`~steerlens.core.logprobs.batch_logprobs`, from the blocks at and above ``start``."""
        for name, _ in fwd_hooks:
            first = start_block([name])
            if first is None or first < self.start:
                raise ValueError(
                    f"hook {name!r} acts below block {self.start}, where this cache starts"
                )
        batch = [self.encoded[i] for i in idx]
        packed = pack_pairs(batch, self.pad, self.device, self.dtype)
        kwargs = block_kwargs(self.model, packed)
        h = self.residual(idx, int(packed.input_ids.shape[1]))
        ends = torch.tensor([len(e.prompt) - 1 for e in batch], dtype=torch.long)
        set_prompt_ends(fwd_hooks, ends)
        inside = []
        for name, fn in fwd_hooks:
            if name == self.entry:
                h = fn(h, hook=self.model.hook_dict[name])
            else:
                inside.append((name, fn))
        with self.model.hooks(fwd_hooks=inside):
            final = run_from(self.model, h, self.start, kwargs)
        width = packed.input_ids.shape[1]
        sel = final[packed.source // width, packed.source % width]
        return sum_answer_logprobs(sel @ self.model.W_U + self.model.b_U, packed)


_FLOOR_OK: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def floor_supported(model: Any, hook_names: Sequence[str]) -> bool:
    """Whether :class:`PrefixCache` gives the full forward's log-probs for ``hook_names``.

    Needs packed rows (:func:`~steerlens.core.logprobs.supports_shared_prompt`), logits that are
    ``ln_final(h) @ W_U + b_U`` and blocks that all receive the same arguments; then a short
    probe pair is scored both ways with a random vector at each hook (and its gradient). The
    answer is cached per model and first block.

    Examples:
        >>> import steerlens as sl
        >>> floor_supported(sl.tiny_model(n_layers=2), ["blocks.0.hook_resid_post"])
        True
    """
    start = start_block(hook_names)
    if start is None or not supports_shared_prompt(model) or not can_unembed_selected(model):
        return False
    try:
        seen = _FLOOR_OK.setdefault(model, {})
    except TypeError:  # pragma: no cover - not weak-referenceable
        seen = {}
    if start not in seen:
        seen[start] = _probe(model, list(hook_names))
    return seen[start]


def _same_kwargs(model: Any, packed: PackedPairs) -> bool:
    """Every block receives the arguments blocks[0] receives (one forward, pre-hooks on all)."""
    got: list[dict[str, Any]] = []

    def grab(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        got.append({k: v for k, v in kwargs.items() if k not in {"past_key_values"}})

    handles = [b.register_forward_pre_hook(grab, with_kwargs=True) for b in model.blocks]
    try:
        with torch.no_grad():
            model(
                packed.input_ids,
                attention_mask=packed.attention_mask,
                position_ids=packed.position_ids,
            )
    finally:
        for h in handles:
            h.remove()
    first = got[0]

    def equal(a: Any, b: Any) -> bool:
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return a.shape == b.shape and bool(torch.equal(a, b))
        if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
            return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b) if not isinstance(a, Tensor) and not isinstance(b, Tensor) else False

    return len(got) == n_layers(model) and all(
        g.keys() == first.keys() and all(equal(g[k], first[k]) for k in first) for g in got
    )


def _probe(model: Any, hook_names: list[str]) -> bool:
    vocab = int(model.cfg.d_vocab)
    probe = [
        EncodedPair((1, 5 % vocab, 9 % vocab, 11 % vocab), (17 % vocab, 2), (33 % vocab, 4, 2)),
        EncodedPair((3 % vocab, 7 % vocab), (21 % vocab, 8 % vocab, 2), (2,)),
    ]
    try:
        packed = pack_pairs(probe, pad_token_id(model), model_device(model), model_dtype(model))
        if not _same_kwargs(model, packed):
            return False
        gen = torch.Generator().manual_seed(0)
        d = int(model.cfg.d_model)
        vecs = [torch.randn(d, generator=gen).to(model_device(model)) for _ in hook_names]
        results = []
        for path in ("full", "floor"):
            params = [v.clone().requires_grad_(True) for v in vecs]
            hooks = [(n, SteerHook(p, 1.0, "all")) for n, p in zip(hook_names, params, strict=True)]
            if path == "full":
                lp = batch_logprobs(model, probe, hooks)
            else:
                lp = PrefixCache(model, probe, hook_names).logprobs([0, 1], hooks)
            grads = torch.autograd.grad(lp.sum(), params)
            results.append((lp.detach().float(), [g.float() for g in grads]))
        (a, ga), (b, gb) = results
        tol = 1e-3 if model_dtype(model) in (torch.float32, torch.float64) else 5e-2
        return bool(torch.allclose(a, b, rtol=tol, atol=tol * 10)) and all(
            torch.allclose(x, y, rtol=tol, atol=tol * 10) for x, y in zip(ga, gb, strict=True)
        )
    except Exception:  # noqa: BLE001 - any failure means: take the full forward
        return False
