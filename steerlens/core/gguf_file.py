"""Ground floor: llama.cpp control-vector GGUF files, as ``{hook_name: tensor}`` and metadata.

llama.cpp adds ``direction.N`` to the output of block N (``blocks.N.hook_resid_post``; see
:mod:`steerlens.core.hooks`). When a later control vector covers fewer layers than an earlier one,
llama.cpp keeps the earlier vector's values in the slots the later one does not cover, so the
writer pads every layer the model has (``direction.1`` .. ``direction.{n_layers-1}``) with zeros
when ``n_layers`` is known, and records which slots are padding so the reader drops them again
(the round trip is exact).

Examples:
    >>> import os, tempfile, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "v.gguf")
    >>> _ = write_control_vector(p, {"blocks.2.hook_resid_post": torch.ones(4)}, {}, n_layers=4)
    >>> vectors, meta = read_control_vector(p)
    >>> list(vectors), meta["architecture"]
    (['blocks.2.hook_resid_post'], 'llama')
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlens.core.errors import FileExistsSteerlensError, VectorFileError
from steerlens.core.fileio import atomic_write, jsonable
from steerlens.core.hooks import direction_to_hook, hook_to_direction

ARCH = "controlvector"
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def write_control_vector(
    path: str | os.PathLike[str],
    vectors: Mapping[str, Tensor],
    metadata: Mapping[str, Any],
    *,
    model_hint: str | None = None,
    n_layers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``{blocks.N.hook_resid_post: tensor}`` as a llama.cpp control-vector GGUF.

    Args:
        model_hint: ``controlvector.model_hint`` (default: ``metadata["architecture"]`` or
            ``"llama"``).
        n_layers: the model's number of blocks; every slot 1..n_layers-1 is written (zeros
            where the vector has none). Default: ``metadata["n_layers"]``; when unknown only
            the vector's own slots are written, with a warning.
    """
    import gguf

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsSteerlensError(f"{path} exists; pass overwrite=True to replace it")
    directions = {hook_to_direction(h): v for h, v in vectors.items()}
    width = int(next(iter(vectors.values())).shape[0])
    n = n_layers if n_layers is not None else metadata.get("n_layers")
    padded: list[int] = []
    if n is None:
        warnings.warn(
            "the model's number of layers is unknown (pass n_layers=): only the vector's own "
            "slots are written, and llama.cpp keeps an earlier vector's values in the others",
            stacklevel=3,
        )
    else:
        if max(directions) >= int(n):
            raise VectorFileError(f"n_layers={n} but the vector has direction.{max(directions)}")
        padded = [i for i in range(1, int(n)) if i not in directions]
        for i in padded:
            directions[i] = torch.zeros(width)
    hint = model_hint or str(metadata.get("architecture") or "llama")
    if any(v.dtype != torch.float32 for v in vectors.values()):
        warnings.warn("GGUF control vectors are float32; casting", stacklevel=3)

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string("steerlens.metadata", json.dumps(jsonable(dict(metadata))))
        writer.add_string("steerlens.padded", json.dumps(padded))
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


def read_control_vector(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``({hook_name: tensor}, metadata)`` of a llama.cpp control-vector GGUF (from steerlens,
    repeng or llama.cpp's tools); slots steerlens wrote as padding are left out."""
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
    try:
        padded = set(json.loads(_field_str(reader, "steerlens.padded") or "[]"))
    except json.JSONDecodeError as e:
        raise VectorFileError(f"{path}: steerlens.padded is not valid JSON ({e})") from e
    vectors: dict[str, Tensor] = {}
    for t in reader.tensors:
        m = _DIRECTION.match(t.name)
        if not m:
            raise VectorFileError(f"{path}: unexpected tensor {t.name!r} (expected direction.N)")
        if int(m.group(1)) in padded:
            continue
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
    return ordered, meta
