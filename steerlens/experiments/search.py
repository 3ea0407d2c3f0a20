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

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlens.core.errors import ConfigError
from steerlens.core.intervals import SEED, question_ranges
from steerlens.evaluation.scoring import perplexity
from steerlens.experiments.cache import (
    cell_folder,
    file_hash,
    hash_parts,
    judged,
    made_by_kept_vector,
    metric_file,
    write_json,
)
from steerlens.experiments.verdicts import CELL, CoherenceBudget, split_questions
from steerlens.experiments.vocabulary import Behaviour, Cell, Method, Settings
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.steering.vector import SteeringVector


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


@dataclass(frozen=True)
class SearchedPoints:
    """Cross-fitted operating points found by search (:func:`search_points`).

    Attributes:
        ranges: per question, the range at the multiplier searched on the other half (NaN where
            that half has no point).
        multipliers: ``(found on half 1, found on half 2)``; None: no point.
        searches: the two :class:`Search` results (every multiplier visited).
        why_none: per half, why it has no point (``""`` where it has one).
    """

    ranges: np.ndarray
    multipliers: tuple[float | None, float | None]
    searches: tuple[Search, Search]
    why_none: tuple[str, str]


def search_points(
    answers: Callable[[float], pd.DataFrame],
    n: int,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    split_seed: int = SEED,
    resolution: float = 0.05,
    start: float = 1.0,
    smallest: float = 1 / 64,
    largest: float = 64.0,
) -> SearchedPoints:
    """Each half's operating point by :func:`search_multiplier`: the largest ``m`` whose
    answers at ``+m`` and ``-m`` to that half's questions stay within ``budget`` of the
    unsteered ones, to ``resolution``; each question's range is then read at the point found
    on the other half (cross-fitted). A point whose range on its own half is not positive is
    dropped ("does not steer the intended way").

    Args:
        answers: ``m -> answers`` at ``+m`` and ``-m`` (``m = 0``: the unsteered answers), one
            row per answer with ``item`` (0..n-1), ``multiplier``, ``behaviour``, ``text``,
            ``nll``, ``tokens``; called once per multiplier visited
            (:func:`cached_answers` generates, judges and caches them).
        n: the number of questions.
    """
    seen: dict[float, pd.DataFrame] = {}

    def at(m: float) -> pd.DataFrame:
        if m not in seen:
            seen[m] = answers(m)
        return seen[m]

    halves = split_questions(n, split_seed)
    out = np.full(n, np.nan)
    found: list[float | None] = []
    searches, why = [], []
    for own, other in (halves, halves[::-1]):
        base = at(0.0)
        base = base[base["item"].isin(own)]

        def inside(m: float, own: np.ndarray = own, base: pd.DataFrame = base) -> bool:
            a = at(m)
            a = a[a["item"].isin(own)]
            return all(budget.allows_answers(a[a["multiplier"] == s * m], base) for s in (1, -1))

        search = search_multiplier(inside, start=start, resolution=resolution,
                                   smallest=smallest, largest=largest)  # fmt: skip
        m = search.multiplier
        reason = "nothing within budget" if m is None else ""
        if m is not None:
            a = at(m)
            if not float(question_ranges(a[a["item"].isin(own)], m).mean()) > 0:
                m, reason = None, "does not steer the intended way"
        if m is not None:
            a = at(m)
            r = question_ranges(a[a["item"].isin(other)], m)
            out[r.index.to_numpy(dtype=int)] = r.to_numpy()
        found.append(m)
        searches.append(search)
        why.append(reason)
    return SearchedPoints(out, (found[0], found[1]), (searches[0], searches[1]), (why[0], why[1]))


def cached_answers(
    model: Any,
    vector: Any,
    questions: Sequence[str],
    judge: Any,
    *,
    folder: str | Path,
    max_new_tokens: int = 48,
    positions: Any = "all",
) -> Callable[[float], pd.DataFrame]:
    """``m -> answers`` for :func:`search_points`: greedy answers to ``questions`` at ``+m`` and
    ``-m`` (or unsteered at 0), generated once per multiplier and cached in ``folder`` as
    ``searched-<hash>-m<m>.json`` with the hash of the vector they came from (a file from
    another vector is generated again), judged through the engine's judge-score cache."""
    from steerlens.evaluation.openended import open_ended_score

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    key = hash_parts(list(questions), max_new_tokens, positions)
    vector_path = root / "vector.safetensors"
    if vector is not None and not vector_path.exists():
        vector.save(vector_path)
    made_by = file_hash(vector_path) if vector is not None else None

    def at(m: float) -> pd.DataFrame:
        path = root / f"searched-{key}-m{m:.6g}.json"
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is None or saved.get("vector") != made_by:
            mults = (0.0,) if m == 0 else (-m, m)
            df = open_ended_score(model, vector, list(questions), None, multipliers=mults,
                                  per_item=True, max_new_tokens=max_new_tokens,
                                  positions=positions, progress=False)  # fmt: skip
            df["item"] = np.arange(len(df)) % len(questions)  # rows nest multiplier, question
            cols = ["item", "multiplier", "prompt", "text", "nll", "tokens"]
            saved = {"vector": made_by, "rows": df[cols].to_dict("records")}
            write_json(path, saved)
        df = pd.DataFrame.from_records(saved["rows"])
        df["behaviour"] = judged(judge, df, path) if judge is not None else math.nan
        return df

    return at


def _grid_first(on_grid: Mapping[float, pd.DataFrame], fresh: Callable[[float], pd.DataFrame],
                ) -> Callable[[float], pd.DataFrame]:  # fmt: skip
    return lambda m: on_grid[m] if m in on_grid else fresh(m)


def search_cells(
    model: Any,
    behaviours: Mapping[str, Behaviour],
    methods: Mapping[str, Mapping[str, Method]],
    answers: pd.DataFrame,
    *,
    root: Path,
    config: BiPOConfig | None,
    settings: Mapping[str, Settings],
    budget: CoherenceBudget,
    split_seed: int = SEED,
    resolution: float = 0.05,
    largest: float = 64.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The engine's cells searched (:func:`search_points`): for each cell of ``answers`` (the
    engine's open-ended items) whose answers were made by the vector its folder keeps, each
    half's budget edge is searched, answers at the multipliers the search visits are generated
    once and cached in the cell's folder; a visited multiplier already on the grid is read
    from the grid. A cell whose answers record no kept vector (made before vectors were kept,
    or by prompting) is not searched, and the table says why. No search goes past ``largest``
    (:func:`~steerlens.experiments.compare.compare_methods` passes the grid's largest multiplier).

    Returns:
        ``(rows, table)``: the answers at visited multipliers off the grid, in the engine's
        columns (to choose operating points among grid and searched multipliers alike), and per
        cell the multiplier found on each half, the multipliers visited and why a half has none.
    """
    extra, table = [], []
    for key, cell_rows in answers.groupby(CELL, sort=False):
        dataset, name, layer, seed = key  # type: ignore[misc]
        b, m = behaviours[dataset], methods[dataset][name]
        row: dict[str, Any] = {"dataset": dataset, "method": name, "layer": layer}
        folder = cell_folder(root, Cell(dataset, name, int(layer), int(seed)), b, m,
                             methods[dataset], config)  # fmt: skip
        vec = folder / "vector.safetensors"
        made = metric_file(folder, "open_ended", b, m, settings[dataset])
        if not m.makes_vector or not made_by_kept_vector(made, vec):
            why = "prompting has no multiplier" if not m.makes_vector else "no kept vector"
            table.append({**row, "m_half1": None, "m_half2": None, "visited": 0, "why": why})
            continue
        on_grid = {float(x): g for x, g in cell_rows.groupby(cell_rows["multiplier"].abs())}
        fresh = cached_answers(model, SteeringVector.load(vec), b.questions, b.judge,
                               folder=folder, max_new_tokens=settings[dataset].max_new_tokens,
                               positions=settings[dataset].positions)  # fmt: skip
        found = search_points(_grid_first(on_grid, fresh), len(b.questions), budget=budget,
                              split_seed=split_seed, resolution=resolution,
                              largest=largest)  # fmt: skip
        visited = sorted({x for s in found.searches for x, _ in s.visited} - set(on_grid))
        first = cell_rows.iloc[0]
        for x in visited:
            df = fresh(x).assign(perplexity=lambda d: perplexity(d["nll"], d["tokens"]))
            extra.append(df.assign(**{c: first[c] for c in cell_rows.columns if c not in df}))
        why = "; ".join(w for w in found.why_none if w)
        m1, m2 = found.multipliers
        table.append({**row, "m_half1": m1, "m_half2": m2, "visited": len(visited), "why": why})
    rows = pd.concat(extra, ignore_index=True) if extra else answers.iloc[:0]
    return rows[list(answers.columns)], pd.DataFrame.from_records(table)


__all__ = [
    "Search",
    "SearchedPoints",
    "cached_answers",
    "search_cells",
    "search_multiplier",
    "search_points",
]
