"""The model's own module tree under a ``TransformerBridge``, for generation at native speed.

A ``TransformerBridge`` wraps each Hugging Face module in a bridge component with hook points
and switches the model to eager attention; generating through it costs 1.2-2x what the Hugging
Face model costs (measured in ``docs/performance.md``). :func:`native_model` rebuilds the
plain module tree: every bridge component replaced by the module it wraps
(``_original_component``), the parameters shared, not copied, and the model's own attention
kernel (SDPA) restored on a copy of its config. Steering hooks at ``blocks.N.hook_resid_post``
(the output of block N) and ``blocks.N.hook_resid_pre`` (its input) then become plain PyTorch
forward hooks on block N.

The equivalence is checked once per model and hook site (:func:`native_sites`): the native
tree's logits must equal the bridge's, unsteered and with a random vector added at a middle
block, on a left-padded probe batch. Where a check fails, or a hook has no native equivalent,
or the bridge carries hooks of the user's own (which the native tree would not run), steerlens
generates through the bridge as before.

Examples:
    >>> import torch, steerlens as sl
    >>> m = sl.tiny_model(n_layers=2)
    >>> nat = native_model(m)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> torch.allclose(nat.module(ids).logits, m(ids), atol=1e-5)
    True
    >>> sorted(native_sites(m))
    ['post', 'pre']
"""

from __future__ import annotations

import contextlib
import copy
import re
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steerlens.core.hooks import model_device, model_dtype
from steerlens.steering.hookpoints import CallTracker, SteerHook
from steerlens.steering.vector import SteeringVector

_SITE = re.compile(r"^blocks\.(\d+)\.hook_resid_(post|pre)$")


@dataclass(frozen=True)
class NativeModel:
    """The unwrapped Hugging Face model and its blocks, in the bridge's block order."""

    module: Any
    blocks: tuple[torch.nn.Module, ...]


def _unwrap(mod: torch.nn.Module, memo: dict[int, torch.nn.Module]) -> torch.nn.Module:
    if id(mod) in memo:
        return memo[id(mod)]
    inner = getattr(mod, "_original_component", None)
    if isinstance(inner, torch.nn.Module):
        out = _unwrap(inner, memo)
        memo[id(mod)] = out
        return out
    new = copy.copy(mod)  # shares parameters and buffers; children are replaced below
    memo[id(mod)] = new
    new._modules = {k: None if c is None else _unwrap(c, memo) for k, c in mod._modules.items()}
    new._forward_hooks = OrderedDict()
    new._forward_pre_hooks = OrderedDict()
    new._forward_hooks_with_kwargs = OrderedDict()
    new._forward_pre_hooks_with_kwargs = OrderedDict()
    new._forward_hooks_always_called = OrderedDict()
    return new


_NATIVE: weakref.WeakKeyDictionary[Any, NativeModel | None] = weakref.WeakKeyDictionary()
_SITES: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def native_model(model: Any) -> NativeModel | None:
    """The plain module tree under a bridge (cached per model), or None if there is none.

    The tree shares the bridge's parameters: nothing is copied, and training the bridge's
    weights changes it too.
    """
    try:
        return _NATIVE[model]
    except (KeyError, TypeError):
        pass
    out: NativeModel | None = None
    original = getattr(model, "original_model", None)
    blocks = getattr(model, "blocks", None)
    if isinstance(original, torch.nn.Module) and blocks is not None:
        memo: dict[int, torch.nn.Module] = {}
        module = _unwrap(original, memo)
        native_blocks = tuple(memo.get(id(b)) for b in blocks)
        if all(b is not None for b in native_blocks) and hasattr(module, "generate"):
            _own_attention(module)
            out = NativeModel(module, native_blocks)  # type: ignore[arg-type]
    with contextlib.suppress(TypeError):
        _NATIVE[model] = out
    return out


def _own_attention(module: torch.nn.Module) -> None:
    """Give the native tree the model's own attention kernel back.

    TransformerLens switches the wrapped model's config to eager attention (it reads attention
    patterns); the native tree gets a copy of each config with SDPA where the model class
    supports it, as ``from_pretrained`` would choose. The bridge's own config is untouched.
    """
    if not getattr(type(module), "_supports_sdpa", False):
        return
    copies: dict[int, Any] = {}
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or not hasattr(cfg, "_attn_implementation"):
            continue
        if id(cfg) not in copies:
            new = copy.deepcopy(cfg)
            try:
                new._attn_implementation = "sdpa"
            except (AttributeError, ValueError):  # pragma: no cover - read-only on some configs
                return
            copies[id(cfg)] = new
        m.config = copies[id(cfg)]


class _PostHook:
    """Forward hook on a native block: its output is ``blocks.N.hook_resid_post``."""

    def __init__(self, steer: SteerHook) -> None:
        self.steer = steer

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self.steer(output[0], None), *output[1:])
        return self.steer(output, None)


class _PreHook:
    """Forward pre-hook on a native block: its ``hidden_states`` is ``hook_resid_pre``."""

    def __init__(self, steer: SteerHook) -> None:
        self.steer = steer

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (self.steer(args[0], None), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = self.steer(kwargs["hidden_states"], None)
        return args, kwargs


@contextlib.contextmanager
def native_hooks(native: NativeModel, hooks: Sequence[tuple[str, SteerHook]]) -> Iterator[Any]:
    """Attach steering hooks (residual-stream hook names only) to the native tree for the
    ``with`` block; they are removed on exit, also when the body raises."""
    handles = []
    try:
        if hooks:
            handles.append(
                native.module.register_forward_pre_hook(
                    CallTracker([h for _, h in hooks]), with_kwargs=True
                )
            )
        for name, steer in hooks:
            m = _SITE.match(name)
            if m is None:
                raise ValueError(f"hook {name!r} has no native equivalent")
            block = native.blocks[int(m.group(1))]
            if m.group(2) == "post":
                handles.append(block.register_forward_hook(_PostHook(steer)))
            else:
                handles.append(block.register_forward_pre_hook(_PreHook(steer), with_kwargs=True))
        yield native.module
    finally:
        for h in handles:
            h.remove()


def _probe_logits(module: Any, ids: Tensor, mask: Tensor) -> Tensor:
    """Logits at the attended positions only (padding rows differ between attention kernels
    and never matter)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = module(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    return logits[mask.bool()]


def native_sites(model: Any) -> frozenset[str]:
    """The hook sites (``"post"``, ``"pre"``) at which the native tree equals the bridge,
    checked once per model on a left-padded probe batch (logits within 1e-4 of the bridge's
    scale in fp32, 2e-2 in half precision), unsteered and steered at a middle block."""
    try:
        return _SITES[model]
    except (KeyError, TypeError):
        pass
    sites: set[str] = set()
    native = native_model(model)
    if native is not None:
        device = model_device(model)
        vocab, width = int(model.cfg.d_vocab), int(model.cfg.d_model)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (2, 7), generator=g).to(device)
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        fp32 = model_dtype(model) in (torch.float32, torch.float64)
        layer = int(model.cfg.n_layers) // 2
        try:
            with torch.no_grad():
                ref = _probe_logits(model.original_model, ids, mask)
                tol = (1e-4 if fp32 else 2e-2) * max(1.0, float(ref.abs().max()))
                if torch.allclose(_probe_logits(native.module, ids, mask), ref, atol=tol):
                    v = torch.randn(width, generator=g) * 4
                    for site in ("post", "pre"):
                        vec = SteeringVector({f"blocks.{layer}.hook_resid_{site}": v})
                        with vec.apply(model, 1.0):
                            want = _probe_logits(model.original_model, ids, mask)
                        with native_hooks(native, vec.fwd_hooks(1.0)):
                            got = _probe_logits(native.module, ids, mask)
                        if torch.allclose(got, want, atol=tol) and not torch.allclose(
                            want, ref, atol=tol
                        ):
                            sites.add(site)
        except Exception:  # noqa: BLE001 - any failure means: generate through the bridge
            sites = set()
    out = frozenset(sites)
    with contextlib.suppress(TypeError):
        _SITES[model] = out
    return out


def can_run_native(model: Any, hook_names: Sequence[str]) -> bool:
    """Whether steering at ``hook_names`` can run on the native tree: every hook name has a
    checked equivalent and the bridge carries no hooks of its own right now.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> can_run_native(m, ["blocks.1.hook_resid_post"])
        True
        >>> can_run_native(m, ["blocks.1.hook_resid_mid"])  # no native equivalent
        False
    """
    sites = native_sites(model)
    for name in hook_names:
        m = _SITE.match(name)
        if m is None or m.group(2) not in sites:
            return False
    return not any(hp.has_hooks() for hp in model.hook_dict.values())


__all__ = ["NativeModel", "can_run_native", "native_hooks", "native_model", "native_sites"]
