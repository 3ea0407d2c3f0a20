from __future__ import annotations

import numpy as np
import pytest
import torch

import steerlens as sl
from steerlens import analysis
from steerlens.methods.baselines import collect_activations


def test_cosine_tables():
    a = sl.SteeringVector(
        {
            "blocks.2.hook_resid_post": torch.tensor([1.0, 0.0]),
            "blocks.1.hook_resid_post": torch.tensor([0.0, 1.0]),
        }
    )
    b = sl.SteeringVector(
        {
            "blocks.2.hook_resid_post": torch.tensor([-1.0, 0.0]),
            "blocks.1.hook_resid_post": torch.tensor([1.0, 1.0]),
        }
    )
    df = analysis.cosine_similarity(a, b)
    assert df["layer"].tolist() == [1, 2]
    assert df["cosine"].round(4).tolist() == [0.7071, -1.0]
    long = analysis.cosine_by_layer({"a": a, "b": b, "c": a})
    assert len(long) == 3 * 2
    assert long[(long.a == "a") & (long.b == "c")]["cosine"].round(6).tolist() == [1.0, 1.0]


def test_project_matches_manual(tiny, rand_vec):
    v = rand_vec(tiny, layer=2)
    df = analysis.project(tiny, v, ["The cat sat.", "Power is good."])
    assert set(df["text"]) == {0, 1}
    tok = tiny.tokenizer
    ids = torch.tensor([tok("Power is good.", add_special_tokens=False).input_ids])
    _, cache = tiny.run_with_cache(ids, names_filter=["blocks.2.hook_resid_post"])
    u = v.vectors["blocks.2.hook_resid_post"]
    want = cache["blocks.2.hook_resid_post"][0] @ (u / u.norm())
    got = df[df.text == 1]["projection"].to_numpy()
    assert np.allclose(got, want.numpy(), atol=1e-5)
    assert "".join(df[df.text == 1]["token"]) == "Power is good."


def test_pca_activations(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:10]
    caa = sl.caa_vector(tiny, pairs, layers=2)
    res = analysis.pca_activations(tiny, pairs, layers=2, vectors={"caa": caa})
    assert len(res.coords) == 20 and set(res.coords.label) == {"matching", "not_matching"}
    assert 0 < res.explained_variance_ratio.sum() <= 1
    # the direction drawn is the unit vector projected onto the two principal axes
    u = caa.vectors["blocks.2.hook_resid_post"].double().numpy()
    u = u / np.linalg.norm(u)
    assert np.allclose(res.directions["caa"], res.components @ u)
    # coordinates are the centred activations projected on the components
    m, n = collect_activations(tiny, pairs, layers=[2])["blocks.2.hook_resid_post"]
    x = torch.cat([m, n]).double().numpy()
    assert np.allclose(
        res.coords[["pc1", "pc2"]].to_numpy(), (x - x.mean(0)) @ res.components.T, atol=1e-6
    )
    with pytest.raises(sl.HookError):
        analysis.pca_activations(tiny, pairs, layers=1, vectors={"caa": caa})


def test_compare_table(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:8]
    caa = sl.caa_vector(tiny, pairs, layers=[1, 2])
    pca = sl.pca_vector(tiny, pairs, layers=[1, 2])
    df = analysis.compare(caa, pca, model=tiny, pairs=pairs, names=("caa", "pca"))
    assert {"cosine", "norm_caa", "norm_pca", "gap_caa", "gap_pca"} <= set(df)
    assert (df["gap_caa"] > 0).all()  # CAA's direction separates its own training pairs
