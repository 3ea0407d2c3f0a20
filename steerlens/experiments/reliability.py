"""Per-item reliability of a steering: how much each item is steered, and how many go the wrong
way.

A mean effect can hide items that move the other way. Following Tan et al. (NeurIPS 2024,
"Analyzing the Generalization and Reliability of Steering Vectors", sec. 3): per item, the
*steerability* is the least-squares slope of its propensity (here the preference margin, log
p(matching) - log p(not matching), the logit difference they use) against the multiplier, and
the share of items with a negative slope is the share of *anti-steerable* items (about half on
some of their datasets). Braun et al. (2025) read the same per-item slopes.

Examples:
    >>> import pandas as pd
    >>> items = pd.DataFrame({"dataset": "d", "method": "x", "layer": 1, "seed": 0,
    ...     "metric": "margin", "item": [0, 0, 0, 1, 1, 1], "multiplier": [-1.0, 0.0, 1.0] * 2,
    ...     "value": [-1.0, 0.0, 1.0, 0.5, 0.0, -0.5]})
    >>> item_slopes(items)["slope"].tolist()
    [1.0, -0.5]
    >>> reliability(items)[["mean_slope", "anti_steerable"]].values.tolist()
    [[0.25, 0.5]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerlens.core.errors import ConfigError
from steerlens.core.intervals import N_BOOT, SEED, bootstrap_mean

CELL = ["dataset", "method", "layer", "seed"]


def item_slopes(
    items: pd.DataFrame, *, value: str = "value", metric: str = "margin"
) -> pd.DataFrame:
    """Per cell and item, the least-squares slope of ``value`` against ``multiplier`` (rows of
    ``metric`` only, when a ``metric`` column exists); an item needs two multipliers.

    Returns:
        One row per cell and item: the cell's columns present, ``item``, ``slope``, ``points``.
    """
    df = items[items["metric"] == metric] if "metric" in items else items
    if df.empty:
        return pd.DataFrame(columns=[*CELL, "item", "slope", "points"])
    keys = [k for k in CELL if k in df] + ["item"]
    x = df["multiplier"].to_numpy(dtype=float)
    y = df[value].to_numpy(dtype=float)
    g = df.groupby(keys, sort=False).ngroup().to_numpy()
    count = np.bincount(g)
    if (count < 2).any():
        raise ConfigError("every item needs answers at two or more multipliers for a slope")
    mx, my = np.bincount(g, x) / count, np.bincount(g, y) / count
    dx, dy = x - mx[g], y - my[g]
    sxx, sxy = np.bincount(g, dx * dx), np.bincount(g, dx * dy)
    if (sxx == 0).any():
        raise ConfigError("every item needs two different multipliers for a slope")
    out = df[keys].drop_duplicates().reset_index(drop=True)
    out["slope"], out["points"] = sxy / sxx, count
    return out


def reliability(
    items: pd.DataFrame,
    *,
    value: str = "value",
    metric: str = "margin",
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """Per cell: the mean and median per-item slope, and the share of anti-steerable items
    (slope < 0) with a 95% bootstrap interval over items.

    Returns:
        One row per cell: ``mean_slope``, ``median_slope``, ``anti_steerable`` with
        ``anti_low`` / ``anti_high``, ``items``.
    """
    slopes = item_slopes(items, value=value, metric=metric)
    keys = [k for k in CELL if k in slopes]
    rows = []
    for key, grp in slopes.groupby(keys, sort=False):
        s = grp["slope"].to_numpy()
        iv = bootstrap_mean((s < 0).astype(float), n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                     "mean_slope": float(s.mean()), "median_slope": float(np.median(s)),
                     "anti_steerable": iv.estimate, "anti_low": iv.low, "anti_high": iv.high,
                     "items": len(s)})  # fmt: skip
    return pd.DataFrame(rows)


__all__ = ["item_slopes", "reliability"]
