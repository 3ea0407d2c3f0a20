"""Operating points by search: the largest multiplier whose answers stay inside a budget.

A grid of multipliers puts the operating point on the grid (nothing between 0.5 and 1; the top
of the grid when every multiplier passes). :func:`search_multiplier` instead brackets the
budget's edge by doubling or halving from a start, then bisects to a stated relative
resolution; it evaluates the budget only at the multipliers it visits (each one is a set of
answers to generate), and reports them.

Examples:
    >>> found = search_multiplier(lambda m: m <= 0.62, resolution=0.05)
    >>> round(found.multiplier, 3), 0.62 * 0.95 <= found.multiplier <= 0.62
    (0.609, True)
    >>> [m for m, _ in found.visited][:3]
    [1.0, 0.5, 0.75]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steerlens.core.errors import ConfigError


@dataclass(frozen=True)
class Search:
    """A search's result.

    Attributes:
        multiplier: the largest multiplier found inside the budget (None: none down to the
            smallest allowed).
        visited: every ``(multiplier, inside)`` evaluated, in order.
        resolution: the relative resolution reached: the edge lies in
            ``[multiplier, multiplier * (1 + resolution)]``.
    """

    multiplier: float | None
    visited: tuple[tuple[float, bool], ...]
    resolution: float


def search_multiplier(
    inside: Callable[[float], bool],
    *,
    start: float = 1.0,
    resolution: float = 0.05,
    smallest: float = 1 / 64,
    largest: float = 64.0,
) -> Search:
    """The largest ``m`` in ``[smallest, largest]`` with ``inside(m)``, assuming ``inside`` is
    true below an edge and false above it, to a relative ``resolution`` (0.05: within 5% of
    ``m``).

    Args:
        inside: whether the answers at ``+m`` and ``-m`` are inside the budget.
        start: the first multiplier tried.
    """
    if not 0 < resolution < 1:
        raise ConfigError(f"resolution must be in (0, 1), got {resolution}")
    if not 0 < smallest <= start <= largest:
        raise ConfigError("need 0 < smallest <= start <= largest")
    seen: dict[float, bool] = {}

    def test(m: float) -> bool:
        if m not in seen:
            seen[m] = bool(inside(m))
        return seen[m]

    def done(best: float | None) -> Search:
        return Search(best, tuple(seen.items()), resolution)

    lo: float | None = None
    hi: float | None = None
    m = start
    if test(m):
        lo = m
        while hi is None:  # double until out of budget
            step = min(lo * 2, largest)
            if step == lo:  # at the largest allowed and still inside
                return done(lo)
            if test(step):
                lo = step
            else:
                hi = step
    else:
        hi = m
        while lo is None:  # halve until inside
            if hi / 2 < smallest:
                return done(None)
            if test(hi / 2):
                lo = hi / 2
            else:
                hi /= 2
    while hi - lo > resolution * lo:
        mid = (lo + hi) / 2
        if test(mid):
            lo = mid
        else:
            hi = mid
    return done(lo)


__all__ = ["Search", "search_multiplier"]
