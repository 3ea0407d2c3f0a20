"""Interventions beyond addition: directional ablation, projection caps, and their composition.

An :class:`Intervention` is an ordered list of operations, each at one hook point:

* :class:`Add`: ``h + m * v`` (what a :class:`~steerlens.steering.vector.SteeringVector` does);
* :class:`Ablate`: ``h - (h . r) r`` with ``r`` the unit direction (directional ablation,
  Arditi et al. 2024, "Refusal in language models is mediated by a single direction";
  andyrdt/refusal_direction ``direction_ablation_hook`` in ``pipeline/utils/hook_utils.py``);
* :class:`Cap`: ``h + (clamp(h . r, min, max) - h . r) r`` (the component along ``r`` held
  inside ``[min, max]``). RePS's nulling, ``h - relu(h . v)/|v|^2 v``
  (:class:`steerlens.methods.reps.NullHook`), is ``Cap(v, max=0)``.

Operations at one hook run in the order given; hooks run in the model's order. An intervention
is applied like a vector, with the same ``apply`` context manager, ``positions`` and KV-cache
handling, and one multiplier per batch row if wanted (a row's multiplier scales its
:class:`Add` operations; multiplier 0 leaves the row untouched, bit for bit). It saves and
loads as safetensors (bit for bit) and refuses GGUF export unless it only adds at block
outputs (what a llama.cpp control vector can express).

Examples:
    >>> import torch, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2, d_model=32)
    >>> r = torch.randn(32)
    >>> abl = sl.ablation(model, r)              # every block's input, attention and MLP output
    >>> len(abl.ops)
    6
    >>> cap = Intervention([("blocks.1.hook_resid_post", Cap(r, min=-1.0, max=1.0))])
    >>> with (abl + cap).apply(model):
    ...     logits = model(torch.tensor([[1, 2, 3]]))
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.errors import ConfigError, VectorError, VectorFileError
from steerlens.core.fileio import jsonable, read_safetensors, write_safetensors
from steerlens.core.hooks import n_layers
from steerlens.steering.hookpoints import (
    PositionalHook,
    Positions,
    check_multiplier,
    check_multipliers,
    check_positions,
    steer_with,
)
from steerlens.steering.vector import SteeringVector

FORMAT = "steerlens-intervention"


def _direction(d: Any, what: str) -> Tensor:
    if isinstance(d, SteeringVector):
        if len(d.vectors) != 1:
            raise ConfigError(f"{what}: a SteeringVector with one hook gives a direction, got {d}")
        d = next(iter(d.vectors.values()))
    if not isinstance(d, Tensor) or d.ndim != 1 or not d.is_floating_point():
        raise ConfigError(f"{what}: the direction must be a 1-D float tensor, got {d!r}")
    if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
        raise ConfigError(f"{what}: the direction must be finite and non-zero")
    return d


@dataclass(frozen=True)
class Add:
    """``h + m * vector`` (``m``: the row's multiplier).

    Examples:
        >>> Add(torch.tensor([1.0, 0.0]))(torch.zeros(2), torch.tensor(2.0))
        tensor([2., 0.])
    """

    vector: Float[Tensor, " d_model"]

    def __post_init__(self) -> None:
        v = self.vector
        if not isinstance(v, Tensor) or v.ndim != 1 or not bool(torch.isfinite(v).all()):
            raise ConfigError("Add: the vector must be a finite 1-D tensor")

    def __call__(self, h: Tensor, m: Tensor) -> Tensor:
        return h + m * self.vector.to(h)


@dataclass(frozen=True)
class Ablate:
    """``h - (h . r) r`` with ``r = direction / |direction|``: nothing of ``h`` stays along r.

    Examples:
        >>> Ablate(torch.tensor([2.0, 0.0]))(torch.tensor([3.0, 1.0]), torch.tensor(1.0))
        tensor([0., 1.])
    """

    direction: Float[Tensor, " d_model"]

    def __post_init__(self) -> None:
        _direction(self.direction, "Ablate")

    def __call__(self, h: Tensor, m: Tensor) -> Tensor:
        r = self.direction.to(h)
        r = r / r.norm()
        return h - (h @ r)[..., None] * r


@dataclass(frozen=True)
class Cap:
    """``h + (clamp(h . r, min, max) - h . r) r``: the component along the unit direction r
    held inside ``[min, max]`` (either bound may be None).

    Examples:
        >>> Cap(torch.tensor([1.0, 0.0]), min=-1.0, max=1.0)(torch.tensor([3.0, 5.0]), None)
        tensor([1., 5.])
    """

    direction: Float[Tensor, " d_model"]
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        _direction(self.direction, "Cap")
        for name in ("min", "max"):
            b = getattr(self, name)
            if b is not None and not math.isfinite(float(b)):
                raise ConfigError(f"Cap: {name} must be finite or None, got {b!r}")
        if self.min is None and self.max is None:
            raise ConfigError("Cap needs min=, max= or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"Cap: min {self.min} is above max {self.max}")

    def __call__(self, h: Tensor, m: Tensor) -> Tensor:
        return clamp_along(h, self.direction.to(h), self.min, self.max)


def clamp_along(
    h: Float[Tensor, "... d_model"],
    direction: Float[Tensor, " d_model"],
    min: float | None = None,
    max: float | None = None,
) -> Float[Tensor, "... d_model"]:
    """``h + (clamp(h . u, min, max) - h . u) u`` with ``u = direction / |direction|``,
    computed as ``h + (clamp(h . d, min |d|, max |d|) - h . d) / |d|^2 d`` so that a zero
    direction changes nothing and gradients reach ``direction`` (RePS trains through it).

    Examples:
        >>> clamp_along(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0]), max=1.0)
        tensor([1., 1.])
    """
    dd = direction @ direction
    norm = dd.clamp_min(1e-30).sqrt()  # clamped: no infinite gradient at a zero direction
    p = h @ direction
    # a zero bound stays an exact 0 (RePS's nulling, with a zero-initialised vector)
    lo = None if min is None else (torch.zeros_like(norm) if min == 0 else min * norm)
    hi = None if max is None else (torch.zeros_like(norm) if max == 0 else max * norm)
    if lo is None:
        clamped = p.clamp(max=hi) if hi is not None else p
    elif hi is None:
        clamped = p.clamp(min=lo)
    else:
        clamped = torch.minimum(torch.maximum(p, lo), hi)
    coef = (clamped - p) / dd.clamp_min(1e-12)
    return h + coef.unsqueeze(-1) * direction


Op = Add | Ablate | Cap
_KINDS: dict[str, type] = {"add": Add, "ablate": Ablate, "cap": Cap}


def _kind(op: Op) -> str:
    return next(k for k, t in _KINDS.items() if isinstance(op, t))


class OpHook(PositionalHook):
    """Runs a list of operations at one hook point on the selected positions of the selected
    rows; other positions and rows are returned unchanged (bit for bit).

    ``gate`` (optional) is an object with a ``rows`` attribute: a bool tensor, one entry per
    batch row, set during the forward (what :class:`steerlens.steering.conditional.Conditional`
    uses).
    """

    def __init__(
        self,
        ops: Sequence[Op],
        positions: Positions,
        multiplier: float | Sequence[float] = 1.0,
        gate: Any = None,
    ) -> None:
        super().__init__(positions)
        self.ops = list(ops)
        self.gate = gate
        if isinstance(multiplier, (int, float)):
            self.scale: Tensor | None = None
            self.multiplier = check_multiplier(multiplier)
        else:
            self.scale = torch.tensor(check_multipliers(multiplier), dtype=torch.float32)
            self.multiplier = 1.0

    def change(self, act: Tensor, mask: Tensor | None, hook: Any) -> Tensor:
        batch = act.shape[0]
        if self.scale is not None and self.scale.shape[0] != batch:
            raise VectorError(
                f"hook {getattr(hook, 'name', '?')!r}: set for {self.scale.shape[0]} batch rows "
                f"(one multiplier per row), got a batch of {batch}"
            )
        m = (
            self.scale.to(act.device, act.dtype)[:, None, None]
            if self.scale is not None
            else torch.tensor(self.multiplier, dtype=act.dtype, device=act.device)
        )
        new = act
        for op in self.ops:
            new = op(new, m)
        keep = torch.ones(act.shape[:-1], dtype=torch.bool, device=act.device)
        if mask is not None:
            keep = keep & mask.to(act.device)
        if self.scale is not None:
            keep = keep & (self.scale != 0).to(act.device)[:, None]
        elif self.multiplier == 0:
            return act
        if self.gate is not None:
            keep = keep & self.gate.rows.to(act.device)[:, None]
        return torch.where(keep[..., None], new, act)


@dataclass
class Intervention:
    """Operations at hook points, applied in order; see the module docstring.

    Args:
        ops: ``[(hook_name, Add | Ablate | Cap), ...]``.
        metadata: JSON-friendly information, saved with the intervention.

    Examples:
        >>> r = torch.tensor([1.0, 0.0])
        >>> both = Intervention([("blocks.0.hook_resid_post", Ablate(r))]) + Intervention(
        ...     [("blocks.0.hook_resid_post", Add(r))])
        >>> [type(op).__name__ for _, op in both.ops]     # ablate, then add
        ['Ablate', 'Add']
    """

    ops: list[tuple[str, Op]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ops:
            raise ConfigError("an Intervention needs at least one (hook_name, operation)")
        widths = set()
        for i, item in enumerate(self.ops):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ConfigError(f"ops[{i}] must be (hook_name, operation), got {item!r}")
            if not isinstance(item[1], (Add, Ablate, Cap)):
                raise ConfigError(f"ops[{i}]: unknown operation {type(item[1]).__name__}")
            widths.add(_tensor(item[1]).shape[0])
        if len(widths) > 1:
            raise VectorError(f"an Intervention's tensors must share one width, got {widths}")
        self.ops = list(self.ops)
        self.metadata = dict(self.metadata or {})

    @classmethod
    def from_vector(cls, vector: SteeringVector) -> Intervention:
        """The vector's addition as an intervention."""
        return cls([(k, Add(v)) for k, v in vector.vectors.items()], dict(vector.metadata))

    @property
    def d_model(self) -> int:
        return int(_tensor(self.ops[0][1]).shape[0])

    @property
    def hook_names(self) -> list[str]:
        """Hook names, in the order of their first operation."""
        return list(dict.fromkeys(name for name, _ in self.ops))

    def __add__(self, other: Intervention | SteeringVector) -> Intervention:
        """Both, ``self``'s operations first at any hook they share."""
        if isinstance(other, SteeringVector):
            other = Intervention.from_vector(other)
        if not isinstance(other, Intervention):
            return NotImplemented
        return Intervention([*self.ops, *other.ops], {"expression": "composition"})

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {_kind(op)}" for n, op in self.ops[:4])
        more = f", ... ({len(self.ops)} in all)" if len(self.ops) > 4 else ""
        return f"Intervention({parts}{more})"

    def check_model(self, model: Any) -> None:
        """Raise if a hook is missing or the width differs (as for a vector)."""
        probe = SteeringVector({n: torch.zeros(self.d_model) for n in self.hook_names})
        probe.check_model(model)

    def fwd_hooks(
        self,
        multiplier: float | Sequence[float] = 1.0,
        positions: Positions = "all",
        gate: Any = None,
    ) -> list[tuple[str, OpHook]]:
        """One :class:`OpHook` per hook name, each running that hook's operations in order."""
        pos = check_positions(positions)
        return [
            (name, OpHook([op for n, op in self.ops if n == name], pos, multiplier, gate))
            for name in self.hook_names
        ]

    def apply(
        self, model: Any, multiplier: float | Sequence[float] = 1.0, positions: Positions = "all"
    ) -> contextlib.AbstractContextManager[Any]:
        """Context manager: intervene inside the ``with`` block; hooks are removed on exit,
        also when the body raises. ``multiplier`` scales :class:`Add` operations (one per batch
        row if a list; 0 leaves a row untouched)."""
        self.check_model(model)
        return steer_with(model, self.fwd_hooks(multiplier, positions))

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a safetensors file (operations in its header), atomically; bit-exact."""
        tensors, spec = {}, []
        for i, (name, op) in enumerate(self.ops):
            tensors[f"op{i}"] = _tensor(op)
            entry: dict[str, Any] = {"hook": name, "kind": _kind(op)}
            if isinstance(op, Cap):
                entry.update(min=op.min, max=op.max)
            spec.append(entry)
        header = {
            "steerlens_format": FORMAT,
            "ops": json.dumps(spec),
            "steerlens_metadata": json.dumps(jsonable(self.metadata)),
        }
        return write_safetensors(path, tensors, header, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Intervention:
        """Read a file written by :meth:`save`. Nothing is unpickled."""
        tensors, header = read_safetensors(path, VectorFileError, "a valid safetensors file")
        if header.get("steerlens_format") != FORMAT:
            raise VectorFileError(f"{path}: not a steerlens intervention file")
        try:
            spec = json.loads(header["ops"])
            meta = json.loads(header.get("steerlens_metadata", "{}"))
        except (KeyError, json.JSONDecodeError) as e:
            raise VectorFileError(f"{path}: the header's operations are unreadable ({e})") from e
        ops: list[tuple[str, Op]] = []
        for i, entry in enumerate(spec):
            kind, t = entry.get("kind"), tensors.get(f"op{i}")
            if kind not in _KINDS or t is None:
                raise VectorFileError(f"{path}: operation {i} is malformed ({entry!r})")
            try:
                if kind == "cap":
                    op: Op = Cap(t, min=entry.get("min"), max=entry.get("max"))
                else:
                    op = _KINDS[kind](t)
            except ConfigError as e:
                raise VectorFileError(f"{path}: operation {i}: {e}") from e
            ops.append((str(entry.get("hook")), op))
        return cls(ops, meta)

    def to_vector(self) -> SteeringVector:
        """The equivalent :class:`SteeringVector`, when every operation is an addition."""
        bad = [f"{n} ({_kind(op)})" for n, op in self.ops if not isinstance(op, Add)]
        if bad:
            raise VectorError(
                "only additions are a steering vector; this intervention also has "
                + ", ".join(bad[:3])
            )
        out: dict[str, Tensor] = {}
        for n, op in self.ops:
            out[n] = out[n] + op.vector if n in out else op.vector.clone()  # type: ignore[union-attr]
        return SteeringVector(out, dict(self.metadata))

    def to_gguf(self, path: str | os.PathLike[str], **kwargs: Any) -> Path:
        """Export as a llama.cpp control vector; llama.cpp can only add a vector at block
        outputs, so ablations and caps are refused with a :class:`VectorError`."""
        kinds = sorted({_kind(op) for _, op in self.ops} - {"add"})
        if kinds:
            raise VectorError(
                f"llama.cpp control vectors can only add a vector at block outputs; this "
                f"intervention also does {', '.join(kinds)}, which cannot be exported to GGUF"
            )
        return self.to_vector().to_gguf(path, **kwargs)


def _tensor(op: Op) -> Tensor:
    return op.vector if isinstance(op, Add) else op.direction


def ablation(
    model: Any,
    vector: Tensor | SteeringVector,
    *,
    layers: Sequence[int] | None = None,
) -> Intervention:
    """Directional ablation at every layer, as Arditi et al. (2024) apply it: ``h - (h . r) r``
    at each block's input (``blocks.L.hook_resid_pre``) and at the outputs of its attention
    and MLP (``hook_attn_out``, ``hook_mlp_out``), every position (andyrdt/refusal_direction,
    ``get_all_direction_ablation_hooks``). The residual stream then carries nothing along r.

    Examples:
        >>> import torch, steerlens as sl
        >>> m = sl.tiny_model(n_layers=3, d_model=32)
        >>> [n for n, _ in ablation(m, torch.ones(32), layers=[1]).ops]
        ['blocks.1.hook_resid_pre', 'blocks.1.hook_attn_out', 'blocks.1.hook_mlp_out']
    """
    r = _direction(vector, "ablation")
    idx = range(n_layers(model)) if layers is None else layers
    ops: list[tuple[str, Op]] = []
    for layer in idx:
        for site in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
            ops.append((f"blocks.{layer}.{site}", Ablate(r)))
    return Intervention(ops, {"method": "ablation"})


__all__ = ["Ablate", "Add", "Cap", "Intervention", "OpHook", "ablation"]
