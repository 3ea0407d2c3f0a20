"""Operating points and verdicts from judged answers: the coherence budget, the split of
questions into a choosing and a reporting half, each cell's operating point, paired
comparisons at those points, and the layer sweep's choice (the protocol is described in
:mod:`steerlens.experiments.compare`).

Examples:
    >>> import numpy as np, pandas as pd
    >>> items = pd.DataFrame({"dataset": "d", "method": "x", "layer": 1, "seed": 0,
    ...     "metric": "open_ended", "multiplier": np.repeat([-1.0, 0.0, 1.0], 4),
    ...     "item": [0, 1, 2, 3] * 3, "prompt": list("abcd") * 3, "text": ["w1 w2 w3"] * 12,
    ...     "behaviour": [0.2] * 4 + [0.5] * 4 + [0.8] * 4, "nll": 3.0, "tokens": 3})
    >>> op = operating_points(items)
    >>> op[["multiplier", "range"]].round(2).values.tolist()
    [[1.0, 0.6]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from steerlens.core.intervals import (
    SEED,
    paired_difference,
    question_ranges,
)
from steerlens.evaluation.openended import coherence, repetition

CELL = ["dataset", "method", "layer", "seed"]


@dataclass(frozen=True)
class CoherenceBudget:
    """How much a steered answer may lose in coherence, relative to the unsteered answers to
    the same questions.

    Attributes:
        perplexity: the answers' perplexity under the unsteered model may be at most this
            times the unsteered answers' (1.25: within 25%). Perplexity catches broken grammar
            and off-distribution text. On SmolLM2 (``docs/results.md``) the prompting
            baseline, which changes what is said but not how fluently, stays at 0.96-1.01x on
            all seven behaviours, while CAA at +-2 on power-seeking reaches 1.52-1.56x and
            full-data BiPO at +-2 1.4-3.8x: 25% sits well between the two.
        distinct2: the share of distinct word bigrams over a multiplier's answers may fall to
            this fraction of the unsteered answers' and no lower (0.8). A repeating answer has
            a *low* perplexity and passes the first test; repetition is what distinct-2 sees
            (Li et al., 2016). The prompting baseline's answers keep 0.74-0.98x of it, so 0.8
            sits at the low end of what rewording alone does.
        repetition: the answers' mean per-answer repetition may rise at most this much above
            the unsteered answers' (None: not tested).
        contiguous: a multiplier counts only when every smaller multiplier of the cell is
            within the budget too, so the budget holds *up to* the point: a measure that broken
            answers slip past at a larger multiplier (text that no longer loops but is no longer
            about the question) does not reopen the range above a multiplier that broke it.
            This is the edge a search (:mod:`steerlens.experiments.search`) brackets and
            bisects. False: any multiplier within the budget counts.

    Examples:
        >>> CoherenceBudget().allows(ppl=3.0, ppl0=2.5, d2=0.85, d20=0.9)
        True
        >>> CoherenceBudget().usable([True, False, True]), CoherenceBudget(
        ...     contiguous=False).usable([True, False, True])
        ([True, False, False], [True, False, True])
    """

    perplexity: float = 1.25
    distinct2: float = 0.8
    repetition: float | None = field(default=None, kw_only=True)
    contiguous: bool = field(default=True, kw_only=True)

    def usable(self, inside: Sequence[bool]) -> list[bool]:
        """Which multipliers (``inside``: each one's budget test, smallest multiplier first)
        may be an operating point: all those inside, or with ``contiguous`` those before the
        first that is not."""
        out, broken = [], False
        for ok in inside:
            broken = broken or (self.contiguous and not ok)
            out.append(bool(ok) and not broken)
        return out

    def allows(self, *, ppl: float, ppl0: float, d2: float, d20: float, rep: float = 0.0,
               rep0: float = 0.0) -> bool:  # fmt: skip
        """Whether answers with perplexity ``ppl``, distinct-2 ``d2`` and mean repetition
        ``rep`` are within budget of unsteered answers with ``ppl0``, ``d20`` and ``rep0``."""
        if not all(math.isfinite(x) for x in (ppl, ppl0, d2, d20, rep, rep0)):
            return False
        loops = self.repetition is not None and rep > rep0 + self.repetition
        return ppl <= self.perplexity * ppl0 and d2 >= self.distinct2 * d20 and not loops

    def allows_answers(self, answers: pd.DataFrame, unsteered: pd.DataFrame) -> bool:
        """Whether a group of answers (``text``, ``nll``, ``tokens`` columns) is within budget
        of the unsteered answers to the same questions.

        Examples:
            >>> import pandas as pd
            >>> calm = pd.DataFrame({"text": ["The cat sat on the mat today."], "nll": 6.0,
            ...                      "tokens": 6})
            >>> loop = calm.assign(text=["I would say that I would say that I would say"])
            >>> budget = CoherenceBudget(repetition=0.1)
            >>> budget.allows_answers(calm, calm), budget.allows_answers(loop, calm)
            (True, False)
        """
        (p, d), (p0, d0) = coherence(answers), coherence(unsteered)
        return self.allows(ppl=p, ppl0=p0, d2=d, d20=d0, rep=mean_repetition(answers),
                           rep0=mean_repetition(unsteered))  # fmt: skip


def mean_repetition(answers: pd.DataFrame) -> float:
    """The mean per-answer :func:`~steerlens.evaluation.openended.repetition` of a group of
    answers (``text`` column); NaN for no answers."""
    texts = answers["text"].astype(str).tolist()
    return float(np.mean([repetition(t) for t in texts])) if texts else math.nan


def split_questions(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Question indices in two halves (choose, report), by a seeded permutation.

    Examples:
        >>> a, b = split_questions(5)
        >>> len(a), len(b), sorted(np.r_[a, b].tolist())
        (2, 3, [0, 1, 2, 3, 4])
    """
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def operating_points(
    items: pd.DataFrame,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    split_seed: int = SEED,
    seed: int = SEED,
) -> pd.DataFrame:
    """Each cell's coherence-matched operating point (see the module docstring).

    Args:
        items: open-ended per-answer rows (``sweep_grid(..., per_item=True)``): ``item``,
            ``multiplier``, ``behaviour``, ``nll``, ``tokens``, ``text``.
        split_seed: seeds the split of questions into (choose, report) halves.
        seed: seeds the bootstrap.

    Returns:
        One row per cell: ``multiplier`` (NaN when no multiplier is within budget),
        ``choose_range`` (first half), ``range`` with ``low`` / ``high`` (second half),
        ``ppl_ratio`` and ``distinct2_ratio`` (second half, the worse of +m and -m),
        ``candidates`` (multipliers within budget on the first half), ``n_report``.
    """
    oe = items[items["metric"] == "open_ended"] if "metric" in items else items
    rows = []
    for key, grp in oe.groupby(CELL, sort=False):
        n = int(grp["item"].max()) + 1
        choose, report = split_questions(n, split_seed)
        halves = {"choose": grp[grp["item"].isin(choose)], "report": grp[grp["item"].isin(report)]}
        mults = sorted(float(m) for m in grp["multiplier"].unique() if m > 0 and -m in
                       set(grp["multiplier"]))  # fmt: skip
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        a = halves["choose"]
        base = a[a["multiplier"] == 0]
        inside = [all(budget.allows_answers(a[a["multiplier"] == s * m], base) for s in (1, -1))
                  for m in mults]  # fmt: skip
        ok = [(float(question_ranges(a, m).mean()), m)
              for m, use in zip(mults, budget.usable(inside), strict=True) if use]  # fmt: skip
        if not np.isfinite(grp["behaviour"].to_numpy(dtype=float)).all():
            ok = []  # not judged (no judge): no operating point
        row["candidates"] = ",".join(f"{m:g}" for _, m in ok)
        if not ok:
            row.update(multiplier=math.nan, choose_range=math.nan, range=math.nan, low=math.nan,
                       high=math.nan, ppl_ratio=math.nan, distinct2_ratio=math.nan,
                       repetition=math.nan, repetition0=math.nan,
                       n_report=len(report))  # fmt: skip
            rows.append(row)
            continue
        best_range, m = max(ok, key=lambda t: (t[0], -t[1]))
        b = halves["report"]
        r = question_ranges(b, m)
        iv = paired_difference(r.to_numpy(), np.zeros(len(r)), seed=seed)
        p0, d0 = coherence(b[b["multiplier"] == 0])
        coh = [coherence(b[b["multiplier"] == s * m]) for s in (1, -1)]
        rep = max(mean_repetition(b[b["multiplier"] == s * m]) for s in (1, -1))
        row.update(multiplier=m, choose_range=best_range, range=iv.estimate, low=iv.low,
                   high=iv.high, ppl_ratio=max(p for p, _ in coh) / p0,
                   distinct2_ratio=min(d for _, d in coh) / d0, repetition=rep,
                   repetition0=mean_repetition(b[b["multiplier"] == 0]),
                   n_report=len(r))  # fmt: skip
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def cell_items(oe: pd.DataFrame, point: Mapping[str, Any]) -> pd.DataFrame:
    sel = np.ones(len(oe), bool)
    for k in CELL:
        sel &= (oe[k] == point[k]).to_numpy()
    return oe[sel]


def compare_points(
    items: pd.DataFrame,
    points: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    questions: str = "report",
    split_seed: int = SEED,
    seed: int = SEED,
    judged: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Method ``a`` minus method ``b``, each at its point in ``points`` (one row per dataset and
    method with a ``multiplier``), paired by question, with an interval and a verdict.

    Args:
        pairs: ``(a, b)`` method names.
        questions: ``"report"`` (the held-out half of :func:`split_questions`) or ``"all"``.
        judged: per dataset, whether its judge is good enough to rank (False: verdict
            ``"not judged"``).
    """
    oe = items[items["metric"] == "open_ended"] if "metric" in items else items
    rows = []
    for dataset in points["dataset"].unique():
        pts = points[points["dataset"] == dataset].set_index("method")
        for a, b in pairs:
            if a not in pts.index or b not in pts.index:
                continue
            row: dict[str, Any] = {"dataset": dataset, "a": a, "b": b,
                                   "m_a": pts.loc[a, "multiplier"],
                                   "m_b": pts.loc[b, "multiplier"]}  # fmt: skip
            if not (np.isfinite(row["m_a"]) and np.isfinite(row["m_b"])):
                rows.append({**row, "difference": math.nan, "low": math.nan, "high": math.nan,
                             "n": 0, "verdict": "no operating point"})  # fmt: skip
                continue
            ra, rb = (
                question_ranges(cell_items(oe, {**pts.loc[x].to_dict(), "dataset": dataset,
                                                 "method": x}), float(m))
                for x, m in ((a, row["m_a"]), (b, row["m_b"]))
            )  # fmt: skip
            both = pd.concat([ra.rename("a"), rb.rename("b")], axis=1, join="inner")
            if questions == "report":
                n = int(oe[oe["dataset"] == dataset]["item"].max()) + 1
                both = both[both.index.isin(split_questions(n, split_seed)[1])]
            if both.empty or not np.isfinite(both.to_numpy(dtype=float)).all():
                rows.append({**row, "difference": math.nan, "low": math.nan, "high": math.nan,
                             "n": len(both), "verdict": "not judged"})  # fmt: skip
                continue
            iv = paired_difference(both["a"].to_numpy(), both["b"].to_numpy(), seed=seed)
            verdict = iv.verdict if (judged or {}).get(dataset, True) else "not judged"
            rows.append({**row, "difference": iv.estimate, "low": iv.low, "high": iv.high,
                         "n": iv.n, "verdict": verdict})  # fmt: skip
    return pd.DataFrame.from_records(rows)


def choose_layers(margins: pd.DataFrame, *, multiplier: float = 1.0) -> pd.DataFrame:
    """Per dataset and method, the layer whose mean margin range (``+m`` minus ``-m``, mean
    over seeds) is largest, from ``sweep_grid(..., metric="margin")``'s summary.

    Examples:
        >>> df = pd.DataFrame({"dataset": "d", "method": "caa", "layer": [1, 1, 2, 2],
        ...                    "seed": 0, "multiplier": [-1.0, 1.0] * 2,
        ...                    "margin": [0.0, 1.0, 0.0, 3.0]})
        >>> best = choose_layers(df)
        >>> int(best["layer"].iloc[0]), float(best["margin_range"].iloc[0])
        (2, 3.0)
    """
    hi = margins[margins["multiplier"] == multiplier].set_index(CELL)["margin"]
    lo = margins[margins["multiplier"] == -multiplier].set_index(CELL)["margin"]
    r = (hi - lo).rename("margin_range").reset_index()
    r = r.groupby(["dataset", "method", "layer"], as_index=False)["margin_range"].mean()
    best = r.loc[r.groupby(["dataset", "method"])["margin_range"].idxmax()]
    return best.reset_index(drop=True)
