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

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlens.core.errors import HookError
from steerlens.core.hooks import (  # noqa: F401 - hook_to_direction re-exported
    direction_to_hook,
    hook_layer,
    hook_to_direction,
)
from steerlens.steering.vector import SteeringVector


def to_gguf(
    vector: SteeringVector,
    path: str | os.PathLike[str],
    *,
    model_hint: str | None = None,
    n_layers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a llama.cpp control-vector GGUF (what ``llama-cli --control-vector`` reads).

    Every slot of the model is written (zeros where the vector has none) when ``n_layers`` is
    given or in the vector's metadata, because llama.cpp keeps an earlier vector's values in
    the slots a later, shorter one does not cover. The steerlens metadata travels in a
    ``steerlens.metadata`` key; the round trip is exact for fp32 vectors.

    Examples:
        >>> import torch, tempfile, os
        >>> v = SteeringVector({"blocks.2.hook_resid_post": torch.ones(4)}, {"n_layers": 4})
        >>> to_gguf(v, os.path.join(tempfile.mkdtemp(), "v.gguf")).suffix
        '.gguf'
    """
    return vector.to_gguf(path, model_hint=model_hint, n_layers=n_layers, overwrite=overwrite)


def from_gguf(path: str | os.PathLike[str]) -> SteeringVector:
    """Read a llama.cpp control-vector GGUF (from steerlens, repeng or llama.cpp's tools).

    Examples:
        >>> import torch, tempfile, os
        >>> p = to_gguf(SteeringVector({"blocks.2.hook_resid_post": torch.ones(4)}),
        ...             os.path.join(tempfile.mkdtemp(), "v.gguf"), n_layers=3)
        >>> from_gguf(p).hook_names
        ['blocks.2.hook_resid_post']
    """
    return SteeringVector.from_gguf(path)


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
        layer = hook_layer(h)
        if layer is None or not h.endswith(".hook_resid_post"):
            raise HookError(f"hook {h!r}: steering-vectors only steers block outputs")
        layer_activations[layer] = v.detach().clone()
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
