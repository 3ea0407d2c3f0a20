"""Confidence intervals for steering results: paired bootstrap over questions.

Every score steerlens reports is a mean over questions (and, when sampling, over several
answers per question). Its uncertainty comes mostly from *which* questions were asked, so the
bootstrap resamples questions with replacement, each carrying all of its answers (a cluster
bootstrap), and reads the 2.5% and 97.5% quantiles of the resampled means (the percentile
interval, Efron & Tibshirani 1993, ch. 13; ``scipy.stats.bootstrap(method="percentile")``
computes the same for one sample). Two scores measured on the same questions (a method at +m
and at -m; BiPO and CAA) are compared through per-question differences, resampled together:
a *paired* bootstrap, which removes the between-question variance both share.

The seed of every resampling is fixed (default 0) and recorded in each :class:`Interval`.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(0.6, 0.2, 50); b = a - 0.1 + rng.normal(0, 0.05, 50)
    >>> d = paired_difference(a, b)
    >>> d.verdict, round(d.estimate, 2)
    ('better', 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from steerlens.core.errors import ConfigError

#: Resamples per interval, and the default seed.
N_BOOT = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    Attributes:
        estimate: the statistic on the data as observed.
        low, high: the interval's bounds.
        level: its nominal coverage (0.95).
        n: questions (clusters) resampled.
        n_boot: resamples; seed: the resampling seed.
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0
    n_boot: int = N_BOOT
    seed: int = SEED
    p_value: float = field(default=float("nan"), kw_only=True)

    @property
    def verdict(self) -> str:
        """``"better"`` (interval above 0), ``"worse"`` (below 0) or
        ``"not distinguishable"`` (it contains 0), for a difference."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "not distinguishable"

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _clusters(values: Any, groups: Any | None) -> list[np.ndarray]:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ConfigError("an interval needs a non-empty 1-D list of scores")
    if not np.isfinite(x).all():
        raise ConfigError("scores must be finite (drop NaN rows first)")
    if groups is None:
        return [x[i : i + 1] for i in range(len(x))]
    g = np.asarray(groups)
    if g.shape != x.shape:
        raise ConfigError(f"groups has shape {g.shape}, scores {x.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    return [x[inverse == k] for k in range(inverse.max() + 1)]


def _boot_means(clusters: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    sums = np.array([c.sum() for c in clusters])
    sizes = np.array([len(c) for c in clusters], dtype=float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(clusters), size=(n_boot, len(clusters)))
    return sums[pick].sum(1) / sizes[pick].sum(1)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval over questions.

    Args:
        groups: the question of each value (several samples per question are resampled
            together); None: every value is its own question.

    Examples:
        >>> iv = bootstrap_mean([0.2, 0.4, 0.6, 0.8])
        >>> iv.estimate, iv.low <= 0.5 <= iv.high
        (0.5, True)
    """
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    clusters = _clusters(values, groups)
    x = np.concatenate(clusters)
    means = _boot_means(clusters, n_boot, seed)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return Interval(float(x.mean()), float(lo), float(hi), level, len(clusters), n_boot, seed,
                    p_value=p)  # fmt: skip


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """``mean(a) - mean(b)`` for scores on the same questions (row i of ``a`` and of ``b``
    answer the same question and sample), with a paired bootstrap interval; its ``verdict``
    says better / worse / not distinguishable.

    Examples:
        >>> paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]).estimate
        1.0
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ConfigError(f"paired scores need the same questions: {x.shape} vs {y.shape}")
    return bootstrap_mean(x - y, groups=groups, level=level, n_boot=n_boot, seed=seed)


def verdict_table(
    items: pd.DataFrame,
    *,
    value: str = "behaviour",
    by: Sequence[str] = ("method", "multiplier"),
    question: str = "prompt",
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """One row per group of a per-item table (e.g. ``open_ended_score(..., per_item=True)``):
    the mean of ``value`` with its interval over questions (``low``, ``high``, ``n``,
    ``seed``).

    Examples:
        >>> items = pd.DataFrame({"method": "x", "multiplier": [1.0] * 4,
        ...                       "prompt": ["a", "b", "c", "d"], "behaviour": [0, 1, 0, 1]})
        >>> verdict_table(items)[["method", "multiplier", "estimate", "n"]].values.tolist()
        [['x', 1.0, 0.5, 4]]
    """
    rows = []
    for key, grp in items.groupby(list(by), sort=False):
        iv = bootstrap_mean(grp[value].to_numpy(), groups=grp[question].to_numpy(), level=level,
                            n_boot=n_boot, seed=seed)  # fmt: skip
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "estimate": iv.estimate, "low": iv.low,
                     "high": iv.high, "n": iv.n, "seed": iv.seed})  # fmt: skip
    return pd.DataFrame(rows)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (Holm 1979): sort them, multiply
    the i-th smallest (from 0) by ``m - i``, carry the running maximum, cap at 1. A verdict
    survives the family when its adjusted p-value is under the level (0.05). NaN stays NaN
    and does not count in ``m``.

    Examples:
        >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def question_ranges(
    items: pd.DataFrame,
    plus: float,
    minus: float | None = None,
    *,
    value: str = "behaviour",
    question: str = "item",
) -> pd.Series:
    """Per question, the mean score at ``plus`` minus the mean score at ``minus`` (default
    ``-plus``), over its samples: the range a steering moves each question by (questions
    scored at only one of the two are left out). Every "range" steerlens reports is made here.

    Examples:
        >>> items = pd.DataFrame({"item": [0, 1, 0, 1], "multiplier": [-1.0, -1.0, 1.0, 1.0],
        ...                       "behaviour": [0.1, 0.3, 0.7, 0.9]})
        >>> question_ranges(items, 1.0).round(2).tolist()
        [0.6, 0.6]
    """
    minus = -plus if minus is None else minus
    hi = items[items["multiplier"] == plus].groupby(question)[value].mean()
    lo = items[items["multiplier"] == minus].groupby(question)[value].mean()
    return (hi - lo).dropna()


def ratio_of_means(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """``mean(a) / mean(b)`` for scores on the same questions (row i of each), with a paired
    percentile bootstrap interval (questions resampled together).

    Examples:
        >>> iv = ratio_of_means([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
        >>> iv.estimate, round(iv.low, 3), round(iv.high, 3)
        (0.5, 0.5, 0.5)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ConfigError("ratio_of_means needs two non-empty 1-D lists of the same length")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    pick = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    ratios = x[pick].mean(1) / y[pick].mean(1)
    q = (1 - level) / 2
    lo, hi = np.quantile(ratios, [q, 1 - q])
    return Interval(float(x.mean() / y.mean()), float(lo), float(hi), level, len(x), n_boot, seed)


def steering_range(
    items: pd.DataFrame,
    plus: float,
    minus: float,
    *,
    value: str = "behaviour",
    question: str = "prompt",
    sample: str | None = "sample",
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Interval:
    """The score at multiplier ``plus`` minus the score at ``minus``, paired by question (and
    sample), with its interval: how far a vector moves the behaviour.

    Examples:
        >>> items = pd.DataFrame({"multiplier": [-1.0, -1.0, 1.0, 1.0], "prompt": ["a", "b"] * 2,
        ...                       "sample": 0, "behaviour": [0.1, 0.3, 0.7, 0.9]})
        >>> round(steering_range(items, 1.0, -1.0).estimate, 3)
        0.6
    """
    keys = [question] + ([sample] if sample and sample in items else [])
    hi = items[items["multiplier"] == plus].set_index(keys)[value]
    lo = items[items["multiplier"] == minus].set_index(keys)[value]
    both = pd.concat([hi.rename("hi"), lo.rename("lo")], axis=1, join="inner")
    if both.empty:
        raise ConfigError(f"no questions scored at both multipliers {plus} and {minus}")
    q = both.index.get_level_values(0) if isinstance(both.index, pd.MultiIndex) else both.index
    return paired_difference(both["hi"].to_numpy(), both["lo"].to_numpy(), groups=np.asarray(q),
                             level=level, n_boot=n_boot, seed=seed)  # fmt: skip


def format_interval(estimate: float, low: float, high: float, *, signed: bool = True) -> str:
    """``"+0.42 [+0.31, +0.52]"`` (``"-"`` for NaN): how tables print an interval.

    Examples:
        >>> format_interval(0.5, 0.25, 0.75), format_interval(0.9, 0.8, 1.0, signed=False)
        ('+0.50 [+0.25, +0.75]', '0.90 [0.80, 1.00]')
    """
    if estimate != estimate:
        return "-"
    f = "+.2f" if signed else ".2f"
    return f"{estimate:{f}} [{low:{f}}, {high:{f}}]"


__all__ = [
    "Interval",
    "format_interval",
    "holm",
    "bootstrap_mean",
    "paired_difference",
    "question_ranges",
    "ratio_of_means",
    "steering_range",
    "verdict_table",
]
