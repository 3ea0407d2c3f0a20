"""Exchange vectors with the ecosystem: llama.cpp GGUF control vectors, repeng, steering-vectors.

**Layer numbering.** llama.cpp adds the control vector tensor ``direction.N`` to the output of
block ``N`` (0-based): its loader stores ``direction.N`` at slot ``N - 1`` of a buffer that has
no slot for block 0, and ``apply`` copies slot ``il - 1`` to layer ``il``, which is added to the
hidden state after block ``il``'s feed-forward residual. That is exactly
``blocks.N.hook_resid_post``, so steerlens writes ``blocks.N.hook_resid_post`` as
``direction.N``. llama.cpp never steers block 0, so a vector at ``blocks.0.hook_resid_post`` (or
at any non residual-stream hook) cannot be exported. repeng uses the same convention
(``ControlVector.directions[N]`` is added to the output of ``model.layers[N]``).

Examples:
    >>> import torch, tempfile, os, steerlens as sl
    >>> v = sl.SteeringVector({"blocks.3.hook_resid_post": torch.ones(8)}, {"method": "caa"})
    >>> path = os.path.join(tempfile.mkdtemp(), "v.gguf")
    >>> _ = to_gguf(v, path)
    >>> w = from_gguf(path)
    >>> torch.equal(w.vectors["blocks.3.hook_resid_post"], v.vectors["blocks.3.hook_resid_post"])
    True
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlens.errors import FileExistsSteerlensError, HookError, VectorFileError
from steerlens.fileio import atomic_write, jsonable
from steerlens.vector import SteeringVector

ARCH = "controlvector"
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def hook_to_direction(hook: str) -> int:
    """llama.cpp ``direction.N`` index for a steerlens hook name.

    Examples:
        >>> hook_to_direction("blocks.12.hook_resid_post")
        12
    """
    m = _RESID.match(hook)
    if not m:
        raise HookError(
            f"hook {hook!r} cannot be exported to llama.cpp: only residual-stream block outputs "
            "(blocks.N.hook_resid_post) have a control-vector slot"
        )
    layer = int(m.group(1))
    if layer == 0:
        raise HookError(
            "hook 'blocks.0.hook_resid_post' cannot be exported: llama.cpp never applies a "
            "control vector to block 0 (direction indices start at 1)"
        )
    return layer


def direction_to_hook(index: int) -> str:
    """steerlens hook name for llama.cpp's ``direction.N``."""
    return f"blocks.{index}.hook_resid_post"


def to_gguf(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    model_hint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a llama.cpp control-vector GGUF (what ``llama-cli --control-vector`` reads).

    Args:
        model_hint: architecture name stored as ``controlvector.model_hint`` (default: the
            vector's metadata ``architecture`` or ``"llama"``).

    The steerlens metadata travels in a ``steerlens.metadata`` key, so the round trip is exact
    for fp32 vectors (GGUF control vectors are fp32; other dtypes are cast, with a warning).

    Examples:
        >>> import torch, tempfile, os
        >>> v = SteeringVector({"blocks.2.hook_resid_post": torch.ones(4)})
        >>> to_gguf(v, os.path.join(tempfile.mkdtemp(), "v.gguf")).suffix
        '.gguf'
    """
    import gguf

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsSteerlensError(f"{path} exists; pass overwrite=True to replace it")
    directions = {hook_to_direction(h): v for h, v in vector.vectors.items()}
    hint = model_hint or str(vector.metadata.get("architecture") or "llama")
    if any(v.dtype != torch.float32 for v in vector.vectors.values()):
        warnings.warn("GGUF control vectors are float32; casting", stacklevel=2)

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string("steerlens.metadata", json.dumps(jsonable(vector.metadata)))
        for layer in sorted(directions):
            data = directions[layer].detach().cpu().to(torch.float32).numpy()
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(path, write)
    return path


def _field_str(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def from_gguf(path: str | os.PathLike[str]) -> SteeringVector:
    """Read a llama.cpp control-vector GGUF (from steerlens, repeng or llama.cpp's tools).

    Examples:
        >>> import torch, tempfile, os
        >>> p = to_gguf(SteeringVector({"blocks.2.hook_resid_post": torch.ones(4)}),
        ...             os.path.join(tempfile.mkdtemp(), "v.gguf"))
        >>> from_gguf(p).hook_names
        ['blocks.2.hook_resid_post']
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"{path}: no such file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the gguf package raises ValueError/struct.error/etc.
        raise VectorFileError(f"{path}: not a readable GGUF file ({e})") from e
    arch = _field_str(reader, "general.architecture")
    if arch != ARCH:
        raise VectorFileError(f"{path}: general.architecture is {arch!r}, not {ARCH!r}")
    vectors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        m = _DIRECTION.match(t.name)
        if not m:
            raise VectorFileError(f"{path}: unexpected tensor {t.name!r} (expected direction.N)")
        data = np.array(t.data, dtype=np.float32).reshape(-1)
        vectors[direction_to_hook(int(m.group(1)))] = torch.from_numpy(data.copy())
    if not vectors:
        raise VectorFileError(f"{path}: no direction.N tensors")
    meta: dict[str, Any] = {}
    raw = _field_str(reader, "steerlens.metadata")
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise VectorFileError(f"{path}: steerlens.metadata is not valid JSON ({e})") from e
    hint = _field_str(reader, f"{ARCH}.model_hint")
    if hint:
        meta.setdefault("architecture", hint)
    ordered = dict(sorted(vectors.items(), key=lambda kv: int(kv[0].split(".")[1])))
    try:
        return SteeringVector(ordered, meta)
    except Exception as e:
        raise VectorFileError(f"{path}: {e}") from e


# --------------------------------------------------------------------------- repeng
def to_repeng(vector: SteeringVector, model_type: str = "llama") -> Any:
    """Convert to a ``repeng.ControlVector`` (needs ``pip install repeng``)."""
    from repeng import ControlVector  # type: ignore[import-not-found]

    directions = {
        hook_to_direction(h): v.detach().cpu().float().numpy() for h, v in vector.vectors.items()
    }
    return ControlVector(model_type=model_type, directions=directions)


def from_repeng(control_vector: Any, metadata: dict[str, Any] | None = None) -> SteeringVector:
    """Convert a ``repeng.ControlVector`` (its ``directions`` dict of layer -> array)."""
    vectors = {
        direction_to_hook(int(layer)): torch.as_tensor(np.asarray(arr), dtype=torch.float32)
        for layer, arr in sorted(control_vector.directions.items())
    }
    meta = {"method": "repeng", "architecture": getattr(control_vector, "model_type", None)}
    meta.update(metadata or {})
    return SteeringVector(vectors, meta)


# --------------------------------------------------------------------------- steering-vectors
def to_steering_vectors(vector: SteeringVector) -> Any:
    """Convert to a ``steering_vectors.SteeringVector`` (layer -> tensor, block outputs)."""
    from steering_vectors import SteeringVector as SVSteeringVector  # type: ignore[import-not-found]

    layer_activations = {}
    for h, v in vector.vectors.items():
        m = _RESID.match(h)
        if not m:
            raise HookError(f"hook {h!r}: steering-vectors only steers block outputs")
        layer_activations[int(m.group(1))] = v.detach().clone()
    return SVSteeringVector(layer_activations=layer_activations, layer_type="decoder_block")


def from_steering_vectors(sv: Any, metadata: dict[str, Any] | None = None) -> SteeringVector:
    """Convert a ``steering_vectors.SteeringVector`` whose layer type is ``decoder_block``."""
    if getattr(sv, "layer_type", "decoder_block") != "decoder_block":
        raise HookError(f"only decoder_block vectors map to hook_resid_post, got {sv.layer_type!r}")
    vectors = {
        direction_to_hook(int(layer)): t.detach().clone().reshape(-1)
        for layer, t in sorted(sv.layer_activations.items())
    }
    meta = {"method": "steering-vectors"}
    meta.update(metadata or {})
    return SteeringVector(vectors, meta)
