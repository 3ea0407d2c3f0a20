from __future__ import annotations

import pandas as pd
import torch

import steerlens as sl
from steerlens import analysis, viz


def test_multiplier_curve_and_sweep_plots(tmp_path):
    df = pd.DataFrame(
        {
            "multiplier": [1, -1, 0] * 2,
            "score": [0.9, 0.1, 0.5, 0.7, 0.3, 0.5],
            "method": ["bipo"] * 3 + ["caa"] * 3,
        }
    )
    fig = viz.plot_multiplier_curve(df, "score", hue="method")
    lines = fig.axes[0].lines
    assert [ln.get_label() for ln in lines] == ["bipo", "caa"]
    assert list(lines[0].get_xdata()) == [-1, 0, 1] and list(lines[0].get_ydata()) == [
        0.1,
        0.5,
        0.9,
    ]
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    sweep = pd.DataFrame(
        {
            "layer": [3, 1, 3, 1],
            "method": "caa",
            "multiplier": [1, 1, -1, -1],
            "score": [0.8, 0.6, 0.2, 0.4],
        }
    )
    f2 = viz.plot_sweep(sweep)
    assert len(f2.axes[0].lines) == 2
    assert list(f2.axes[0].lines[0].get_xdata()) == [1, 3]


def test_pca_and_cosine_plots(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:6]
    caa = sl.caa_vector(tiny, pairs, layers=[1, 2])
    res = analysis.pca_activations(tiny, pairs, layers=2, vectors={"caa": caa})
    fig = viz.plot_pca(res)
    ax = fig.axes[0]
    offsets = [c.get_offsets() for c in ax.collections]
    assert [len(o) for o in offsets] == [6, 6]
    assert any(t.get_text() == "caa" for t in ax.texts)
    cos = analysis.cosine_by_layer({"caa": caa, "pca": sl.pca_vector(tiny, pairs, layers=[1, 2])})
    f2 = viz.plot_cosine_by_layer(cos)
    assert list(f2.axes[0].lines[0].get_ydata()) == cos["cosine"].tolist()


def test_projection_views(tiny):
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(64)})
    df = analysis.project(tiny, v, ["a <b> & c"])
    page = viz.projection_html(df)
    assert page.count("<span") == len(df) and "&lt;" in page and "<b>" not in page
    rendered = viz.render_projection(df)
    html = str(rendered)
    assert "ColoredTokens" in html or "colored" in html.lower()
