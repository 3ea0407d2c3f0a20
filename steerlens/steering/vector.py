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
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.errors import (
    ConfigError,
    HookError,
    VectorError,
    VectorFileError,
)
from steerlens.core.fileio import jsonable, read_safetensors, write_safetensors
from steerlens.core.gguf_file import read_control_vector, write_control_vector
from steerlens.steering.hookpoints import (
    Positions,
    SteerHook,
    check_multiplier,
    check_multipliers,
    check_positions,
    steer_with,
)

FORMAT_KEY = "steerlens_format"
FORMAT_VERSION = "1"
META_KEY = "steerlens_metadata"


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
        per row see :class:`steerlens.steering.rows.RowSteering`.

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
        """Export as a llama.cpp control vector (see :mod:`steerlens.core.gguf_file`).

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
