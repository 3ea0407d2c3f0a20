"""``SteeringVector``: directions at hook points, with arithmetic, ``apply`` and safe I/O.

A steering vector holds one ``[d_model]`` tensor per hook name (usually
``blocks.{L}.hook_resid_post``) plus JSON metadata. Applying it adds ``multiplier * v`` to the
hook's activation at the chosen positions, inside a context manager that always removes its
hooks.

Examples:
    >>> import torch, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2, d_model=32)
    >>> v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(32)})
    >>> w = 2 * v - v / 2
    >>> round(w.norms()["blocks.1.hook_resid_post"], 4)
    8.4853
    >>> with v.apply(model, multiplier=2.0):
    ...     steered = model(torch.tensor([[1, 2, 3]]))
    >>> sl.active_hooks(model)
    []
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import (
    ConfigError,
    HookError,
    VectorError,
    VectorFileError,
)
from steerlens.fileio import jsonable, read_safetensors, write_safetensors
from steerlens.gguf_file import read_control_vector, write_control_vector

FORMAT_KEY = "steerlens_format"
FORMAT_VERSION = "1"
META_KEY = "steerlens_metadata"

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


def _check_tensor(name: str, t: Any, where: str = "") -> Tensor:
    prefix = f"{where}: " if where else ""
    if not isinstance(name, str) or not name:
        raise VectorError(f"{prefix}hook names must be non-empty strings, got {name!r}")
    if not isinstance(t, Tensor):
        raise VectorError(f"{prefix}hook {name!r}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise VectorError(f"{prefix}hook {name!r}: expected a floating-point tensor, got {t.dtype}")
    if t.ndim != 1:
        raise VectorError(f"{prefix}hook {name!r}: expected shape [d_model], got {tuple(t.shape)}")
    if t.numel() == 0:
        raise VectorError(f"{prefix}hook {name!r}: the vector is empty")
    if not bool(torch.isfinite(t).all()):
        raise VectorError(f"{prefix}hook {name!r}: the vector contains NaN or inf values")
    return t


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
    of vectors with a row-to-vector ``index``: :class:`steerlens.rows.RowSteering`).
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


@dataclass
class SteeringVector:
    """Steering directions at hook points, plus metadata.

    Args:
        vectors: ``{hook_name: tensor[d_model]}``; every tensor must be 1-D, float, finite and
            of the same length.
        metadata: JSON-friendly information (model, d_model, method, behaviour, settings).

    Examples:
        >>> import torch
        >>> a = SteeringVector({"blocks.1.hook_resid_post": torch.tensor([3.0, 4.0])})
        >>> b = SteeringVector({"blocks.2.hook_resid_post": torch.tensor([1.0, 0.0])})
        >>> sorted((a + b).vectors)
        ['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post']
        >>> a.norms()
        {'blocks.1.hook_resid_post': 5.0}
        >>> (-a).vectors["blocks.1.hook_resid_post"]
        tensor([-3., -4.])
    """

    vectors: dict[str, Float[Tensor, " d_model"]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, Mapping) or not self.vectors:
            raise VectorError("a SteeringVector needs at least one {hook_name: tensor} entry")
        self.vectors = {k: _check_tensor(k, v) for k, v in self.vectors.items()}
        widths = {v.shape[0] for v in self.vectors.values()}
        if len(widths) > 1:
            detail = ", ".join(f"{k}: {v.shape[0]}" for k, v in self.vectors.items())
            raise VectorError(f"all vectors must share one d_model; got {detail}")
        self.metadata = dict(self.metadata or {})
        self.metadata.setdefault("d_model", self.d_model)

    # ----------------------------------------------------------------- properties
    @property
    def d_model(self) -> int:
        """Width of the vectors."""
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def hook_names(self) -> list[str]:
        """The hook names, in insertion order."""
        return list(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: |v|={v.norm().item():.3g}" for k, v in self.vectors.items())
        method = self.metadata.get("method")
        extra = f", method={method!r}" if method else ""
        return f"SteeringVector(d_model={self.d_model}{extra}, {{{parts}}})"

    # ----------------------------------------------------------------- arithmetic
    def _check_compatible(self, other: SteeringVector) -> None:
        if not isinstance(other, SteeringVector):
            raise TypeError(f"cannot combine SteeringVector with {type(other).__name__}")
        if other.d_model != self.d_model:
            raise VectorError(
                f"cannot combine vectors of different d_model: {self._label()} has "
                f"d_model={self.d_model}, {other._label()} has d_model={other.d_model}"
            )
        m1, m2 = self.metadata.get("model"), other.metadata.get("model")
        if m1 and m2 and m1 != m2:
            warnings.warn(
                f"combining vectors trained on different models ({m1!r} and {m2!r})",
                stacklevel=3,
            )

    def _label(self) -> str:
        bits = [str(self.metadata[k]) for k in ("method", "behaviour") if self.metadata.get(k)]
        return "vector(" + ", ".join(bits) + ")" if bits else "vector"

    def _combined_meta(self, other: SteeringVector | None, op: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"method": "arithmetic", "d_model": self.d_model}
        models = {self.metadata.get("model")}
        if other is not None:
            models.add(other.metadata.get("model"))
        models.discard(None)
        if len(models) == 1:
            meta["model"] = models.pop()
        left = self.metadata.get("expression") or self._label()
        if other is None:
            meta["expression"] = f"{op}({left})"
        else:
            right = other.metadata.get("expression") or other._label()
            meta["expression"] = f"({left} {op} {right})"
        return meta

    def __add__(self, other: SteeringVector) -> SteeringVector:
        self._check_compatible(other)
        out = {k: v.clone() for k, v in self.vectors.items()}
        for k, v in other.vectors.items():
            out[k] = out[k] + v if k in out else v.clone()
        return SteeringVector(out, self._combined_meta(other, "+"))

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        self._check_compatible(other)
        return self + (-other)

    def __neg__(self) -> SteeringVector:
        meta = dict(self.metadata)
        meta["expression"] = f"-({self.metadata.get('expression') or self._label()})"
        return SteeringVector({k: -v for k, v in self.vectors.items()}, meta)

    def __mul__(self, scale: float) -> SteeringVector:
        if isinstance(scale, SteeringVector):
            raise TypeError("multiply a SteeringVector by a number, not by another vector")
        s = check_multiplier(scale)
        meta = dict(self.metadata)
        meta["expression"] = f"{s:g}*({self.metadata.get('expression') or self._label()})"
        return SteeringVector({k: v * s for k, v in self.vectors.items()}, meta)

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> SteeringVector:
        s = check_multiplier(scale)
        if s == 0:
            raise ConfigError("cannot divide a steering vector by zero")
        return self * (1.0 / s)

    def norms(self) -> dict[str, float]:
        """L2 norm of each hook's vector."""
        return {k: float(v.norm()) for k, v in self.vectors.items()}

    def normalized(self) -> SteeringVector:
        """Each hook's vector scaled to unit norm (zero vectors are left at zero)."""
        out = {}
        for k, v in self.vectors.items():
            n = v.norm()
            out[k] = v / n if n > 0 else v.clone()
        meta = dict(self.metadata)
        meta["normalized"] = True
        return SteeringVector(out, meta)

    def cosine(self, other: SteeringVector) -> dict[str, float]:
        """Cosine similarity per shared hook name.

        Examples:
            >>> import torch
            >>> a = SteeringVector({"h": torch.tensor([1.0, 0.0])})
            >>> b = SteeringVector({"h": torch.tensor([1.0, 1.0])})
            >>> round(a.cosine(b)["h"], 4)
            0.7071
        """
        self._check_compatible(other)
        out = {}
        for k in self.vectors:
            if k in other.vectors:
                a, b = self.vectors[k].double(), other.vectors[k].double()
                out[k] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        return out

    def allclose(self, other: SteeringVector, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
        """True if both have the same hooks and close values."""
        if set(self.vectors) != set(other.vectors):
            return False
        return all(
            torch.allclose(self.vectors[k], other.vectors[k], atol=atol, rtol=rtol)
            for k in self.vectors
        )

    def to(self, *args: Any, **kwargs: Any) -> SteeringVector:
        """Move/cast every tensor (``torch.Tensor.to`` arguments)."""
        return SteeringVector(
            {k: v.to(*args, **kwargs) for k, v in self.vectors.items()}, dict(self.metadata)
        )

    # ----------------------------------------------------------------- steering
    def check_model(self, model: Any) -> None:
        """Raise if the vector does not fit ``model`` (d_model, hook names)."""
        width = int(model.cfg.d_model)
        if width != self.d_model:
            raise VectorError(
                f"{self._label()} has d_model={self.d_model} but the model "
                f"{getattr(model.cfg, 'model_name', type(model).__name__)!r} has d_model={width}"
            )
        hook_dict = model.hook_dict
        for name in self.vectors:
            if name not in hook_dict:
                close = [h for h in hook_dict if h.split(".")[-1] == name.split(".")[-1]][:3]
                hint = f" (e.g. {', '.join(close)})" if close else ""
                raise HookError(
                    f"hook {name!r} does not exist on the model "
                    f"{getattr(model.cfg, 'model_name', type(model).__name__)!r} with "
                    f"{model.cfg.n_layers} layers{hint}"
                )

    def fwd_hooks(
        self, multiplier: float | Sequence[float] = 1.0, positions: Positions = "all"
    ) -> list[tuple[str, SteerHook]]:
        """Hooks for ``model.run_with_hooks(..., fwd_hooks=...)`` or ``model.hooks(...)``.

        Args:
            multiplier: scale of the vector (0 leaves the model unchanged), or one multiplier
                per batch row (a list or 1-D tensor): row ``b`` gets ``multiplier[b] * v``.
            positions: ``"all"`` (every position, as BiPO trains), ``"after_prompt"`` (the last
                prompt token and everything generated, as CAA steers), an int ``k`` (positions
                ``>= k``), or a boolean mask ``[pos]`` / ``[batch, pos]``.

        Examples:
            >>> import torch
            >>> v = SteeringVector({"blocks.0.hook_resid_post": torch.ones(4)})
            >>> [name for name, _ in v.fwd_hooks(2.0)]
            ['blocks.0.hook_resid_post']
            >>> v.fwd_hooks([1.0, -1.0, 0.0])[0][1].rows
            3
        """
        pos = check_positions(positions)
        if isinstance(multiplier, str) or not isinstance(multiplier, (Sequence, Tensor)):
            m = check_multiplier(multiplier)  # type: ignore[arg-type]
            return [(name, SteerHook(vec, m, pos)) for name, vec in self.vectors.items()]
        ms = check_multipliers(multiplier)
        return [
            (name, SteerHook(vec, ms, pos, index=[0] * len(ms)))
            for name, vec in self.vectors.items()
        ]

    def apply(
        self,
        model: Any,
        multiplier: float | Sequence[float] = 1.0,
        positions: Positions = "all",
    ) -> contextlib.AbstractContextManager[Any]:
        """Context manager: steer ``model`` inside the ``with`` block.

        Hooks are removed on exit, also when the body raises. Nested ``apply`` blocks add their
        vectors. Works inside ``model.generate(...)`` with or without the KV cache. A list of
        multipliers steers batch row ``b`` by ``multiplier[b]`` (every batch in the block must
        have that many rows); rows with multiplier 0 are left untouched. For different vectors
        per row see :class:`steerlens.rows.RowSteering`.

        Raises:
            VectorError: the model's d_model differs from the vector's.
            HookError: a hook name does not exist on the model.
            ConfigError: the multiplier is not a finite number or ``positions`` is invalid.

        Examples:
            >>> import torch, steerlens as sl
            >>> m = sl.tiny_model(n_layers=2, d_model=32)
            >>> v = SteeringVector({"blocks.1.hook_resid_post": torch.ones(32)})
            >>> x = torch.tensor([[1, 2, 3], [1, 2, 3]])
            >>> with v.apply(m, multiplier=[0.0, 2.0]):
            ...     both = m(x)
            >>> with v.apply(m, multiplier=2.0):
            ...     one = m(x[:1])
            >>> torch.equal(both[0], m(x)[0]), torch.allclose(both[1], one[0], atol=1e-5)
            (True, True)
        """
        hooks = self.fwd_hooks(multiplier, positions)
        self.check_model(model)
        return steer_with(model, hooks)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a safetensors file (metadata as JSON in its header), atomically.

        The round trip through :meth:`load` is bit-exact. An existing file is only replaced with
        ``overwrite=True``.
        """
        header = {FORMAT_KEY: FORMAT_VERSION, META_KEY: json.dumps(jsonable(self.metadata))}
        return write_safetensors(path, self.vectors, header, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        """Read a vector written by :meth:`save` (or any safetensors file of 1-D tensors).

        Nothing is unpickled. Errors name the file and the hook at fault.
        """
        path = Path(path)
        if not path.is_file():
            raise VectorFileError(f"{path}: no such file")
        tensors, header = read_safetensors(path, VectorFileError, "a valid safetensors file")
        if not tensors:
            raise VectorFileError(f"{path}: the file holds no tensors")
        version = header.get(FORMAT_KEY)
        if version is not None and version != FORMAT_VERSION:
            raise VectorFileError(f"{path}: unsupported steerlens format version {version!r}")
        try:
            meta = json.loads(header.get(META_KEY, "{}"))
        except json.JSONDecodeError as e:
            raise VectorFileError(f"{path}: metadata header is not valid JSON ({e})") from e
        if not isinstance(meta, dict):
            raise VectorFileError(f"{path}: metadata header must be a JSON object")
        for k, v in tensors.items():
            try:
                _check_tensor(k, v)
            except VectorError as e:
                raise VectorFileError(f"{path}: {e}") from e
        try:
            return cls(tensors, meta)
        except VectorError as e:
            raise VectorFileError(f"{path}: {e}") from e

    def to_gguf(
        self,
        path: str | os.PathLike[str],
        *,
        model_hint: str | None = None,
        n_layers: int | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Export as a llama.cpp control vector (see :mod:`steerlens.gguf_file`).

        ``n_layers`` (default: the ``n_layers`` metadata steerlens' trainers record) pads
        every slot of the model, because llama.cpp keeps stale values in slots a shorter
        vector does not cover.
        """
        return write_control_vector(
            path,
            self.vectors,
            self.metadata,
            model_hint=model_hint,
            n_layers=n_layers,
            overwrite=overwrite,
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> SteeringVector:
        """Import a llama.cpp control vector (steerlens, repeng or llama.cpp's own tools)."""
        vectors, meta = read_control_vector(path)
        try:
            return cls(vectors, meta)
        except VectorError as e:
            raise VectorFileError(f"{path}: {e}") from e


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
    :meth:`SteeringVector.apply` and :meth:`steerlens.rows.RowSteering.apply`.
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


# id(model) -> number of steerlens apply() blocks currently open on it
_ACTIVE: dict[int, int] = {}


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
        >>> v = SteeringVector({"blocks.0.hook_resid_post": torch.ones(32)})
        >>> with v.apply(m):
        ...     print(is_steered(m))
        True
        >>> is_steered(m)
        False
    """
    return _ACTIVE.get(id(model), 0) > 0
