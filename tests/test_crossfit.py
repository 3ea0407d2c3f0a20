"""Cross-fitted operating points on synthetic behaviour and coherence curves with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from steerlens.core.errors import ConfigError
from steerlens.experiments.crossfit import (
    CellAnswers,
    cross_fitted,
    resamples,
    split_stability,
)
from steerlens.experiments.verdicts import CoherenceBudget

GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
WORDS = "the model would answer this question in plain words and stop there".split()


def cell(slope, *, n=60, edge=1.0, noise=0.05, seed=0, loop_at=None):
    """Answers whose judged behaviour is ``0.5 + slope * m`` (+ noise, per question) and whose
    perplexity is 2.0 up to ``|m| <= edge`` and 4.0 beyond it (the budget's edge at ``edge``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in GRID:
        for q in range(n):
            words = [WORDS[(q + k) % len(WORDS)] + str(q) for k in range(8)]
            if loop_at is not None and abs(m) >= loop_at:
                words = ["again", "and"] * 6
            ppl = 2.0 if abs(m) <= edge else 4.0
            rows.append({"item": q, "multiplier": m, "text": " ".join(words), "tokens": 10,
                         "nll": 10 * math.log(ppl),
                         "behaviour": 0.5 + slope * m + noise * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_inside_is_the_budgets_test_on_the_same_answers():
    items = cell(0.1, loop_at=2.0)
    c = CellAnswers.from_items(items)
    budget = CoherenceBudget(perplexity=1.5, repetition=0.1)
    idx = np.arange(0, 60, 3)
    for m in (0.5, 1.0, 2.0):
        sub = items[items["item"].isin(idx)]
        want = all(
            budget.allows_answers(sub[sub["multiplier"] == s], sub[sub["multiplier"] == 0])
            for s in (m, -m)
        )
        assert c.inside(m, idx, budget) == want
    assert c.inside(1.0, idx, budget) and not c.inside(2.0, idx, budget)


def test_choose_takes_the_largest_in_budget_multiplier():
    c = CellAnswers.from_items(cell(0.2, edge=1.0))
    assert c.choose(np.arange(30), CoherenceBudget()) == 1.0
    c = CellAnswers.from_items(cell(0.2, edge=0.5))
    assert c.choose(np.arange(30), CoherenceBudget()) == 0.5


def test_choose_stops_at_the_first_multiplier_that_breaks_the_budget():
    """Loops at |m| = 1 only: 2 is inside again, but a contiguous budget never reaches it."""
    items = cell(0.2, edge=5.0)
    ones = items["multiplier"].abs() == 1.0
    items.loc[ones, "text"] = " ".join(["again", "and"] * 6)
    c = CellAnswers.from_items(items)
    budget = CoherenceBudget(perplexity=1.5, repetition=0.1)
    idx = np.arange(60)
    assert not c.inside(1.0, idx, budget) and c.inside(2.0, idx, budget)
    assert c.choose(idx, budget) == 0.5
    anywhere = CoherenceBudget(perplexity=1.5, repetition=0.1, contiguous=False)
    assert c.choose(idx, anywhere) == 2.0


def test_a_negative_range_has_no_operating_point():
    c = CellAnswers.from_items(cell(-0.1))
    assert c.choose(np.arange(60), CoherenceBudget()) is None
    res = cross_fitted(c, n_boot=50)
    assert math.isnan(res.interval.estimate)
    assert res.multipliers == ((None, None),)


def test_cross_fitting_reports_every_question_once_and_recovers_a_known_difference():
    a = CellAnswers.from_items(cell(0.20, seed=1))
    b = CellAnswers.from_items(cell(0.10, seed=2))
    first = np.arange(60) % 2 == 0
    fit = a.cross_fit(first)
    assert np.isfinite(fit.ranges).all() and fit.multipliers == (1.0, 1.0)
    # each question's range is its own +1 minus -1 answer
    np.testing.assert_allclose(fit.ranges, a.ranges(1.0))
    res = cross_fitted(a, b, n_boot=400)
    truth = (0.20 - 0.10) * 2  # both at m = 1: ranges 0.4 and 0.2
    iv = res.interval
    assert abs(iv.estimate - truth) < 0.03
    assert iv.low < truth < iv.high and iv.verdict == "better"
    assert iv.p_value < 0.01 and res.no_point == 0.0


def test_the_interval_covers_the_choice():
    """Where the choice is a coin toss (equal ranges at 0.5 and 1 up to noise), resampling the
    choice widens the interval compared with resampling questions at a fixed choice."""
    a = CellAnswers.from_items(cell(0.1, seed=3, noise=0.3, edge=2.0))
    res = cross_fitted(a, n_boot=400)
    first = np.isin(np.arange(60), np.arange(0, 60, 2))
    fixed = a.cross_fit(first).ranges
    from steerlens.core.intervals import bootstrap_mean

    naive = bootstrap_mean(fixed, n_boot=400)
    assert res.interval.high - res.interval.low >= 0.9 * (naive.high - naive.low)


def test_same_seed_gives_paired_resamples():
    r1, r2 = resamples(10, 5, 0), resamples(10, 5, 0)
    for (a1, b1), (a2, b2) in zip(r1, r2, strict=True):
        assert (a1 == a2).all() and (b1 == b2).all() and len(a1) + len(b1) == 10
    a = CellAnswers.from_items(cell(0.2, n=20))
    reps = a.bootstrap(CoherenceBudget(), n_boot=30)
    shared = cross_fitted(a, n_boot=30, replicates=(reps, None))
    assert shared.interval == cross_fitted(a, n_boot=30).interval


def test_split_stability_counts_agreeing_splits():
    a = CellAnswers.from_items(cell(0.20, seed=1))
    b = CellAnswers.from_items(cell(0.10, seed=2))
    st = split_stability(a, b, splits=5, n_boot=200)
    assert len(st) == 5 and (st["verdict"] == "better").all()


def test_bad_cells_are_refused():
    items = cell(0.1)
    with pytest.raises(ConfigError, match="two answers for question 0"):
        CellAnswers.from_items(pd.concat([items, items.iloc[:1]]))
    with pytest.raises(ConfigError, match="multiplier 0"):
        CellAnswers.from_items(items[items["multiplier"] != 0])
    with pytest.raises(ConfigError, match="different questions"):
        cross_fitted(CellAnswers.from_items(items), CellAnswers.from_items(cell(0.1, n=10)))


def with_cell(df, dataset, method):
    return df.assign(dataset=dataset, method=method, layer=3, seed=0, metric="open_ended")


def test_page_tables_adjust_for_the_whole_family():
    from steerlens.core.intervals import holm
    from steerlens.experiments.crossfit import cross_fitted_points, cross_fitted_verdicts

    items = pd.concat([
        with_cell(cell(0.20, seed=1), "d1", "x"), with_cell(cell(0.10, seed=2), "d1", "y"),
        with_cell(cell(0.11, seed=3, noise=0.4), "d2", "x"),
        with_cell(cell(0.10, seed=4, noise=0.4), "d2", "y"),
        with_cell(cell(-0.1, seed=5), "d2", "z"),
    ])  # fmt: skip
    v = cross_fitted_verdicts(items, [("x", "y"), ("x", "z")], n_boot=300, splits=4)
    assert v[["dataset", "a", "b"]].values.tolist() == [["d1", "x", "y"], ["d2", "x", "y"],
                                                        ["d2", "x", "z"]]  # fmt: skip
    np.testing.assert_allclose(v["p_holm"], holm(v["p_value"]))
    d1, d2, d3 = v.itertuples()
    assert d1.verdict == "better" and d1.stability == 1.0 and d1.m_a == "1 / 1"
    assert d2.verdict == "not distinguishable"
    assert d3.verdict == "no operating point" and d3.m_b == "- / -"
    pts = cross_fitted_points(items, n_boot=100).set_index(["dataset", "method"])
    assert pts.loc[("d2", "z"), "why_none"] == "does not steer the intended way"
    assert pts.loc[("d1", "x"), "range"] == pytest.approx(0.4, abs=0.03)
    judged = cross_fitted_verdicts(items, [("x", "y")], judged={"d2": False}, n_boot=100,
                                   splits=2)  # fmt: skip
    assert judged["verdict"].tolist() == ["better", "not judged"]
