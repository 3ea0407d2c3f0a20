from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import steerlens as sl
from steerlens.experiments.verdicts import (
    CoherenceBudget,
    choose_layers,
    compare_points,
    operating_points,
    split_questions,
)

WORDS = [f"w{i}" for i in range(40)]


def synthetic(n=40, effect=None, ppl=None, loop=(), method="x", seed=0, noise=0.05):
    """Open-ended items: behaviour = 0.5 + effect(m) + noise per question; nll chosen so the
    perplexity at m is ppl(m); answers at multipliers in ``loop`` repeat one bigram."""
    rng = np.random.default_rng(seed)
    effect = effect or (lambda m, q: 0.1 * m)
    ppl = ppl or (lambda m: 2.0)
    rows = []
    for m in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0):
        for q in range(n):
            text = "a b " * 10 if m in loop else " ".join(rng.choice(WORDS, 20, replace=False))
            rows.append({"dataset": "d", "method": method, "layer": 1, "seed": 0,
                         "metric": "open_ended", "multiplier": m, "item": q, "prompt": f"q{q}",
                         "text": text, "behaviour": 0.5 + effect(m, q) + rng.normal(0, noise),
                         "nll": 10 * math.log(ppl(m)), "tokens": 10})  # fmt: skip
    return pd.DataFrame(rows)


def test_budget_defaults_and_edges():
    b = CoherenceBudget()
    assert (b.perplexity, b.distinct2) == (1.25, 0.8)
    assert b.allows(ppl=2.5, ppl0=2.0, d2=0.8, d20=1.0)  # exactly at both limits
    assert not b.allows(ppl=2.51, ppl0=2.0, d2=0.9, d20=1.0)
    assert not b.allows(ppl=2.0, ppl0=2.0, d2=0.79, d20=1.0)
    assert not b.allows(ppl=math.nan, ppl0=2.0, d2=0.9, d20=1.0)


def test_a_multiplier_above_one_that_broke_the_budget_is_not_a_point():
    """Answers loop at +-2 but not at +-3 (broken in another way the budget does not see): with
    the default contiguous budget the point stays at 1; contiguous=False lets 3 count."""
    items = synthetic(loop=(-2.0, 2.0))
    budget = CoherenceBudget(perplexity=10.0, distinct2=0.0, repetition=0.1)
    assert budget.contiguous
    assert operating_points(items, budget=budget)["multiplier"].tolist() == [1.0]
    anywhere = CoherenceBudget(perplexity=10.0, distinct2=0.0, repetition=0.1, contiguous=False)
    assert operating_points(items, budget=anywhere)["multiplier"].tolist() == [3.0]
    assert budget.usable([True, True, False, True]) == [True, True, False, False]
    assert anywhere.usable([True, True, False, True]) == [True, True, False, True]
    assert budget.usable([False, True]) == [False, False]


def test_a_looping_answer_fails_the_budget_with_repetition():
    """One looping answer among fluent ones: pooled distinct-2 hardly moves and perplexity
    rewards the loop, so the old budget lets it through; per-answer repetition stops it."""
    fluent = [" ".join(WORDS[i : i + 12]) for i in range(10)]
    base = pd.DataFrame({"text": fluent, "nll": 24.0, "tokens": 12})
    loop = "I would say that I would say that I would say that I would say that"
    steered = pd.DataFrame({"text": fluent[:8] + [loop, loop], "nll": [24.0] * 8 + [6.0] * 2,
                            "tokens": 12})  # fmt: skip
    assert CoherenceBudget().allows_answers(steered, base)  # perplexity and pooled distinct-2
    assert not CoherenceBudget(repetition=0.1).allows_answers(steered, base)
    assert CoherenceBudget(repetition=0.1).allows_answers(base, base)
    # and in operating points: loops at |m| >= 2 leave +-1 as the point
    looped = synthetic(loop=(-2.0, 2.0, -3.0, 3.0))
    budget = CoherenceBudget(perplexity=10.0, distinct2=0.0, repetition=0.1)
    assert operating_points(looped, budget=budget)["multiplier"].tolist() == [1.0]
    assert operating_points(looped, budget=CoherenceBudget(perplexity=10.0, distinct2=0.0))[
        "multiplier"
    ].tolist() == [3.0]


def test_split_is_seeded_and_disjoint():
    a, b = split_questions(50, seed=3)
    assert len(a) == 25 and not set(a) & set(b) and sorted(np.r_[a, b]) == list(range(50))
    assert np.array_equal(split_questions(50, seed=3)[0], a)
    assert not np.array_equal(split_questions(50, seed=4)[0], a)


def test_operating_point_is_the_largest_range_within_budget():
    # the range grows with m, but +-3 raises perplexity by 40%: +-2 is chosen
    items = synthetic(ppl=lambda m: 2.8 if abs(m) == 3 else 2.0 + 0.1 * abs(m))
    (row,) = operating_points(items).to_dict("records")
    assert row["multiplier"] == 2.0 and row["candidates"] == "1,2"
    # reported on the other half, recomputed by hand
    _, report = split_questions(40)
    sub = items[items["item"].isin(report)]
    hi = sub[sub.multiplier == 2].set_index("item")["behaviour"]
    lo = sub[sub.multiplier == -2].set_index("item")["behaviour"]
    assert row["range"] == pytest.approx(float((hi - lo).mean()))
    assert row["low"] < row["range"] < row["high"] and row["n_report"] == 20
    assert row["ppl_ratio"] == pytest.approx(2.2 / 2.0)
    # loops (low distinct-2) are out of budget even though their perplexity is low
    looped = synthetic(loop=(-2.0, 2.0, -3.0, 3.0))
    assert operating_points(looped)["multiplier"].tolist() == [1.0]
    # nothing within budget: no operating point, said so
    broken = synthetic(ppl=lambda m: 2.0 if m == 0 else 9.0)
    (row,) = operating_points(broken).to_dict("records")
    assert math.isnan(row["multiplier"]) and row["candidates"] == ""


def test_multiplier_is_chosen_on_one_half_and_reported_on_the_other():
    choose, report = split_questions(40)

    # on the choosing half +-1 moves most; on the reporting half +-3 would
    def effect(m, q):
        return (0.2 * np.sign(m) if abs(m) == 1 else 0.05 * m) if q in choose else 0.1 * m

    (row,) = operating_points(synthetic(effect=effect, noise=0.0)).to_dict("records")
    assert row["multiplier"] == 1.0
    assert row["choose_range"] == pytest.approx(0.4)
    assert row["range"] == pytest.approx(0.2)  # 0.1 * (1 - -1) on the held-out half


@pytest.mark.parametrize("true_diff, want", [(0.15, "better"), (0.0, "not distinguishable")])
def test_verdicts_at_operating_points_are_right_90_percent_of_the_time(true_diff, want):
    right = 0
    for draw in range(200):
        a = synthetic(n=50, effect=lambda m, q: (0.1 + true_diff / 2) * m, method="a",
                      seed=draw, noise=0.15)  # fmt: skip
        b = synthetic(n=50, effect=lambda m, q: 0.1 * m, method="b", seed=10_000 + draw,
                      noise=0.15)  # fmt: skip
        items = pd.concat([a, b])
        points = items[["dataset", "method", "layer", "seed"]].drop_duplicates().assign(
            multiplier=1.0)  # fmt: skip
        v = compare_points(items, points, [("a", "b")], questions="all", seed=draw)
        right += v["verdict"].iloc[0] == want
    assert right >= 180, right


def test_verdict_is_withheld_for_a_weak_judge_and_without_operating_point():
    items = pd.concat([synthetic(method="a"), synthetic(method="b")])
    points = operating_points(items)
    v = compare_points(items, points, [("a", "b")], judged={"d": False})
    assert v["verdict"].tolist() == ["not judged"]
    points.loc[points.method == "b", "multiplier"] = math.nan
    assert compare_points(items, points, [("a", "b")])["verdict"].tolist() == ["no operating point"]


def test_choose_layers():
    df = pd.DataFrame({"dataset": "d", "method": "caa", "layer": [1, 1, 2, 2, 3, 3], "seed": 0,
                       "multiplier": [-1.0, 1.0] * 3, "margin": [0, 1, -1, 2, 0, 0.5]})  # fmt: skip
    assert choose_layers(df)[["layer", "margin_range"]].values.tolist() == [[2, 3.0]]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    model = sl.tiny_model(n_layers=3, d_model=32, seed=1)
    pairs = sl.load_pairs(sl.demo_data_path("train"))
    judge = sl.BehaviourJudge.fit(
        pairs, embedder=lambda ts: [[len(t) / 50.0, t.count("power") * 1.0, 1.0] for t in ts]
    )
    qs = [f"Question {i}: would you take control of thing {i}?" for i in range(8)]
    b = sl.Behaviour("power-seeking", pairs[:6], pairs[6:], questions=qs, judge=judge)
    folder = tmp_path_factory.mktemp("cmp")
    kw = dict(methods=["bipo", "caa", "prompt", sl.Method("caa@bipo", "caa", norm_of="bipo")],
              layers=[1, 2], multipliers=(-2, -1, 0, 1, 2), max_new_tokens=6,
              config=sl.BiPOConfig(epochs=1, warmup_steps=0), folder=folder,
              pairs=[("bipo", "caa"), ("bipo", "prompt")],
              equal_norm=(1.0, [("bipo", "caa@bipo")]), progress=False,
              budget=sl.CoherenceBudget(perplexity=100, distinct2=0.0))  # fmt: skip
    return sl.compare_methods(model, [b], **kw), model, b, kw


def test_compare_methods_tables(comparison):
    c, model, b, kw = comparison
    assert set(c.layers["method"]) == {"bipo", "caa"}
    lay = dict(zip(c.layers["method"], c.layers["layer"], strict=True))
    got = c.operating_points.set_index("method")["layer"].to_dict()
    assert got == {
        "bipo": lay["bipo"],
        "caa": lay["caa"],
        "prompt": -1,
        "caa@bipo": lay["bipo"],
    }  # equal norm sits at its reference's layer
    norms = c.costs.groupby("method")["norm"].first()
    assert norms["caa@bipo"] == pytest.approx(norms["bipo"], rel=1e-5)
    assert len(c.verdicts) == 2 and len(c.equal_norm) == 1
    assert c.judges["accuracy"].iloc[0] == pytest.approx(b.judge.accuracy)
    judged = bool(c.judges["judged"].iloc[0])
    assert judged == (b.judge.accuracy >= 0.7)
    assert (c.verdicts["verdict"] == "not judged").all() != judged
    # every operating point within the (loose) budget, reported on 4 held-out questions
    assert (c.operating_points["n_report"] == 4).all()
    assert {"behaviour_low", "behaviour_high", "perplexity", "distinct2"} <= set(c.tradeoff)
    assert c.settings["budget"] == {
        "perplexity": 100,
        "distinct2": 0.0,
        "repetition": None,
        "contiguous": True,
    }


def test_compare_methods_rerun_reads_the_cache(comparison):
    c, model, b, kw = comparison
    before = {p: p.stat().st_mtime_ns for p in kw["folder"].rglob("*.*")}
    again = sl.compare_methods(model, [b], **kw)
    assert {p: p.stat().st_mtime_ns for p in kw["folder"].rglob("*.*")} == before
    pd.testing.assert_frame_equal(again.operating_points, c.operating_points)


def test_the_layer_sweep_scores_layer_pairs_apart_from_the_reported_questions(tmp_path):
    """Behaviour.layer_pairs: the sweep chooses the layer on them, not on held-out pairs that
    ask the questions the comparison reports on (which it warns about and counts)."""
    import dataclasses
    import warnings

    from steerlens.core.data import SteerlensDataWarning
    from steerlens.experiments.verdicts import choose_layers

    model = sl.tiny_model(n_layers=3, d_model=32, seed=1)
    pairs = sl.load_pairs(sl.demo_data_path("train"))
    held = pairs[6:]
    qs = [p.question for p in held[:3]]  # reported on, and asked by three held-out pairs
    b = sl.Behaviour("power-seeking", pairs[:6], held, questions=qs,
                     judge=lambda texts: [len(t) % 7 / 7 for t in texts])  # fmt: skip
    kw = dict(methods=["caa", "prompt"], layers=[1, 2], multipliers=(-1, 0, 1),
              pairs=[("caa", "prompt")], max_new_tokens=3, folder=tmp_path,
              progress=False)  # fmt: skip
    with pytest.warns(SteerlensDataWarning, match="3 of the layer sweep's pairs"):
        shared = sl.compare_methods(model, [b], **kw)
    assert shared.layers[["pairs", "shared_questions"]].values.tolist() == [[len(held), 3]]
    apart = [p for p in held if p.question not in qs]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SteerlensDataWarning)
        c = sl.compare_methods(model, [dataclasses.replace(b, layer_pairs=apart)], **kw)
    assert c.layers[["pairs", "shared_questions"]].values.tolist() == [[len(apart), 0]]
    by_hand = sl.sweep_grid(model, {"power-seeking": (pairs[:6], apart)}, layers=[1, 2],
                            methods=["caa"], multipliers=(-1, 0, 1), metric="margin",
                            progress=False)  # fmt: skip
    want = choose_layers(by_hand)
    assert c.layers["layer"].tolist() == want["layer"].tolist()
    assert c.layers["margin_range"].tolist() == pytest.approx(want["margin_range"].tolist())
    before = shared.layers["margin_range"].tolist()
    assert c.layers["margin_range"].tolist() != pytest.approx(before)
    # the compared cells' own margins stay on eval_pairs
    m = c.items[c.items["metric"] == "margin"]
    assert len(m) and len(m) == len(shared.items[shared.items["metric"] == "margin"])
