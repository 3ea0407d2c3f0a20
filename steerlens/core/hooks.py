"""Ground floor: hook names and small model helpers, shared by every module.

Hook names follow TransformerLens: ``blocks.{L}.hook_resid_{pre,mid,post}``. llama.cpp's
control-vector slot ``direction.N`` is the output of block N, ``blocks.N.hook_resid_post``
(checked against llama.cpp: a vector exported there moves logits the same way).

Examples:
    >>> hook_layer("blocks.12.hook_resid_post"), hook_to_direction("blocks.12.hook_resid_post")
    (12, 12)
    >>> direction_to_hook(3)
    'blocks.3.hook_resid_post'
"""

from __future__ import annotations

import re
from typing import Any

import torch

from steerlens.core.errors import ConfigError, HookError

_RESID_POST = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


def n_layers(model: Any) -> int:
    """Number of transformer blocks of a hooked model."""
    return int(model.cfg.n_layers)


def d_model(model: Any) -> int:
    """Residual-stream width of a hooked model."""
    return int(model.cfg.d_model)


def model_dtype(model: Any) -> torch.dtype:
    """dtype of a model's parameters (fp32 for a model without any)."""
    try:
        return next(model.parameters()).dtype
    except StopIteration:  # pragma: no cover
        return torch.float32


def model_name(model: Any) -> str:
    """A readable name for a hooked model (its ``cfg.model_name``)."""
    return str(getattr(model.cfg, "model_name", None) or type(model).__name__)


def resolve_layer(model: Any, layer: int) -> int:
    """Turn a layer index into ``0 <= L < n_layers``; negative indices count from the end.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> resolve_layer(m, -1)
        1
        >>> resolve_layer(m, 5)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        HookError: layer 5 is out of range for a model with 2 layers (valid: -2..1)
    """
    n = n_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise HookError(f"layer must be an int, got {layer!r}")
    if not -n <= layer < n:
        raise HookError(
            f"layer {layer} is out of range for a model with {n} layers (valid: {-n}..{n - 1})"
        )
    return layer % n


HOOK_SITES = ("resid_post", "resid_pre", "resid_mid")


def check_hook_site(hook: str) -> str:
    """``"resid_post"`` -> ``"post"`` (the ``where`` of :func:`resid_hook`), checking the name.

    Examples:
        >>> check_hook_site("resid_pre")
        'pre'
    """
    if hook not in HOOK_SITES:
        raise ConfigError(f"hook must be one of {', '.join(HOOK_SITES)}, got {hook!r}")
    return hook.removeprefix("resid_")


def resid_hook(model: Any, layer: int, where: str = "post") -> str:
    """Hook name of the residual stream at a block: ``blocks.{L}.hook_resid_{where}``.

    Examples:
        >>> import steerlens as sl
        >>> resid_hook(sl.tiny_model(n_layers=2), -1, "pre")
        'blocks.1.hook_resid_pre'
    """
    if where not in {"pre", "mid", "post"}:
        raise HookError(f"where must be 'pre', 'mid' or 'post', got {where!r}")
    return f"blocks.{resolve_layer(model, layer)}.hook_resid_{where}"


def hook_layer(hook_name: str) -> int | None:
    """The block index in a hook name (``blocks.12.hook_resid_post`` -> 12), else None.

    Examples:
        >>> hook_layer("blocks.12.hook_resid_post"), hook_layer("hook_embed")
        (12, None)
    """
    parts = hook_name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def hook_to_direction(hook: str) -> int:
    """llama.cpp ``direction.N`` index for a steerlens hook name.

    Examples:
        >>> hook_to_direction("blocks.12.hook_resid_post")
        12
    """
    m = _RESID_POST.match(hook)
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


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def pad_token_id(model: Any) -> int:
    """The id used to pad rows: the tokenizer's pad token, else its EOS token."""
    tok = model.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
