"""Operating points by search: a known budget edge is found within the stated resolution."""

from __future__ import annotations

import numpy as np
import pytest

import steerlens as sl
from steerlens.experiments.search import search_multiplier


@pytest.mark.parametrize("edge", [0.02, 0.3, 0.62, 1.0, 1.25, 2.7, 40.0])
@pytest.mark.parametrize("resolution", [0.05, 0.01])
def test_the_search_finds_a_known_edge_within_its_resolution(edge, resolution):
    calls = []

    def inside(m):
        calls.append(m)
        return m <= edge

    found = search_multiplier(inside, resolution=resolution)
    assert found.multiplier is not None
    assert edge / (1 + resolution) <= found.multiplier <= edge
    assert len(calls) == len(set(calls)) == len(found.visited)  # each multiplier once
    assert all(ok == (m <= edge) for m, ok in found.visited)


def test_no_multiplier_inside_and_every_multiplier_inside():
    assert search_multiplier(lambda m: False).multiplier is None
    assert search_multiplier(lambda m: True, largest=8.0).multiplier == 8.0
    with pytest.raises(sl.ConfigError, match="resolution"):
        search_multiplier(lambda m: True, resolution=0)


def test_the_search_visits_few_multipliers():
    """Bracketing then bisection: about log2(range) + log2(1 / resolution) evaluations, far
    fewer than a grid of the same resolution."""
    found = search_multiplier(lambda m: m <= 0.62, resolution=0.05)
    assert len(found.visited) <= 8


def synthetic_answers(edge, slope=0.1, n=20, calls=None):
    """Answers whose perplexity ratio to the unsteered ones is ``1 + 0.25 (m / edge)^2``: the
    default budget (1.25x) has its edge exactly at ``m = edge``."""
    import math

    import pandas as pd

    def at(m):
        if calls is not None:
            calls.append(m)
        mults = (0.0,) if m == 0 else (-m, m)
        rows = []
        for s in mults:
            ppl = 2.0 * (1 + 0.25 * (s / edge) ** 2)
            for q in range(n):
                rows.append({"item": q, "multiplier": s, "text": f"answer {q} says w{q} x{q}",
                             "nll": 10 * math.log(ppl), "tokens": 10,
                             "behaviour": 0.5 + slope * s + 0.01 * q})  # fmt: skip
        return pd.DataFrame(rows)

    return at


@pytest.mark.parametrize("edge", [0.62, 1.25, 3.0])
def test_search_points_find_a_known_budget_edge_on_each_half(edge):
    from steerlens.experiments.search import search_points

    calls = []
    res = search_points(synthetic_answers(edge, calls=calls), 20, resolution=0.05)
    for m in res.multipliers:
        assert m is not None and edge / 1.05 <= m <= edge
    assert np.isfinite(res.ranges).all()
    np.testing.assert_allclose(res.ranges, 2 * 0.1 * np.array(res.multipliers).mean(), atol=0.02)
    assert len(calls) == len(set(calls))  # each multiplier's answers made once
    assert len(calls) <= 12


def test_search_points_drop_a_point_that_steers_the_wrong_way():
    from steerlens.experiments.search import search_points

    res = search_points(synthetic_answers(1.0, slope=-0.1), 20)
    assert res.multipliers == (None, None) and np.isnan(res.ranges).all()
    assert res.why_none == ("does not steer the intended way",) * 2


def test_cached_answers_generate_each_multiplier_once(tmp_path):
    import os

    import torch

    import steerlens as sl
    from steerlens.experiments.search import cached_answers, search_points

    model = sl.tiny_model(n_layers=2, d_model=16, seed=0)
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(16) * 0.5})
    qs = ["Hi?", "Why?", "Who?", "How?"]

    def judge(texts):
        return [len(t) % 7 / 7 for t in texts]

    budget = sl.CoherenceBudget(perplexity=float("inf"), distinct2=0.0)
    at = cached_answers(model, v, qs, judge, folder=tmp_path, max_new_tokens=3)
    first = search_points(at, 4, budget=budget, largest=4.0)
    files = sorted(tmp_path.glob("searched-*.json"))
    assert first.searches[0].visited and len(files) == len(
        {m for s in first.searches for m, _ in s.visited} | {0.0}
    )
    stamps = {f: os.stat(f).st_mtime_ns for f in files}
    again = search_points(cached_answers(model, v, qs, judge, folder=tmp_path, max_new_tokens=3),
                          4, budget=budget, largest=4.0)  # fmt: skip
    assert {f: os.stat(f).st_mtime_ns for f in files} == stamps  # read, not generated again
    assert np.array_equal(first.ranges, again.ranges, equal_nan=True)
    # another vector in the same folder: its answers are generated again
    (tmp_path / "vector.safetensors").unlink()
    w = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(16) * -0.5})
    import json

    from steerlens.experiments.cache import file_hash

    cached_answers(model, w, qs, judge, folder=tmp_path, max_new_tokens=3)(4.0)
    (four,) = tmp_path.glob("searched-*-m4.json")
    assert json.loads(four.read_text())["vector"] == file_hash(tmp_path / "vector.safetensors")
    assert os.stat(four).st_mtime_ns != stamps[four]


def test_compare_methods_searches_each_kept_vector_and_reads_it_back(tmp_path):
    """compare_methods(search=...): a compared vector cell's answers at the multipliers its
    search visits join the grid's (every question at +m and -m), each written once, never past
    the grid's largest multiplier; a rerun reads them; prompting, a cell whose answers record no
    kept vector and a method in no compared pair are not searched."""
    import json
    import os

    model = sl.tiny_model(n_layers=2, d_model=16, seed=0)
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    qs = ["Hi?", "Why?", "Who?", "How?"]
    b = sl.Behaviour("power-seeking", pairs, questions=qs,
                     judge=lambda texts: [len(t) % 7 / 7 for t in texts])  # fmt: skip
    kw = dict(methods=["caa", "prompt", "pca"], layers=[1], multipliers=(-4, -1, 0, 1, 4),
              pairs=[("caa", "prompt")], max_new_tokens=3, folder=tmp_path, progress=False,
              budget=sl.CoherenceBudget(perplexity=float("inf"), distinct2=0.0))  # fmt: skip
    c = sl.compare_methods(model, [b], search=0.25, **kw)
    rows = c.searched.set_index("method")
    assert rows.loc["prompt", "why"] == "prompting has no multiplier"
    assert "pca" not in rows.index  # in no compared pair: its grid points are not refined
    assert rows.loc["caa", "visited"] >= 1 and rows.loc["caa", "why"] != "no kept vector"
    caa = c.items[(c.items["method"] == "caa") & (c.items["metric"] == "open_ended")]
    off_grid = sorted({abs(m) for m in caa["multiplier"]} - {0.0, 1.0, 4.0})
    assert len(off_grid) == rows.loc["caa", "visited"]
    assert max(caa["multiplier"].abs()) == 4.0  # nothing past the grid's largest multiplier
    assert set(c.items.loc[c.items["method"] == "pca", "multiplier"].abs()) == {0.0, 1.0, 4.0}
    for m in off_grid:  # every question answered at +m and -m
        for s in (m, -m):
            assert sorted(caa.loc[caa["multiplier"] == s, "item"]) == [0, 1, 2, 3]
    assert caa["behaviour"].notna().all() and caa["perplexity"].notna().all()
    files = sorted(tmp_path.glob("*caa*/searched-*.json"))
    assert len(files) == len(off_grid)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = sl.compare_methods(model, [b], search=0.25, **kw)
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert again.searched.equals(c.searched)
    # answers that record no vector (made before vectors were kept): not searched
    (answers,) = [p for p in tmp_path.glob("*caa*/open_ended-*.json")]
    saved = json.loads(answers.read_text())
    answers.write_text(json.dumps({k: v for k, v in saved.items() if k != "vector"}))
    legacy = sl.compare_methods(model, [b], search=0.25, **kw)
    assert legacy.searched.set_index("method").loc["caa", "why"] == "no kept vector"
    assert set(legacy.items["multiplier"].abs()) == {0.0, 1.0, 4.0}
