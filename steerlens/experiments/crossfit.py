"""Cross-fitted operating points: choose a multiplier on one half of the questions and report
on the other, then the other way round, so that every question is reported once by an
operating point chosen without it; the interval resamples the whole choose-and-report.

One split into a choosing and a reporting half wastes half the questions and makes the verdict
depend on the split (on the committed power-seeking cells, bipo-full minus caa is +0.06 on one
half and -0.17 on the other). Cross-fitting (the sample splitting of Chernozhukov et al., 2018,
"Double/debiased machine learning", sec. 3: estimate on each fold with what was tuned on the
others, then pool) uses both halves. The interval is a bootstrap of the whole procedure: each
resample draws questions with replacement, splits them at random, chooses on each half and
reports on the other, so it covers the choice of the operating point as well as the questions.

A method whose best in-budget range on the choosing half is not positive has no operating point
there ("does not steer the intended way"): it is not ranked as "worse".

Examples:
    >>> import numpy as np, pandas as pd
    >>> n = 8
    >>> items = pd.DataFrame({"item": np.tile(range(n), 3), "text": "a fine answer here",
    ...     "multiplier": np.repeat([-1.0, 0.0, 1.0], n), "nll": 3.0, "tokens": 3,
    ...     "behaviour": np.repeat([0.2, 0.5, 0.8], n)})
    >>> cell = CellAnswers.from_items(items)
    >>> fit = cell.cross_fit(np.arange(n) % 2 == 0)
    >>> fit.multipliers, round(float(fit.ranges.mean()), 2)
    ((1.0, 1.0), 0.6)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steerlens.core.errors import ConfigError
from steerlens.core.intervals import N_BOOT, SEED, Interval, bootstrap_mean, holm
from steerlens.evaluation.openended import repetition, word_ngrams
from steerlens.experiments.verdicts import CoherenceBudget, split_questions


@dataclass(frozen=True)
class CrossFit:
    """One split's cross-fitted result for one cell.

    Attributes:
        ranges: per question, the range (behaviour at ``+m`` minus ``-m``) at the multiplier
            chosen on the *other* half (NaN where that half had no operating point).
        multipliers: ``(chosen on the first half, chosen on the second half)``; None: none.
    """

    ranges: np.ndarray
    multipliers: tuple[float | None, float | None]


class CellAnswers:
    """One cell's judged answers as arrays over (signed multiplier, question): everything that
    choosing and reporting an operating point read, so the bootstrap needs no table work.

    Built by :meth:`from_items` from open-ended per-answer rows (``item``, ``multiplier``,
    ``behaviour``, ``nll``, ``tokens``, ``text``; one answer per question and multiplier).
    """

    def __init__(self, signed: Sequence[float], score: np.ndarray, nll: np.ndarray,
                 tokens: np.ndarray, rep: np.ndarray,
                 bigrams: list[list[np.ndarray]]) -> None:  # fmt: skip
        self.signed = [float(s) for s in signed]
        self.row = {s: i for i, s in enumerate(self.signed)}
        self.score, self.nll, self.tokens, self.rep, self.bigrams = score, nll, tokens, rep, bigrams
        self.n = score.shape[1]
        self.multipliers = sorted(m for m in self.signed if m > 0 and -m in self.row)
        if 0.0 not in self.row:
            raise ConfigError("a cell needs its unsteered answers (multiplier 0)")

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> CellAnswers:
        """From one cell's open-ended per-answer rows."""
        n = int(items["item"].max()) + 1
        signed = sorted(float(m) for m in items["multiplier"].unique())
        shape = (len(signed), n)
        score, nll, tokens, rep = (np.full(shape, np.nan) for _ in range(4))
        bigrams: list[list[np.ndarray]] = [[np.zeros(0, np.int64)] * n for _ in signed]
        vocab: dict[tuple[str, ...], int] = {}
        seen = np.zeros(shape, bool)
        index = {s: i for i, s in enumerate(signed)}
        for r in items.itertuples(index=False):
            i, q = index[float(r.multiplier)], int(r.item)
            if seen[i, q]:
                raise ConfigError(f"two answers for question {q} at multiplier {r.multiplier:g}")
            seen[i, q] = True
            score[i, q], nll[i, q], tokens[i, q] = r.behaviour, r.nll, r.tokens
            rep[i, q] = repetition(str(r.text))
            ids = [vocab.setdefault(g, len(vocab)) for g in word_ngrams(str(r.text), 2)]
            bigrams[i][q] = np.asarray(ids, dtype=np.int64)
        return cls(signed, score, nll, tokens, rep, bigrams)

    def _coherence(self, s: float, idx: np.ndarray) -> tuple[float, float, float]:
        i = self.row[s]
        tok = float(self.tokens[i, idx].sum())
        ppl = math.exp(float(self.nll[i, idx].sum()) / tok) if tok else math.nan
        grams = np.concatenate([self.bigrams[i][q] for q in idx]) if len(idx) else np.zeros(0)
        d2 = len(np.unique(grams)) / len(grams) if len(grams) else math.nan
        return ppl, d2, float(self.rep[i, idx].mean())

    def inside(self, m: float, idx: np.ndarray, budget: CoherenceBudget) -> bool:
        """Whether the answers at ``+m`` and ``-m`` to questions ``idx`` (repeats count as
        often as they appear) are within ``budget`` of the unsteered answers to them; the same
        test as :meth:`CoherenceBudget.allows_answers`."""
        p0, d0, r0 = self._coherence(0.0, idx)
        for s in (m, -m):
            p, d, r = self._coherence(s, idx)
            if not budget.allows(ppl=p, ppl0=p0, d2=d, d20=d0, rep=r, rep0=r0):
                return False
        return True

    def ranges(self, m: float) -> np.ndarray:
        """Per question, behaviour at ``+m`` minus at ``-m``."""
        return self.score[self.row[m]] - self.score[self.row[-m]]

    def best(self, idx: np.ndarray, budget: CoherenceBudget) -> tuple[float, float] | None:
        """``(mean range, multiplier)`` of the in-budget multiplier with the largest mean range
        on questions ``idx`` (ties: the smaller multiplier; with a ``contiguous`` budget only
        multipliers below the first that breaks it); None when none is within budget or the
        answers are not judged."""
        if not np.isfinite(self.score).all():
            return None
        best: tuple[float, float] | None = None
        for m in self.multipliers:
            if self.inside(m, idx, budget):
                r = float(self.ranges(m)[idx].mean())
                if best is None or r > best[0]:
                    best = (r, m)
            elif budget.contiguous:
                break
        return best

    def choose(self, idx: np.ndarray, budget: CoherenceBudget) -> float | None:
        """The operating point chosen on questions ``idx``: :meth:`best`'s multiplier, or None
        when none is within budget or the best range is not positive (the method does not
        steer the intended way there)."""
        best = self.best(idx, budget)
        return best[1] if best is not None and best[0] > 0 else None

    def why_none(self, idx: np.ndarray, budget: CoherenceBudget) -> str:
        """Why :meth:`choose` found no point on ``idx`` (or ``""`` when it found one)."""
        if not np.isfinite(self.score).all():
            return "not judged"
        best = self.best(idx, budget)
        if best is None:
            return "nothing within budget"
        return "" if best[0] > 0 else "does not steer the intended way"

    def cross_fit(self, first: np.ndarray, budget: CoherenceBudget = CoherenceBudget()) -> CrossFit:
        """Choose on each half (``first``: a boolean mask over questions, the rest is the second
        half) and report each question's range at the point chosen on the other half."""
        first = np.asarray(first, bool)
        a, b = np.flatnonzero(first), np.flatnonzero(~first)
        m_a, m_b = self.choose(a, budget), self.choose(b, budget)
        out = np.full(self.n, np.nan)
        if m_a is not None:
            out[b] = self.ranges(m_a)[b]
        if m_b is not None:
            out[a] = self.ranges(m_b)[a]
        return CrossFit(out, (m_a, m_b))

    def bootstrap(self, budget: CoherenceBudget, *, n_boot: int = N_BOOT, seed: int = SEED
                  ) -> np.ndarray:  # fmt: skip
        """The cross-fitted mean range of each of ``n_boot`` resamples of the whole procedure
        (questions drawn with replacement, split at random, chosen and reported per half); NaN
        where a half had no operating point. With the same ``seed`` and number of questions,
        every cell sees the same resamples, so two cells' replicates pair up."""
        out = np.full(n_boot, np.nan)
        for k, (h1, h2) in enumerate(resamples(self.n, n_boot, seed)):
            m1, m2 = self.choose(h1, budget), self.choose(h2, budget)
            if m1 is not None and m2 is not None:
                out[k] = (self.ranges(m1)[h2].sum() + self.ranges(m2)[h1].sum()) / self.n
        return out


def resamples(n: int, n_boot: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_boot`` resamples of ``n`` questions (with replacement), each split into two halves
    at random: the bootstrap of a choose-and-report procedure."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        cut = rng.permutation(n)
        out.append((idx[cut[: n // 2]], idx[cut[n // 2 :]]))
    return out


@dataclass(frozen=True)
class CrossFitted:
    """A cross-fitted range or difference of ranges with its interval.

    Attributes:
        interval: estimate on the given split (every question reported once), percentile
            interval and two-sided bootstrap p-value from resampling the whole procedure.
        multipliers: per method, ``(chosen on half 1, chosen on half 2)``.
        no_point: the share of resamples in which a half had no operating point (they are
            left out of the interval; a large share means the interval is optimistic).
    """

    interval: Interval
    multipliers: tuple[tuple[float | None, float | None], ...]
    no_point: float


def cross_fitted(
    a: CellAnswers,
    b: CellAnswers | None = None,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    n_boot: int = N_BOOT,
    level: float = 0.95,
    split_seed: int = SEED,
    seed: int = SEED,
    replicates: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> CrossFitted:
    """``a``'s cross-fitted range (``b`` None) or ``a``'s minus ``b``'s, the two answering the
    same questions; NaN estimate when a half has no operating point for either.

    Args:
        replicates: precomputed :meth:`CellAnswers.bootstrap` outputs of ``a`` and ``b`` (with
            this ``n_boot`` and ``seed``), to share them among comparisons.
    """
    if b is not None and b.n != a.n:
        raise ConfigError(f"cells answer different questions: {a.n} vs {b.n}")
    first = np.isin(np.arange(a.n), split_questions(a.n, split_seed)[0])
    fa = a.cross_fit(first, budget)
    fb = b.cross_fit(first, budget) if b is not None else None
    diff = fa.ranges - (fb.ranges if fb is not None else 0.0)
    ra, rb = replicates if replicates is not None else (
        a.bootstrap(budget, n_boot=n_boot, seed=seed),
        b.bootstrap(budget, n_boot=n_boot, seed=seed) if b is not None else None)  # fmt: skip
    reps = ra - (rb if rb is not None else 0.0)
    ok = reps[np.isfinite(reps)]
    mults = (fa.multipliers,) + ((fb.multipliers,) if fb is not None else ())
    if not np.isfinite(diff).all() or len(ok) == 0:
        nan = Interval(math.nan, math.nan, math.nan, level, a.n, n_boot, seed)
        return CrossFitted(nan, mults, 1 - len(ok) / n_boot)
    q = (1 - level) / 2
    lo, hi = np.quantile(ok, [q, 1 - q])
    p = min(1.0, 2 * min(float((ok <= 0).mean()), float((ok >= 0).mean())))
    iv = Interval(float(diff.mean()), float(lo), float(hi), level, a.n, n_boot, seed, p_value=p)
    return CrossFitted(iv, mults, 1 - len(ok) / n_boot)


def split_stability(
    a: CellAnswers,
    b: CellAnswers | None = None,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    splits: int = 20,
    n_boot: int = 1000,
    seed: int = SEED,
) -> pd.DataFrame:
    """The cross-fitted comparison on ``splits`` random splits (split seeds ``0..splits-1``):
    per split, the estimate and the verdict of a paired bootstrap over questions (the choice
    held fixed). The share of splits agreeing with a verdict is how much it depends on the
    split."""
    rows = []
    for s in range(splits):
        first = np.isin(np.arange(a.n), split_questions(a.n, s)[0])
        d = a.cross_fit(first, budget).ranges
        if b is not None:
            d = d - b.cross_fit(first, budget).ranges
        if not np.isfinite(d).all():
            rows.append({"split_seed": s, "estimate": math.nan, "verdict": "no operating point"})
            continue
        iv = bootstrap_mean(d, n_boot=n_boot, seed=seed)
        rows.append({"split_seed": s, "estimate": iv.estimate, "verdict": iv.verdict})
    return pd.DataFrame(rows, columns=["split_seed", "estimate", "verdict"])


def cells_of(items: pd.DataFrame) -> dict[tuple[str, str], CellAnswers]:
    """One :class:`CellAnswers` per (dataset, method) of a table of open-ended answers (a
    method answers each dataset from one cell: its layer and seed)."""
    oe = items[items["metric"] == "open_ended"] if "metric" in items else items
    out = {}
    for (d, m), grp in oe.groupby(["dataset", "method"], sort=False):
        if grp[["layer", "seed"]].drop_duplicates().shape[0] > 1:
            raise ConfigError(f"{d} / {m}: answers from more than one cell (layer, seed)")
        out[(str(d), str(m))] = CellAnswers.from_items(grp)
    return out


def _mults(pair: tuple[float | None, float | None]) -> str:
    return " / ".join("-" if m is None else f"{m:g}" for m in pair)


def cross_fitted_points(
    items: pd.DataFrame,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    n_boot: int = N_BOOT,
    split_seed: int = SEED,
    seed: int = SEED,
) -> pd.DataFrame:
    """Per dataset and method: the multipliers chosen on each half, the cross-fitted range with
    its interval (resampling the whole choose-and-report), and why a half has no point."""
    rows = []
    for (d, m), c in cells_of(items).items():
        res = cross_fitted(c, budget=budget, n_boot=n_boot, split_seed=split_seed, seed=seed)
        halves = split_questions(c.n, split_seed)
        why = "; ".join(dict.fromkeys(w for h in halves if (w := c.why_none(h, budget))))
        iv = res.interval
        rows.append({"dataset": d, "method": m, "multipliers": _mults(res.multipliers[0]),
                     "range": iv.estimate, "low": iv.low, "high": iv.high, "p_value": iv.p_value,
                     "no_point_share": res.no_point, "why_none": why, "n": c.n})  # fmt: skip
    return pd.DataFrame(rows)


def cross_fitted_verdicts(
    items: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    judged: dict[str, bool] | None = None,
    n_boot: int = N_BOOT,
    split_seed: int = SEED,
    seed: int = SEED,
    splits: int = 20,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Method ``a`` minus ``b``, cross-fitted, for every dataset and pair, with Holm's
    adjustment over the whole family (every judged comparison with an estimate).

    Returns:
        One row per dataset and pair: the multipliers each method chose on each half
        (``m_a`` / ``m_b`` as text, ``m_a1``, ``m_a2``, ``m_b1``, ``m_b2``: on half 1 and 2),
        ``difference`` with ``low`` / ``high`` (bootstrap of the whole choose-and-report),
        ``p_value`` and Holm's ``p_holm``, ``raw_verdict`` (from the interval), ``verdict``
        (better / worse only where ``p_holm < alpha``; "not judged", "no operating point"),
        ``stability`` (share of ``splits`` random splits whose verdict equals ``raw_verdict``)
        and ``no_point_share`` (resamples left out: a half had no point).
    """
    cells = cells_of(items)
    reps: dict[tuple[str, str], np.ndarray] = {}

    def replicate(key: tuple[str, str]) -> np.ndarray:
        if key not in reps:
            reps[key] = cells[key].bootstrap(budget, n_boot=n_boot, seed=seed)
        return reps[key]

    rows: list[dict] = []
    for d in dict.fromkeys(k[0] for k in cells):
        for a, b in pairs:
            if (d, a) not in cells or (d, b) not in cells:
                continue
            ca, cb = cells[(d, a)], cells[(d, b)]
            both = (replicate((d, a)), replicate((d, b)))
            res = cross_fitted(ca, cb, budget=budget, n_boot=n_boot, split_seed=split_seed,
                               seed=seed, replicates=both)  # fmt: skip
            iv, ok = res.interval, bool((judged or {}).get(d, True))
            (a1, a2), (b1, b2) = ((math.nan if m is None else m for m in ms)
                                  for ms in res.multipliers)  # fmt: skip
            row = {"dataset": d, "a": a, "b": b, "m_a": _mults(res.multipliers[0]),
                   "m_b": _mults(res.multipliers[1]), "m_a1": a1, "m_a2": a2, "m_b1": b1,
                   "m_b2": b2, "difference": iv.estimate, "low": iv.low,
                   "high": iv.high, "p_value": iv.p_value if ok else math.nan,
                   "no_point_share": res.no_point}  # fmt: skip
            if not math.isfinite(iv.estimate):
                row.update(raw_verdict="no operating point", stability=math.nan)
            else:
                st = split_stability(ca, cb, budget=budget, splits=splits, seed=seed)
                same = float((st["verdict"] == iv.verdict).mean())
                row.update(raw_verdict=iv.verdict, stability=same)
            row["judged"] = ok
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["verdict"] = [
        "not judged"
        if not r.judged
        else r.raw_verdict
        if r.raw_verdict == "no operating point" or r.p_holm < alpha
        else "not distinguishable"
        for r in out.itertuples()
    ]
    return out


__all__ = [
    "CellAnswers",
    "CrossFit",
    "CrossFitted",
    "cells_of",
    "cross_fitted",
    "cross_fitted_points",
    "cross_fitted_verdicts",
    "resamples",
    "split_stability",
]
