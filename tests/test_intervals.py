"""Bootstrap intervals and verdicts: against scipy, and right on synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import steerlens as sl
from steerlens.core.errors import ConfigError
from steerlens.core.intervals import (
    bootstrap_mean,
    paired_difference,
    steering_range,
    verdict_table,
)


def test_agrees_with_scipy_bootstrap_percentile():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.beta(2, 3, size=50)
        ours = bootstrap_mean(x, n_boot=20000, seed=3)
        ref = stats.bootstrap(
            (x,), np.mean, n_resamples=20000, method="percentile", random_state=4
        ).confidence_interval
        se = x.std(ddof=1) / np.sqrt(len(x))
        # Monte-Carlo error of a 2.5% quantile from 20000 resamples is about 0.02 standard errors
        assert abs(ours.low - ref.low) < 0.05 * se * 4
        assert abs(ours.high - ref.high) < 0.05 * se * 4
        assert ours.estimate == pytest.approx(x.mean())


def test_cluster_bootstrap_resamples_questions_with_their_samples():
    # two samples per question, identical within a question: the cluster interval equals the
    # interval of the per-question means
    rng = np.random.default_rng(2)
    q = rng.normal(size=30)
    values = np.repeat(q, 2)
    groups = np.repeat(np.arange(30), 2)
    a = bootstrap_mean(values, groups=groups, seed=5)
    b = bootstrap_mean(q, seed=5)
    assert a.n == 30 and (a.low, a.high) == pytest.approx((b.low, b.high))


@pytest.mark.parametrize("true_diff,want", [(0.15, "better"), (-0.15, "worse"),
                                            (0.0, "not distinguishable")])  # fmt: skip
def test_verdicts_are_right_on_synthetic_differences(true_diff, want):
    rng = np.random.default_rng(7)
    right = 0
    for draw in range(200):
        base = rng.uniform(0.2, 0.8, size=50)  # question difficulty, shared by both methods
        a = np.clip(base + true_diff + rng.normal(0, 0.15, 50), 0, 1)
        b = np.clip(base + rng.normal(0, 0.15, 50), 0, 1)
        right += paired_difference(a, b, n_boot=1000, seed=draw).verdict == want
    assert right >= 180, right  # at least 90% of 200 draws


def test_steering_range_and_table():
    items = pd.DataFrame({
        "method": "bipo", "multiplier": [-2.0] * 20 + [2.0] * 20,
        "prompt": [f"q{i}" for i in range(20)] * 2, "sample": 0,
        "behaviour": [0.2] * 20 + [0.7] * 20,
    })  # fmt: skip
    r = steering_range(items, 2.0, -2.0)
    assert r.estimate == pytest.approx(0.5) and r.low == pytest.approx(0.5)
    table = verdict_table(items)
    assert table["estimate"].tolist() == pytest.approx([0.2, 0.7]) and set(table["n"]) == {20}
    with pytest.raises(ConfigError, match="both multipliers"):
        steering_range(items, 3.0, -2.0)


def test_bad_input():
    with pytest.raises(ConfigError):
        bootstrap_mean([])
    with pytest.raises(ConfigError, match="finite"):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ConfigError, match="same questions"):
        paired_difference([1.0, 2.0], [1.0])


def test_holm_matches_a_hand_computation():
    from steerlens.core.intervals import holm

    # m = 5: sorted p 0.001, 0.01, 0.02, 0.03, 0.2 -> x5, x4, x3, x2, x1 with a running max
    p = [0.03, 0.001, 0.2, 0.01, 0.02]
    want = [max(0.005, 0.04, 0.06, 0.06), 0.005, 0.2, 0.04, 0.06]
    np.testing.assert_allclose(holm(p), want)
    assert np.isnan(holm([np.nan, 0.01])[0]) and holm([np.nan, 0.01])[1] == 0.01  # m = 1
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # 0.8 x 2 capped at 1, then monotone


def test_bootstrap_p_value_tracks_the_normal_approximation():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 60)
    iv = sl.intervals.bootstrap_mean(x, n_boot=20000)
    z = x.mean() / (x.std(ddof=1) / np.sqrt(len(x)))
    assert iv.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), abs=0.01)
    far = sl.intervals.paired_difference(x + 5, x)
    assert far.p_value == 0.0 and far.verdict == "better"
