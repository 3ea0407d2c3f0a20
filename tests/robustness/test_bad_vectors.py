"""Bad vector files, hook names, multipliers and layer indices."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import steerlens as sl
from steerlens.core.errors import (
    ConfigError,
    HookError,
    SteerlensError,
    VectorError,
    VectorFileError,
)

H = "blocks.1.hook_resid_post"


def _raw_safetensors(path, header: dict, payload: bytes = b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + payload)


def test_not_safetensors(tmp_path):
    p = tmp_path / "v.safetensors"
    p.write_text("hello, I am a text file")
    with pytest.raises(VectorFileError, match=r"v.safetensors: not a valid safetensors file"):
        sl.SteeringVector.load(p)


def test_pickle_file_is_not_unpickled(tmp_path):
    p = tmp_path / "v.pt"
    torch.save({H: torch.zeros(4)}, p)  # a pickle archive
    with pytest.raises(VectorFileError, match=r"v.pt: not a valid safetensors file"):
        sl.SteeringVector.load(p)


def test_tampered_header(tmp_path):
    p = tmp_path / "v.safetensors"
    sl.SteeringVector({H: torch.ones(8)}).save(p)
    raw = bytearray(p.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8 : 8 + n].decode().replace('"data_offsets":[0,32]', '"data_offsets":[0,64]')
    assert len(header) == n
    p.write_bytes(bytes(raw[:8]) + header.encode() + bytes(raw[8 + n :]))
    with pytest.raises(VectorFileError, match=r"v.safetensors: not a valid safetensors file"):
        sl.SteeringVector.load(p)
    _raw_safetensors(p, {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    with pytest.raises(VectorFileError, match="not a valid safetensors"):
        sl.SteeringVector.load(p)


def test_bad_metadata_json(tmp_path):
    p = tmp_path / "v.safetensors"
    save_file({H: torch.ones(4)}, p, metadata={"steerlens_metadata": "{not json"})
    with pytest.raises(VectorFileError, match=r"v.safetensors: metadata header is not valid JSON"):
        sl.SteeringVector.load(p)
    save_file({H: torch.ones(4)}, p, metadata={"steerlens_format": "99"})
    with pytest.raises(VectorFileError, match=r"unsupported steerlens format version '99'"):
        sl.SteeringVector.load(p)


@pytest.mark.parametrize(
    "tensor,message",
    [
        (torch.ones(4, dtype=torch.int32), r"hook 'blocks.1.hook_resid_post': expected a floating"),
        (
            torch.ones(2, 4),
            r"hook 'blocks.1.hook_resid_post': expected shape \[d_model\], got \(2, 4\)",
        ),
        (torch.tensor([1.0, float("nan")]), r"hook 'blocks.1.hook_resid_post': .*NaN or inf"),
        (torch.tensor([1.0, float("inf")]), r"NaN or inf"),
    ],
)
def test_bad_values_in_file(tmp_path, tensor, message):
    p = tmp_path / "v.safetensors"
    save_file({H: tensor}, p)
    with pytest.raises(VectorFileError, match=message) as info:
        sl.SteeringVector.load(p)
    assert "v.safetensors" in str(info.value)


def test_mixed_widths_in_file(tmp_path):
    p = tmp_path / "v.safetensors"
    save_file({H: torch.ones(4), "blocks.2.hook_resid_post": torch.ones(5)}, p)
    with pytest.raises(VectorFileError, match="share one d_model"):
        sl.SteeringVector.load(p)


def test_vector_from_other_d_model(tiny, tmp_path):
    p = tmp_path / "v.safetensors"
    sl.SteeringVector({H: torch.ones(576)}, {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}).save(
        p
    )
    v = sl.SteeringVector.load(p)
    with pytest.raises(VectorError, match=r"d_model=576 but the model .* has d_model=64"):
        with v.apply(tiny):
            pass
    assert sl.active_hooks(tiny) == []


def test_unknown_hook(tiny):
    v = sl.SteeringVector({"blocks.1.hook_resid_psot": torch.ones(64)})
    with pytest.raises(HookError, match=r"hook 'blocks.1.hook_resid_psot' does not exist"):
        with v.apply(tiny):
            pass
    with pytest.raises(HookError):
        sl.caa_vector(tiny, sl.load_pairs(sl.demo_data_path("ab"))[:2], layers=7)


@pytest.mark.parametrize("mult", [float("nan"), float("inf"), -float("inf"), "two", None])
def test_bad_multipliers(tiny, mult):
    v = sl.SteeringVector({H: torch.ones(64)})
    with pytest.raises(ConfigError, match="multiplier must be"):
        with v.apply(tiny, mult):  # type: ignore[arg-type]
            pass
    with pytest.raises(ConfigError):
        v * mult  # type: ignore[operator]
    assert sl.active_hooks(tiny) == []


@pytest.mark.parametrize("layer", [4, -5, 100])
def test_layer_out_of_range(tiny, layer):
    with pytest.raises(HookError, match=rf"layer {layer} is out of range .* \(valid: -4..3\)"):
        sl.train_bipo(tiny, sl.load_pairs(sl.demo_data_path("train"))[:2], layers=layer)
    with pytest.raises(HookError):
        sl.caa_vector(tiny, sl.load_pairs(sl.demo_data_path("ab"))[:2], layers=layer)


def test_negative_layers_count_from_end(tiny):
    v = sl.caa_vector(tiny, sl.load_pairs(sl.demo_data_path("ab"))[:2], layers=-1)
    assert v.hook_names == ["blocks.3.hook_resid_post"]


def test_every_error_is_a_steerlens_error():
    for cls in (VectorFileError, VectorError, HookError, ConfigError):
        assert issubclass(cls, SteerlensError) and issubclass(cls, ValueError)
    assert issubclass(sl.ModelLoadError, OSError) and issubclass(sl.CheckpointError, OSError)
