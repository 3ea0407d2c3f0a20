from __future__ import annotations

import numpy as np
import pytest
import torch

import steerlens as sl
from steerlens.core.errors import FileExistsSteerlensError, HookError, VectorFileError
from steerlens.interop.converters import direction_to_hook, from_gguf, hook_to_direction, to_gguf


def test_round_trip_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    v = sl.SteeringVector(
        {f"blocks.{i}.hook_resid_post": torch.randn(32, generator=g) for i in (3, 1, 12)},
        {"method": "bipo", "config": {"lr": 0.01}},
    )
    path = to_gguf(v, tmp_path / "v.gguf")
    w = sl.SteeringVector.from_gguf(path)
    assert set(w.hook_names) == set(v.hook_names)
    for h in v.hook_names:
        assert torch.equal(v.vectors[h], w.vectors[h])
    assert w.metadata["method"] == "bipo" and w.metadata["config"] == {"lr": 0.01}
    assert w.metadata["architecture"] == "llama"


def test_reads_independently_written_control_vector(tmp_path):
    """A file written directly with the gguf writer, as repeng does."""
    import gguf

    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "mistral")
    writer.add_uint32("controlvector.layer_count", 2)
    a = np.arange(16, dtype=np.float32)
    b = -np.ones(16, dtype=np.float32)
    writer.add_tensor("direction.5", a)
    writer.add_tensor("direction.2", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    v = from_gguf(path)
    assert v.hook_names == ["blocks.2.hook_resid_post", "blocks.5.hook_resid_post"]
    assert torch.equal(v.vectors["blocks.5.hook_resid_post"], torch.from_numpy(a))
    assert v.metadata["architecture"] == "mistral"


def test_written_file_has_llama_cpp_layout(tmp_path):
    import gguf

    v = sl.SteeringVector({"blocks.7.hook_resid_post": torch.ones(8)})
    path = to_gguf(v, tmp_path / "x.gguf", model_hint="llama")
    r = gguf.GGUFReader(str(path))
    assert [t.name for t in r.tensors] == ["direction.7"]
    f = r.fields["general.architecture"]
    assert bytes(f.parts[f.data[0]]).decode() == "controlvector"
    lc = r.fields["controlvector.layer_count"]
    assert int(lc.parts[lc.data[0]][0]) == 1
    assert r.tensors[0].tensor_type == gguf.GGMLQuantizationType.F32


def test_layer_convention():
    # llama.cpp adds direction.N after block N (0-based); block 0 is never steered.
    assert hook_to_direction("blocks.12.hook_resid_post") == 12
    assert direction_to_hook(12) == "blocks.12.hook_resid_post"
    with pytest.raises(HookError, match="block 0"):
        hook_to_direction("blocks.0.hook_resid_post")
    with pytest.raises(HookError, match="only residual-stream block outputs"):
        hook_to_direction("blocks.3.hook_resid_mid")


def test_export_errors(tmp_path):
    v = sl.SteeringVector({"blocks.3.attn.hook_z": torch.ones(4)})
    with pytest.raises(HookError, match="blocks.3.attn.hook_z"):
        to_gguf(v, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()
    ok = sl.SteeringVector({"blocks.3.hook_resid_post": torch.ones(4)})
    to_gguf(ok, tmp_path / "b.gguf")
    with pytest.raises(FileExistsSteerlensError):
        to_gguf(ok, tmp_path / "b.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(VectorFileError, match="junk.gguf"):
        from_gguf(tmp_path / "junk.gguf")


def test_exported_vector_steers_the_same_stream(tiny, tmp_path):
    """A vector that went through GGUF steers the model exactly like the original."""
    g = torch.Generator().manual_seed(1)
    v = sl.SteeringVector({"blocks.2.hook_resid_post": torch.randn(64, generator=g)})
    w = from_gguf(to_gguf(v, tmp_path / "v.gguf"))
    x = torch.tensor([[1, 2, 3, 4, 5]])
    with v.apply(tiny, 2.0):
        a = tiny(x)
    with w.apply(tiny, 2.0):
        b = tiny(x)
    assert torch.equal(a, b)


def test_steering_vectors_round_trip():
    from steering_vectors import SteeringVector as SV

    from steerlens.interop.converters import from_steering_vectors, to_steering_vectors

    v = sl.SteeringVector({"blocks.4.hook_resid_post": torch.arange(6.0)}, {"method": "caa"})
    sv = to_steering_vectors(v)
    assert isinstance(sv, SV) and sv.layer_type == "decoder_block"
    assert torch.equal(sv.layer_activations[4], torch.arange(6.0))
    back = from_steering_vectors(sv)
    assert back.allclose(v, atol=0, rtol=0)
    with pytest.raises(HookError):
        to_steering_vectors(sl.SteeringVector({"blocks.1.hook_resid_mid": torch.ones(3)}))


def test_repeng_shaped_object_converts():
    """repeng itself pins numpy<2 and cannot import here; its ControlVector is a dataclass of
    model_type and directions {layer: ndarray}, which from_repeng reads."""
    from dataclasses import dataclass

    from steerlens.interop.converters import from_repeng

    @dataclass
    class ControlVector:
        model_type: str
        directions: dict

    cv = ControlVector("llama", {3: np.ones(4, dtype=np.float32), 1: np.zeros(4, dtype=np.float32)})
    v = from_repeng(cv)
    assert v.hook_names == ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    assert v.metadata["architecture"] == "llama"
