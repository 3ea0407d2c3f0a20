"""The hook machinery every steering object builds on.

:class:`PositionalHook` adds (or does) something at chosen positions of a hook point's
activation; :class:`SteerHook` adds a vector; :class:`CallTracker` counts forward passes;
:func:`steer_with` adds hooks to a model inside a context manager that always removes them;
:func:`check_positions` and :func:`check_multiplier` validate the shared options.

Examples:
    >>> import torch, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2, d_model=8)
    >>> hook = SteerHook(torch.ones(8), 2.0, "all")
    >>> with steer_with(model, [("blocks.1.hook_resid_post", hook)]):
    ...     is_steered(model)
    True
    >>> is_steered(model)
    False
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.errors import (
    ConfigError,
    VectorError,
)

Positions = Literal["all", "after_prompt"] | int | Tensor


def check_multiplier(multiplier: float) -> float:
    """A multiplier as a finite float, else :class:`ConfigError`.

    Examples:
        >>> check_multiplier("2")
        2.0
    """
    try:
        m = float(multiplier)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"multiplier must be a number, got {multiplier!r}") from e
    if not math.isfinite(m):
        raise ConfigError(f"multiplier must be finite, got {multiplier!r}")
    return m


# id(model) -> number of steerlens apply() blocks currently open on it
_ACTIVE: dict[int, int] = {}


class PositionalHook:
    """Base of steerlens' forward hooks: which positions of each call to change.

    Positions are counted per forward pass. A *full* forward (a prompt, or a re-run of a whole
    sequence) starts at position 0; a KV-cached *decoding* step continues after the positions
    already seen. ``"after_prompt"`` changes, in each row, the prompt's last token and
    everything after it (CAA's protocol: Rimsky et al. 2024, ``add_vector_from_position`` at
    the end of the instruction in nrimsky/CAA ``llama_wrapper.py``) and every generated token.
    The prompt's last token (and first, for left padding) is found on every full forward:

    * set explicitly with :meth:`set_prompt_ends` (what steerlens' evaluators do for their
      right-padded rows), else
    * from the ``attention_mask`` of the call (the attended span of each row, left or right
      padding), told by a :class:`CallTracker` on the model, else
    * the last column (an unpadded batch).

    Nothing is remembered across full forwards, so reusing one hook (one ``apply`` block) for
    several calls equals a fresh ``apply`` each time. A full forward that only extends the
    previous one by a token (``model.generate(..., use_past_kv_cache=False)``) keeps that
    prompt's span. Subclasses implement :meth:`change`.
    """

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self._seen = 0
        self._ends: Tensor | None = None  # per-row index of the prompt's last token
        self._starts: Tensor | None = None  # per-row index of the prompt's first token
        self._next: tuple[str, Tensor | None, Tensor | None] | None = None
        self.decoding = False

    def set_prompt_ends(self, ends: Tensor | None) -> None:
        """Use ``ends[b]`` as row b's last prompt position in the next full forward."""
        self._next = ("full", None if ends is None else ends.long(), None)

    def begin_call(self, kind: str, ends: Tensor | None, starts: Tensor | None = None) -> None:
        """Called by :class:`CallTracker` before each model call: ``kind`` is ``"full"``,
        ``"extend"`` (an uncached re-run one token longer) or ``"decode"``."""
        self._next = (kind, ends, starts)

    def prompt_span(self, batch: int, n: int) -> tuple[Tensor, Tensor]:
        """Per-row first and last prompt position of the current full forward."""
        ends = self._ends if self._ends is not None else torch.full((batch,), n - 1)
        starts = self._starts if self._starts is not None else torch.zeros(batch, dtype=torch.long)
        return starts.long(), ends.long()

    def _mask(self, start: int, n: int, batch: int, device: torch.device) -> Tensor | None:
        pos = self.positions
        idx = torch.arange(start, start + n, device=device)
        if isinstance(pos, str):
            if pos == "all":
                return None
            ends = self._ends
            if ends is None:  # no padding known: the prompt ends at the last column
                return None if start > 0 else (idx >= n - 1).expand(batch, n)
            ends = ends.to(device)
            if ends.shape[0] != batch:
                raise VectorError(
                    f"positions='after_prompt': {ends.shape[0]} prompt ends for a batch of {batch}"
                )
            return idx[None, :] >= ends[:, None]
        if isinstance(pos, int):
            return idx >= pos
        mask = pos.to(device)
        length = mask.shape[-1]
        inside = idx < length
        sel = mask[..., idx.clamp(max=length - 1)] & inside
        return sel

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        n = act.shape[1] if act.ndim == 3 else 1
        batch = act.shape[0] if act.ndim == 3 else 1
        told, self._next = self._next, None
        if told is not None:
            decoding = told[0] == "decode"
        else:  # no pre-hook (``run_with_hooks``): one token after a pass is a decoding step
            decoding = n == 1 and self._seen > 0
        if decoding:
            start = self._seen
        else:
            start = 0
            ends = told[1] if told is not None else None
            starts = told[2] if told is not None else None
            if told is not None and told[0] == "extend":
                ends, starts = self._ends, self._starts  # same prompt, one more token
            self._ends, self._starts = ends, starts
        self.decoding = decoding
        self._seen = start + n
        return self.change(act, self._mask(start, n, batch, act.device), hook)

    def change(self, act: Tensor, mask: Tensor | None, hook: Any) -> Tensor:
        """The new activation; ``mask`` (None: every position) selects positions to change."""
        raise NotImplementedError


class SteerHook(PositionalHook):
    """The forward hook that adds ``multiplier * vector`` at selected positions
    (:class:`PositionalHook`), with one multiplier, or one per batch row (and a stacked table
    of vectors with a row-to-vector ``index``: :class:`steerlens.steering.rows.RowSteering`).
    """

    def __init__(
        self,
        vector: Float[Tensor, " d_model"] | Float[Tensor, "k d_model"],
        multiplier: float | Sequence[float] | Tensor,
        positions: Positions,
        *,
        index: Sequence[int] | Tensor | None = None,
    ) -> None:
        super().__init__(positions)
        self.vector = vector
        if index is not None or not isinstance(multiplier, (int, float)):
            scale = torch.as_tensor(multiplier, dtype=torch.float64).reshape(-1)
            rows = scale.shape[0]
            idx = torch.zeros(rows, dtype=torch.long) if index is None else torch.as_tensor(index)
            if idx.dtype not in (torch.int64, torch.int32) or idx.shape != (rows,):
                raise ConfigError(
                    f"index must hold one int per row ({rows} rows), got {tuple(idx.shape)}"
                )
            table = vector if vector.ndim == 2 else vector[None]
            if bool((idx >= table.shape[0]).any()):
                raise ConfigError(f"index refers to vector {int(idx.max())} of {table.shape[0]}")
            # a row with no vector (index -1) or multiplier 0 adds exactly zero
            scale = torch.where(idx < 0, 0.0, scale)
            self.multiplier: float | Tensor = scale
            self.index: Tensor | None = (idx.long() + 1).clamp(min=0)  # table row 0 is zero
        else:
            self.multiplier = float(multiplier)  # type: ignore[arg-type]
            self.index = None
        self._cast: Tensor | None = None
        self._delta: Tensor | None = None

    @property
    def rows(self) -> int | None:
        """Batch rows this hook is set for (None: one multiplier for any batch)."""
        return None if self.index is None else int(self.index.shape[0])

    def delta(self, like: Tensor) -> Tensor:
        """What is added: ``[d_model]`` (one multiplier) or ``[rows, d_model]`` (per row), in
        ``like``'s dtype and device. Per-row values are computed as ``m * v`` is for one
        multiplier (in fp32 or wider, then cast), so a row equals the one-multiplier result."""
        if self._cast is None or self._cast.device != like.device or self._cast.dtype != like.dtype:
            self._cast = self.vector.to(device=like.device, dtype=like.dtype)
            self._delta = None
        if self.index is None:
            return self.multiplier * self._cast  # type: ignore[operator]
        if self._delta is None or self.vector.requires_grad:
            table = self._cast if self._cast.ndim == 2 else self._cast[None]
            table = torch.cat([torch.zeros_like(table[:1]), table])
            op = torch.promote_types(like.dtype, torch.float32)
            scale = self.multiplier.to(device=like.device, dtype=op)  # type: ignore[union-attr]
            rows = table[self.index.to(like.device)].to(op)
            self._delta = (scale[:, None] * rows).to(like.dtype)
        return self._delta

    def change(self, act: Tensor, mask: Tensor | None, hook: Any) -> Tensor:
        if act.shape[-1] != self.vector.shape[-1]:
            raise VectorError(
                f"hook {getattr(hook, 'name', '?')!r}: activation width {act.shape[-1]} does not "
                f"match the vector's d_model {self.vector.shape[-1]}"
            )
        delta = self.delta(act)
        if delta.ndim == 2:
            if act.ndim != 3 or act.shape[0] != delta.shape[0]:
                raise VectorError(
                    f"hook {getattr(hook, 'name', '?')!r}: set for {delta.shape[0]} batch rows "
                    f"(one multiplier per row), got an activation of shape {tuple(act.shape)}"
                )
            delta = delta[:, None, :]
        if mask is None:
            return act + delta
        return act + mask.unsqueeze(-1).to(act.dtype) * delta


class CallTracker:
    """A forward pre-hook on the model that tells :class:`PositionalHook` s what each call is.

    It reads the call's token ids, ``attention_mask`` and ``past_key_values`` (public arguments
    of ``TransformerBridge.forward``): a call with a KV cache and one new token is a decoding
    step; a call whose ids extend the previous call's ids by one token continues an uncached
    generation; any other call is a new prompt whose per-row span runs from the first to the
    last attended position.
    """

    def __init__(self, hooks: Sequence[PositionalHook]) -> None:
        self.hooks = list(hooks)
        self._last: Tensor | None = None

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input", kwargs.get("input_ids"))
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.is_floating_point():
            for h in self.hooks:
                h.begin_call("full", None)
            self._last = None
            return
        mask = kwargs.get("attention_mask")
        cached = kwargs.get("past_key_values") is not None
        prev = self._last
        starts = None
        if cached and ids.shape[1] == 1 and prev is not None:
            kind, ends = "decode", None
        elif (
            prev is not None
            and prev.shape[0] == ids.shape[0]
            and ids.shape[1] == prev.shape[1] + 1
            and torch.equal(ids[:, :-1], prev.to(ids.device))
        ):
            kind, ends = "extend", None
        else:
            kind = "full"
            if isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape == ids.shape:
                cols = torch.arange(ids.shape[1], device=mask.device)
                ends = torch.where(mask.bool(), cols, -1).max(-1).values
                starts = (
                    torch.where(mask.bool(), cols, ids.shape[1])
                    .min(-1)
                    .values.clamp(max=ends.clamp(min=0))
                )
            else:
                ends = torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long)
        self._last = prev if kind == "decode" else ids.detach()
        for h in self.hooks:
            h.begin_call(kind, ends, starts)


def check_multipliers(multipliers: Any) -> list[float]:
    """One finite multiplier per row, as floats, else :class:`ConfigError`.

    Examples:
        >>> check_multipliers([1, "2", 0.5])
        [1.0, 2.0, 0.5]
    """
    if isinstance(multipliers, Tensor):
        multipliers = multipliers.reshape(-1).tolist()
    if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, Sequence):
        raise ConfigError(
            f"multipliers must be a number or a sequence of numbers, got {multipliers!r}"
        )
    if not multipliers:
        raise ConfigError("per-row multipliers: the sequence is empty")
    return [check_multiplier(m) for m in multipliers]


@contextlib.contextmanager
def steer_with(
    model: Any, hooks: Sequence[tuple[str, PositionalHook]], *, track: Any = None
) -> Iterator[Any]:
    """Attach steering hooks to ``model`` for the ``with`` block, and remove them on exit.

    Position-aware hooks are told what each call is (a new prompt, a decoding step) by a
    :class:`CallTracker` forward pre-hook on ``track`` (default: the model itself; the
    bridge's ``original_model`` when generation calls that directly). Used by
    :meth:`SteeringVector.apply` and :meth:`steerlens.steering.rows.RowSteering.apply`.
    """
    _ACTIVE[id(model)] = _ACTIVE.get(id(model), 0) + 1
    tracker = None
    try:
        target = model if track is None else track
        if isinstance(target, torch.nn.Module) and not _all_positions(hooks):
            tracker = target.register_forward_pre_hook(
                CallTracker([h for _, h in hooks]), with_kwargs=True
            )
        with model.hooks(fwd_hooks=list(hooks)):
            yield model
    finally:
        if tracker is not None:
            tracker.remove()
        _ACTIVE[id(model)] -= 1
        if _ACTIVE[id(model)] <= 0:
            del _ACTIVE[id(model)]


def _all_positions(hooks: Sequence[tuple[str, PositionalHook]]) -> bool:
    """True when no hook needs to know what each call is (every position, no condition)."""
    return all(
        isinstance(h.positions, str) and h.positions == "all" and not getattr(h, "needs_calls", 0)
        for _, h in hooks
    )


def check_positions(positions: Any) -> Positions:
    if isinstance(positions, str):
        if positions not in {"all", "after_prompt"}:
            raise ConfigError(
                f"positions must be 'all', 'after_prompt', an int or a boolean mask; "
                f"got {positions!r}"
            )
        return positions  # type: ignore[return-value]
    if isinstance(positions, bool):
        raise ConfigError("positions must be 'all', 'after_prompt', an int or a boolean mask")
    if isinstance(positions, int):
        if positions < 0:
            raise ConfigError(f"positions as an int must be >= 0, got {positions}")
        return positions
    if isinstance(positions, Tensor):
        if positions.dtype != torch.bool or positions.ndim not in (1, 2):
            raise ConfigError(
                "a positions mask must be a bool tensor of shape [pos] or [batch, pos], got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )
        return positions
    raise ConfigError(
        f"positions must be 'all', 'after_prompt', an int or a mask, got {positions!r}"
    )


def active_hooks(model: Any) -> list[str]:
    """Names of the model's hook points that currently have forward or backward hooks.

    steerlens removes every hook it adds; after any ``apply``/training/sweep this is ``[]``
    unless you added hooks yourself.

    Examples:
        >>> import steerlens as sl
        >>> active_hooks(sl.tiny_model(n_layers=1))
        []
    """
    return [name for name, hp in model.hook_dict.items() if hp.has_hooks()]


def is_steered(model: Any) -> bool:
    """True while a steerlens ``apply`` block is open on ``model``.

    Examples:
        >>> import torch, steerlens as sl
        >>> m = sl.tiny_model(n_layers=1, d_model=32)
        >>> v = sl.SteeringVector({"blocks.0.hook_resid_post": torch.ones(32)})
        >>> with v.apply(m):
        ...     print(is_steered(m))
        True
        >>> is_steered(m)
        False
    """
    return _ACTIVE.get(id(model), 0) > 0
