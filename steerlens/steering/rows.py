"""Per-row steering: a different vector and multiplier for each row of one batch.

A research grid (vectors x multipliers x prompts) is many small steered runs; on a GPU a batch
of 80 rows costs what a batch of 16 costs, so steerlens runs the grid as one batch in which row
``b`` is steered by ``multipliers[b] * vectors[b]``. As in EasySteer (vLLM), each distinct
vector is a slot in a stacked table whose slot 0 is a zero vector, and a row-to-slot map picks
each row's slot; a row with no vector (``None``) or multiplier 0 adds exactly zero, so it is
bit-identical to the unsteered model. Positions (``"all"``, ``"after_prompt"``), padding on
either side and the KV cache behave per row as with one vector.

Examples:
    >>> import torch, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2, d_model=32)
    >>> a = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(32)})
    >>> b = sl.SteeringVector({"blocks.0.hook_resid_post": -torch.ones(32)})
    >>> x = torch.tensor([[1, 2, 3]] * 3)
    >>> grid = RowSteering([a, b, None], multipliers=[2.0, 1.0, 0.0])
    >>> with grid.apply(model):
    ...     out = model(x)
    >>> with a.apply(model, 2.0):
    ...     ref = model(x[:1])
    >>> torch.allclose(out[0], ref[0], atol=1e-5), torch.equal(out[2], model(x)[2])
    (True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerlens.core.errors import ConfigError, VectorError
from steerlens.steering.hookpoints import (
    Positions,
    SteerHook,
    check_multipliers,
    check_positions,
    steer_with,
)
from steerlens.steering.vector import SteeringVector


@dataclass(frozen=True)
class RowSteering:
    """Row ``b`` of a batch steered by ``multipliers[b] * vectors[b]``.

    Args:
        vectors: one entry per batch row: a :class:`SteeringVector` or ``None`` (unsteered).
            The same vector object may serve many rows; vectors may use different hooks (a
            vector lacking a hook adds nothing there).
        multipliers: one number per row (default: 1 for every row).

    Examples:
        >>> import torch
        >>> v = SteeringVector({"blocks.0.hook_resid_post": torch.ones(4)})
        >>> RowSteering([v, v, None], multipliers=[1, -1, 0]).rows
        3
    """

    vectors: Sequence[SteeringVector | None]
    multipliers: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vectors, SteeringVector) or not isinstance(self.vectors, Sequence):
            raise ConfigError("RowSteering needs one vector (or None) per batch row, as a list")
        if not self.vectors:
            raise ConfigError("RowSteering needs at least one row")
        for i, v in enumerate(self.vectors):
            if v is not None and not isinstance(v, SteeringVector):
                raise ConfigError(
                    f"vectors[{i}]: expected a SteeringVector or None, got {type(v).__name__}"
                )
        mults = [1.0] * len(self.vectors) if self.multipliers is None else self.multipliers
        mults = check_multipliers(mults)
        if len(mults) != len(self.vectors):
            raise ConfigError(
                f"RowSteering: {len(self.vectors)} vectors but {len(mults)} multipliers "
                "(one of each per batch row)"
            )
        widths = {v.d_model for v in self.vectors if v is not None}
        if len(widths) > 1:
            raise VectorError(f"RowSteering: the vectors have different d_model {sorted(widths)}")
        object.__setattr__(self, "multipliers", mults)

    @property
    def rows(self) -> int:
        """Number of batch rows this steering is set for."""
        return len(self.vectors)

    def slots(self) -> tuple[list[SteeringVector], list[int]]:
        """The distinct vectors (by identity) and each row's slot among them (-1: none).

        Examples:
            >>> import torch
            >>> v = SteeringVector({"h": torch.ones(2)})
            >>> RowSteering([v, None, v]).slots()[1]
            [0, -1, 0]
        """
        distinct: list[SteeringVector] = []
        seen: dict[int, int] = {}
        index = []
        for v in self.vectors:
            if v is None:
                index.append(-1)
                continue
            if id(v) not in seen:
                seen[id(v)] = len(distinct)
                distinct.append(v)
            index.append(seen[id(v)])
        return distinct, index

    @property
    def hook_names(self) -> list[str]:
        """The hook names any row's vector uses, in order of first use."""
        return list(dict.fromkeys(h for v in self.vectors if v is not None for h in v.hook_names))

    def fwd_hooks(self, positions: Positions = "all") -> list[tuple[str, SteerHook]]:
        """One hook per hook name used by any row, each holding a stacked ``[k, d_model]``
        table and the row-to-slot map."""
        pos = check_positions(positions)
        distinct, index = self.slots()
        names: list[str] = []
        for v in distinct:
            names += [n for n in v.vectors if n not in names]
        hooks = []
        for name in names:
            ref = next(v.vectors[name] for v in distinct if name in v.vectors)
            table = torch.stack(
                [v.vectors.get(name, torch.zeros_like(ref)).to(ref) for v in distinct]
            )
            mults = list(self.multipliers or [])
            hooks.append((name, SteerHook(table, mults, pos, index=index)))
        return hooks

    def check_model(self, model: Any) -> None:
        """Raise if any row's vector does not fit ``model``."""
        for v in self.slots()[0]:
            v.check_model(model)

    def apply(
        self, model: Any, positions: Positions = "all", *, track: Any = None
    ) -> contextlib.AbstractContextManager[Any]:
        """Context manager: steer each row of every batch in the block by its own vector and
        multiplier; hooks are removed on exit, also when the body raises. Every batch run
        inside must have :attr:`rows` rows. ``track``: see
        :func:`steerlens.steering.hookpoints.steer_with`."""
        self.check_model(model)
        hooks = self.fwd_hooks(positions)
        return steer_with(model, hooks, track=track) if hooks else contextlib.nullcontext(model)


__all__ = ["RowSteering"]
