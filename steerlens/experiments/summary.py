"""Summaries of the engine's per-item tables: one row per cell and multiplier, each metric's
mean with a 95% bootstrap interval over items, and open-ended coherence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from steerlens.core.intervals import bootstrap_mean
from steerlens.evaluation.openended import coherence
from steerlens.experiments.verdicts import mean_repetition

_VALUE_NAME = {"margin": "margin", "ab": "score", "kl": "kl", "open_ended": "behaviour"}


def summarize(items: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """One row per cell and multiplier from :func:`sweep_grid`'s ``per_item=True`` table:
    each metric's mean with a 95% bootstrap interval over items (questions for open-ended
    answers), open-ended coherence (token-weighted ``perplexity``, mean per-answer
    ``repetition``, ``distinct2`` of all answers together), and the cell's ``norm``,
    ``seconds``, ``worker``.

    Examples:
        >>> items = pd.DataFrame({"dataset": "d", "method": "caa", "layer": 1, "seed": 0,
        ...     "metric": "margin", "multiplier": 1.0, "item": [0, 1], "value": [1.0, 3.0],
        ...     "positions": "all", "norm": 2.0, "seconds": 0.1, "worker": "w"})
        >>> row = summarize(items).iloc[0]
        >>> float(row["margin"]), float(row["matching_likelier"]), int(row["n"])
        (2.0, 1.0, 2)
    """
    keys = ["dataset", "method", "layer", "seed", "multiplier"]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (metric, *key), grp in items.groupby(["metric"] + keys, sort=False):
        row = rows.setdefault(tuple(key), dict(zip(keys, key, strict=True)))
        name = _VALUE_NAME[metric]
        col = "behaviour" if metric == "open_ended" else "value"
        if metric == "open_ended":
            row["answers"] = len(grp)
        elif metric != "kl":
            row["n"] = len(grp)
        if "positions" in grp:
            row.setdefault("positions", grp["positions"].iloc[0])
        for extra in ("norm", "seconds", "worker"):
            row[extra] = grp[extra].iloc[0]
        if metric == "kl":
            row["kl"] = float(grp["value"].mean())
            continue
        values = grp[col].to_numpy(dtype=float)
        if np.isfinite(values).all():
            iv = bootstrap_mean(values, groups=grp["item"].to_numpy(), seed=seed)
            row[name], row[f"{name}_low"], row[f"{name}_high"] = iv.estimate, iv.low, iv.high
        else:
            row[name] = row[f"{name}_low"] = row[f"{name}_high"] = math.nan
        if metric == "margin":
            row["matching_likelier"] = float((values > 0).mean())
        elif metric == "ab":
            row["matching_likelier"] = float((values > 0.5).mean())
        else:
            row["perplexity"], row["distinct2"] = coherence(grp)
            row["repetition"] = mean_repetition(grp)
    return pd.DataFrame.from_records(list(rows.values()))
