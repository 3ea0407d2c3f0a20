"""Transfer across models: identity at equal width, maps recovered, saved bit for bit."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.errors import VectorError
from steerlens.interop.transfer import (
    ActivationMap,
    aligned_positions,
    explained_variance,
    fit_affine,
    fit_map,
    map_layer,
    transfer_vector,
)


def test_same_width_transfer_is_the_vector_itself():
    target = sl.tiny_model(n_layers=4, d_model=64, seed=1)
    v = sl.SteeringVector({"blocks.2.hook_resid_post": torch.randn(64)}, {"n_layers": 4})
    out = transfer_vector(v, target)
    assert torch.equal(
        out.vectors["blocks.2.hook_resid_post"], v.vectors["blocks.2.hook_resid_post"]
    )
    deeper = sl.tiny_model(n_layers=7, d_model=64)
    moved = transfer_vector(v, deeper)  # relative depth: 2 of 0..3 -> 4 of 0..6
    assert list(moved.vectors) == ["blocks.4.hook_resid_post"]
    assert torch.equal(
        moved.vectors["blocks.4.hook_resid_post"], v.vectors["blocks.2.hook_resid_post"]
    )
    with pytest.raises(VectorError, match="fit a map"):
        transfer_vector(v, sl.tiny_model(n_layers=2, d_model=32))


@pytest.mark.parametrize("d_s,d_t", [(6, 8), (8, 6), (5, 5)])
def test_ridge_recovers_a_known_affine_map(d_s, d_t):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(d_t, d_s, generator=g)
    b = torch.randn(d_t, generator=g)
    x = torch.randn(500, d_s, generator=g) * 3
    y = x @ a.T + b + 0.01 * torch.randn(500, d_t, generator=g)
    w, c = fit_affine(x, y, alpha=1e-6)
    assert torch.allclose(w, a, atol=1e-2) and torch.allclose(c, b, atol=1e-2)
    assert explained_variance(x @ w.T + c, y) > 0.999


def test_procrustes_recovers_a_rotation():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = 2.0 * x @ q.T + 1.0
    w, b = fit_affine(x.float(), y.float(), method="procrustes")
    assert torch.allclose(w.double(), 2.0 * q, atol=2e-2)


def test_map_save_load_bit_exact_and_maps_vectors(tmp_path):
    g = torch.Generator().manual_seed(2)
    m = ActivationMap(
        "blocks.1.hook_resid_post",
        "blocks.3.hook_resid_post",
        torch.randn(8, 6, generator=g),
        torch.randn(8, generator=g),
        {"r2": 0.5},
    )
    back = ActivationMap.load(m.save(tmp_path / "map.safetensors"))
    assert torch.equal(back.weight, m.weight) and torch.equal(back.bias, m.bias)
    assert back.metadata == {"r2": 0.5} and back.target_hook == m.target_hook
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.randn(6, generator=g)})
    out = m.map_vector(v)
    assert torch.allclose(
        out.vectors["blocks.3.hook_resid_post"], m.weight @ v.vectors["blocks.1.hook_resid_post"]
    )
    with pytest.raises(FileExistsError):
        m.save(tmp_path / "map.safetensors")


def test_fit_map_between_tiny_models_reports_heldout_r2():
    src = sl.tiny_model(n_layers=4, d_model=64, seed=0)
    tgt = sl.tiny_model(n_layers=3, d_model=32, seed=1)
    texts = [f"Sentence number {i} talks about rivers, trains and gardens." for i in range(30)]
    m = fit_map(src, tgt, texts, source_layer=2)
    assert m.target_hook == "blocks.1.hook_resid_post"  # relative depth 2/3 -> 1.33 -> 1
    assert m.weight.shape == (32, 64)
    assert 0 < m.metadata["r2_fit"] <= 1 and m.metadata["r2_heldout"] <= m.metadata["r2_fit"]
    v = sl.SteeringVector({"blocks.2.hook_resid_post": torch.randn(64)})
    out = transfer_vector(v, tgt, via=m)
    assert out.d_model == 32


def test_aligned_positions_pair_equal_character_ends():
    tok = sl.tiny_model(n_layers=1).tokenizer
    text = "Unbelievable rivers, and 12345 numbers."
    s_ids, t_ids, s_pos, t_pos = aligned_positions(tok, tok, text)
    assert s_pos == t_pos == list(range(len(s_ids)))
    assert map_layer(29, 30, 18) == 17 and map_layer(0, 30, 18) == 0
