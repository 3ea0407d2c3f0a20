"""Per-item steerability and anti-steerable shares against numpy's least squares."""

import numpy as np
import pandas as pd
import pytest

from steerlens.core.errors import ConfigError
from steerlens.experiments.reliability import item_slopes, reliability


def margins(slopes, mults=(-2.0, -1.0, 0.0, 1.0, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i, s in enumerate(slopes):
        for m in mults:
            rows.append({"dataset": "d", "method": "x", "layer": 3, "seed": 0, "metric": "margin",
                         "item": i, "multiplier": m,
                         "value": 0.3 * i + s * m + 0.1 * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_slopes_match_polyfit():
    df = margins([1.0, -0.5, 0.2, 2.0])
    got = item_slopes(df)
    for i, row in got.iterrows():
        sub = df[df["item"] == i]
        want = np.polyfit(sub["multiplier"], sub["value"], 1)[0]
        assert row["slope"] == pytest.approx(want)
        assert row["points"] == 5


def test_anti_steerable_share_is_known():
    true = np.r_[np.full(30, 1.0), np.full(10, -1.0)]  # a quarter go the wrong way
    rel = reliability(margins(true), n_boot=500)
    r = rel.iloc[0]
    assert r["anti_steerable"] == pytest.approx(0.25)
    assert r["anti_low"] < 0.25 < r["anti_high"] and r["items"] == 40
    assert r["mean_slope"] == pytest.approx(0.5, abs=0.05)


def test_other_metrics_are_ignored_and_one_multiplier_is_refused():
    df = pd.concat([margins([1.0]), margins([1.0]).assign(metric="open_ended")])
    assert len(item_slopes(df)) == 1
    with pytest.raises(ConfigError, match="two or more multipliers"):
        item_slopes(margins([1.0], mults=(1.0,)))
