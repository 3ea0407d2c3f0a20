"""Operating points by search: a known budget edge is found within the stated resolution."""

from __future__ import annotations

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
