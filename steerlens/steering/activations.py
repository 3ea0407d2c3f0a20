"""The one activations reader: a forward pass that keeps what chosen hook points saw.

CAA's and PCA's differences (:mod:`steerlens.methods.baselines`), projections
(:mod:`steerlens.analysis.geometry`), conditions (:mod:`steerlens.steering.conditional`),
difference-in-means directions (:mod:`steerlens.methods.directions`) and activation maps
(:mod:`steerlens.interop.transfer`) all read activations here and differ only in how they reduce
them.

Examples:
    >>> import torch, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2, d_model=16)
    >>> acts = read_activations(model, torch.tensor([[1, 2, 3]]), ["blocks.0.hook_resid_post"])
    >>> tuple(acts["blocks.0.hook_resid_post"].shape)
    (1, 3, 16)
    >>> sl.active_hooks(model)
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor


@torch.no_grad()
def read_activations(
    model: Any,
    ids: Tensor,
    hooks: Sequence[str],
    *,
    attention_mask: Tensor | None = None,
    stop_at_layer: int | None = None,
) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """Run ``model`` on token ``ids`` ``[batch, pos]`` once and return each hook's activation,
    detached, under the name asked for (an alias reads under the name given).

    Args:
        attention_mask: ``[batch, pos]`` (1 for real tokens) for padded batches.
        stop_at_layer: stop the forward before this block (every hook must be below it).
    """
    seen: dict[str, Tensor] = {}

    def grabber(name: str) -> Any:
        def grab(act: Tensor, hook: Any) -> None:
            seen[name] = act.detach()

        return grab

    kwargs: dict[str, Any] = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.long()
    if stop_at_layer is not None:
        kwargs["stop_at_layer"] = stop_at_layer
    model.run_with_hooks(ids, fwd_hooks=[(h, grabber(h)) for h in hooks], **kwargs)
    return seen


__all__ = ["read_activations"]
