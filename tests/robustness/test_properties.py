"""Property-based tests (hypothesis) for the loaders and SteeringVector arithmetic."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steerlens as sl
from steerlens.core.errors import DataError

H1, H2 = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"
floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)
vec4 = st.lists(floats, min_size=4, max_size=4).map(lambda x: torch.tensor(x, dtype=torch.float32))


@st.composite
def vectors(draw):
    hooks = draw(st.sets(st.sampled_from([H1, H2]), min_size=1))
    return sl.SteeringVector({h: draw(vec4) for h in sorted(hooks)})


@given(vectors(), vectors(), vectors())
def test_addition_associative(a, b, c):
    left, right = (a + b) + c, a + (b + c)
    assert left.allclose(right, atol=1e-2, rtol=1e-5)


@given(vectors())
def test_v_minus_v_is_zero(v):
    z = v - v
    assert all(float(t.abs().max()) == 0.0 for t in z.vectors.values())


@given(vectors(), floats)
def test_scaling_distributes(v, s):
    assert (s * v).allclose(v * s, atol=0, rtol=0)
    w = v * s + v * 2.0
    assert w.allclose(v * (s + 2.0), atol=1e-2, rtol=1e-4)


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_TEXT, _TEXT, _TEXT), min_size=1, max_size=8))
def test_csv_round_trip(rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["question", "matching", "not_matching"])
    w.writerows(rows)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        p.write_text(buf.getvalue(), encoding="utf-8")
        pairs = sl.load_pairs(p, duplicates="ignore")
    assert [(x.question, x.matching, x.not_matching) for x in pairs] == [
        (q.strip(), m.strip(), n.strip()) for q, m, n in rows
    ]


@settings(max_examples=60)
@given(st.binary(max_size=300))
def test_loader_never_crashes_unexpectedly(blob):
    """Arbitrary bytes either parse or raise DataError, never anything else."""
    with tempfile.TemporaryDirectory() as d:
        for name in ("x.csv", "x.json", "x.jsonl"):
            p = Path(d) / name
            p.write_bytes(blob)
            try:
                sl.load_pairs(p, duplicates="ignore")
            except DataError:
                pass


def test_sum_apply_equals_joint_apply(tiny):
    @settings(max_examples=8, deadline=None)
    @given(st.integers(0, 2**16), st.floats(-3, 3), st.floats(-3, 3))
    def check(seed, ma, mb):
        g = torch.Generator().manual_seed(seed)
        a = sl.SteeringVector({H1: torch.randn(64, generator=g)})
        b = sl.SteeringVector({H1: torch.randn(64, generator=g), H2: torch.randn(64, generator=g)})
        x = torch.tensor([[3, 14, 15, 92, 65]])
        with (ma * a + mb * b).apply(tiny):
            joint = tiny(x)
        with a.apply(tiny, ma), b.apply(tiny, mb):
            together = tiny(x)
        assert torch.allclose(joint, together, atol=1e-4)

    check()
