"""Vectors that travel: carry a steering vector from one model's residual stream to another's.

The BiPO paper's third finding is that a vector trained on Llama-2-7b-chat steers its
fine-tunes (same width, same layers): there the vector itself is the transfer. Between models
of different widths a map between residual streams is needed: Oozeer et al. (ICML 2025) learn
one from source layer X to target layer Y on paired activations; "Transferring features across
language models with model stitching" (2025) fits affine maps. steerlens fits

* ``"ridge"`` (default): affine least squares ``y = W x + b`` with a ridge penalty on W,
* ``"procrustes"``: orthogonal Procrustes on centred activations (W with orthonormal rows or
  columns, W = U V^T from the SVD of Y^T X: Schönemann 1966), scaled by the ratio of norms,

on activations of both models over the same texts, paired at *aligned token ends* (positions
where both tokenizers end a token at the same character of the text; identical tokenizers pair
every token). The fit's quality is its explained variance (R^2) on held-out texts. A vector,
being a direction (a difference of activations), maps through the linear part only:
``v_target = W v_source``.

Examples:
    >>> import torch
    >>> m = ActivationMap("blocks.3.hook_resid_post", "blocks.5.hook_resid_post",
    ...                   torch.eye(4) * 2, torch.zeros(4))
    >>> import steerlens as sl
    >>> v = sl.SteeringVector({"blocks.3.hook_resid_post": torch.ones(4)})
    >>> m.map_vector(v).vectors
    {'blocks.5.hook_resid_post': tensor([2., 2., 2., 2.])}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.errors import ConfigError, VectorError, VectorFileError
from steerlens.core.fileio import jsonable, read_safetensors, write_safetensors
from steerlens.core.hooks import hook_layer, model_device, n_layers
from steerlens.steering.activations import read_activations
from steerlens.steering.vector import SteeringVector

FORMAT = "steerlens-activation-map"


def map_layer(layer: int, source_layers: int, target_layers: int, how: str = "relative") -> int:
    """The target layer for a source layer: ``"same"`` index or the same ``"relative"``
    depth (``round(layer * (T - 1) / (S - 1))``).

    Examples:
        >>> map_layer(12, 30, 18), map_layer(12, 30, 18, "same")
        (7, 12)
    """
    if how == "same":
        if layer >= target_layers:
            raise ConfigError(f"layer {layer} does not exist in a {target_layers}-layer target")
        return layer
    if how == "relative":
        if source_layers <= 1:
            return 0
        return int(round(layer * (target_layers - 1) / (source_layers - 1)))
    raise ConfigError(f"how must be 'same' or 'relative', got {how!r}")


@dataclass
class ActivationMap:
    """An affine map from a source hook's activations to a target hook's: ``W x + b``.

    Attributes:
        source_hook, target_hook: hook names in the two models.
        weight: ``[d_target, d_source]``; bias: ``[d_target]``.
        metadata: fit details (method, alpha, R^2 on held-out texts, models, texts).

    Examples:
        >>> m = ActivationMap("blocks.0.hook_resid_post", "blocks.0.hook_resid_post",
        ...                   torch.eye(2), torch.ones(2))
        >>> m(torch.tensor([1.0, 2.0]))
        tensor([2., 3.])
    """

    source_hook: str
    target_hook: str
    weight: Float[Tensor, "d_target d_source"]
    bias: Float[Tensor, " d_target"]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise ConfigError(
                f"weight [d_t, d_s] and bias [d_t] expected, got {w.shape}, {b.shape}"
            )

    def __call__(self, x: Float[Tensor, "... d_source"]) -> Float[Tensor, "... d_target"]:
        return x @ self.weight.T.to(x) + self.bias.to(x)

    def map_vector(self, vector: SteeringVector) -> SteeringVector:
        """The vector at ``target_hook``: ``W v`` (a direction maps through the linear part)."""
        if self.source_hook not in vector.vectors:
            raise VectorError(
                f"the map reads {self.source_hook!r}; the vector has {', '.join(vector.vectors)}"
            )
        v = vector.vectors[self.source_hook]
        meta = dict(vector.metadata)
        meta.update(transferred_from=self.source_hook, transfer=jsonable(self.metadata))
        meta.pop("d_model", None)
        return SteeringVector({self.target_hook: (self.weight.to(v) @ v)}, meta)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a safetensors file, atomically; :meth:`load` round-trips it bit for bit."""
        header = {"steerlens_format": FORMAT, "source_hook": self.source_hook,
                  "target_hook": self.target_hook,
                  "steerlens_metadata": json.dumps(jsonable(self.metadata))}  # fmt: skip
        return write_safetensors(path, {"weight": self.weight, "bias": self.bias}, header,
                                 overwrite=overwrite)  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ActivationMap:
        """Read a map written by :meth:`save` (nothing is unpickled)."""
        tensors, header = read_safetensors(path, VectorFileError, "a valid safetensors file")
        if header.get("steerlens_format") != FORMAT or set(tensors) != {"weight", "bias"}:
            raise VectorFileError(f"{path}: not a steerlens activation map")
        try:
            meta = json.loads(header.get("steerlens_metadata", "{}"))
            return cls(header["source_hook"], header["target_hook"], tensors["weight"],
                       tensors["bias"], meta)  # fmt: skip
        except (KeyError, json.JSONDecodeError, ConfigError) as e:
            raise VectorFileError(f"{path}: {e}") from e


def fit_affine(
    x: Float[Tensor, "n d_source"],
    y: Float[Tensor, "n d_target"],
    *,
    method: Literal["ridge", "procrustes"] = "ridge",
    alpha: float = 1e-2,
) -> tuple[Tensor, Tensor]:
    """``(W, b)`` with ``y ~ W x + b``, in float64 then fp32.

    ``"ridge"`` minimises ``|Y - X W^T - b|^2 + alpha n |W|^2`` (the bias unpenalised:
    both sides centred). ``"procrustes"``: ``W = s U V^T`` from the SVD ``U S V^T`` of
    ``Yc^T Xc`` (orthonormal rows or columns), ``s = |Yc| / |Xc|``, ``b = mean y - W mean x``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=g)
        >>> a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
        >>> w, b = fit_affine(x, x @ a.T + 0.5, alpha=0.0)
        >>> torch.allclose(w, a, atol=1e-5), torch.allclose(b, torch.full((2,), 0.5), atol=1e-5)
        (True, True)
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"paired activations expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ConfigError("fitting a map needs at least 2 paired activations")
    X, Y = x.double(), y.double()
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    if method == "ridge":
        n, d = Xc.shape
        gram = Xc.T @ Xc + alpha * n * torch.eye(d, dtype=torch.float64)
        w = torch.linalg.solve(gram, Xc.T @ Yc).T
    elif method == "procrustes":
        u, _, vh = torch.linalg.svd(Yc.T @ Xc, full_matrices=False)
        w = (Yc.norm() / Xc.norm().clamp_min(1e-30)) * (u @ vh)
    else:
        raise ConfigError(f"method must be 'ridge' or 'procrustes', got {method!r}")
    b = my - w @ mx
    return w.float(), b.float()


def explained_variance(pred: Float[Tensor, "n d"], y: Float[Tensor, "n d"]) -> float:
    """R^2 over all coordinates: ``1 - sum (y - pred)^2 / sum (y - mean y)^2``.

    Examples:
        >>> y = torch.tensor([[1.0], [2.0], [3.0]])
        >>> explained_variance(y, y), explained_variance(torch.full((3, 1), 2.0), y)
        (1.0, 0.0)
    """
    y64, p64 = y.double(), pred.double()
    resid = ((y64 - p64) ** 2).sum()
    total = ((y64 - y64.mean(0)) ** 2).sum()
    return float(1 - resid / total.clamp_min(1e-30))


def aligned_positions(
    source_tokenizer: Any, target_tokenizer: Any, text: str
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Token ids of ``text`` under both tokenizers and the token indices (source, target) at
    which both end a token at the same character: the activations paired there have read
    exactly the same text.

    Examples:
        >>> import steerlens as sl
        >>> tok = sl.tiny_model(n_layers=1).tokenizer
        >>> s_ids, t_ids, s_pos, t_pos = aligned_positions(tok, tok, "Hello there.")
        >>> s_pos == t_pos == list(range(len(s_ids)))
        True
    """

    def ends(tok: Any) -> tuple[list[int], dict[int, int]]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), {e: i for i, (_, e) in enumerate(enc["offset_mapping"])}

    s_ids, s_end = ends(source_tokenizer)
    t_ids, t_end = ends(target_tokenizer)
    common = sorted(set(s_end) & set(t_end))
    return s_ids, t_ids, [s_end[c] for c in common], [t_end[c] for c in common]


@torch.no_grad()
def _activations(model: Any, ids: list[int], hooks: Sequence[str]) -> dict[str, Tensor]:
    x = torch.tensor([ids], device=model_device(model))
    seen = read_activations(model, x, hooks)
    return {h: a[0].float().cpu() for h, a in seen.items()}


def paired_activations(
    source_model: Any,
    target_model: Any,
    texts: Sequence[str],
    *,
    source_hook: str | Sequence[str],
    target_hook: str | Sequence[str],
    skip_first: int = 1,
) -> tuple[Any, Any, Tensor]:
    """Activations of both models over the same texts at aligned token ends, and the index
    of the text each pair came from. The first ``skip_first`` aligned positions of each text
    are dropped (the first tokens carry attention-sink outliers that dominate a fit).

    With lists of hook names (one forward per text and model reads them all), ``x`` and ``y``
    are ``{hook_name: tensor}`` dicts instead of tensors."""
    s_hooks = [source_hook] if isinstance(source_hook, str) else list(source_hook)
    t_hooks = [target_hook] if isinstance(target_hook, str) else list(target_hook)
    xs: dict[str, list[Tensor]] = {h: [] for h in s_hooks}
    ys: dict[str, list[Tensor]] = {h: [] for h in t_hooks}
    src: list[int] = []
    for i, text in enumerate(texts):
        s_ids, t_ids, s_pos, t_pos = aligned_positions(
            source_model.tokenizer, target_model.tokenizer, text
        )
        if len(s_pos) <= skip_first:
            continue
        a = _activations(source_model, s_ids, s_hooks)
        b = _activations(target_model, t_ids, t_hooks)
        for h in s_hooks:
            xs[h].append(a[h][s_pos[skip_first:]])
        for h in t_hooks:
            ys[h].append(b[h][t_pos[skip_first:]])
        src += [i] * (len(s_pos) - skip_first)
    if not src:
        raise ConfigError("no aligned positions in the texts: give longer texts")
    x = {h: torch.cat(v) for h, v in xs.items()}
    y = {h: torch.cat(v) for h, v in ys.items()}
    if isinstance(source_hook, str) and isinstance(target_hook, str):
        return x[source_hook], y[target_hook], torch.tensor(src)
    return x, y, torch.tensor(src)


def fit_map(
    source_model: Any,
    target_model: Any,
    texts: Sequence[str],
    *,
    source_layer: int,
    target_layer: int | None = None,
    layer_mapping: str = "relative",
    hook: str = "resid_post",
    method: Literal["ridge", "procrustes"] = "ridge",
    alpha: float = 1e-2,
    held_out: float = 0.2,
    activations: tuple[Tensor, Tensor, Tensor] | None = None,
) -> ActivationMap:
    """Fit an :class:`ActivationMap` from ``source_model`` to ``target_model`` on ``texts``;
    the last ``held_out`` share of the texts is kept out of the fit and gives the map's
    ``r2_heldout`` (and ``r2_fit``), recorded in its metadata. ``activations`` reuses the
    ``(x, y, text_index)`` of :func:`paired_activations` for these hooks (e.g. to fit both
    directions, or both methods, from one pass over the texts).

    Examples:
        >>> import steerlens as sl
        >>> src, tgt = sl.tiny_model(n_layers=2, d_model=32), sl.tiny_model(n_layers=2, d_model=16)
        >>> texts = [f"Text {i} is about the sea and the mountains." for i in range(10)]
        >>> m = fit_map(src, tgt, texts, source_layer=1)
        >>> m.weight.shape, "r2_heldout" in m.metadata
        (torch.Size([16, 32]), True)
    """
    if target_layer is None:
        target_layer = map_layer(source_layer, n_layers(source_model), n_layers(target_model),
                                 layer_mapping)  # fmt: skip
    s_hook = f"blocks.{source_layer}.hook_{hook}"
    t_hook = f"blocks.{target_layer}.hook_{hook}"
    if activations is None:
        activations = paired_activations(source_model, target_model, texts,
                                         source_hook=s_hook, target_hook=t_hook)  # fmt: skip
    x, y, src = activations
    cut = int(round(len(texts) * (1 - held_out)))
    fit_rows, test_rows = src < cut, src >= cut
    if int(fit_rows.sum()) < 2:
        raise ConfigError("too few texts to fit a map")
    w, b = fit_affine(x[fit_rows], y[fit_rows], method=method, alpha=alpha)
    m = ActivationMap(s_hook, t_hook, w, b)
    meta: dict[str, Any] = {
        "method": method, "alpha": alpha, "texts": len(texts), "pairs_fit": int(fit_rows.sum()),
        "pairs_heldout": int(test_rows.sum()),
        "r2_fit": explained_variance(m(x[fit_rows]), y[fit_rows]),
        "source": getattr(source_model.cfg, "model_name", ""),
        "target": getattr(target_model.cfg, "model_name", ""),
    }  # fmt: skip
    if int(test_rows.sum()) >= 2:
        meta["r2_heldout"] = explained_variance(m(x[test_rows]), y[test_rows])
    m.metadata = meta
    return m


def transfer_vector(
    vector: SteeringVector,
    target_model: Any,
    *,
    via: ActivationMap | None = None,
    layer_mapping: str = "relative",
    source_layers: int | None = None,
) -> SteeringVector:
    """The vector for ``target_model``: through the map ``via`` when given; otherwise (same width)
    the vector itself at the mapped layer (``"same"`` index or ``"relative"`` depth; the
    source's layer count from ``source_layers`` or the vector's ``n_layers`` metadata).

    Examples:
        >>> import steerlens as sl
        >>> target = sl.tiny_model(n_layers=4, d_model=32)
        >>> v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(32)}, {"n_layers": 4})
        >>> transfer_vector(v, target).vectors["blocks.1.hook_resid_post"].equal(torch.ones(32))
        True
    """
    if via is not None:
        mapped = via.map_vector(vector)
        mapped.check_model(target_model)
        return mapped
    width = int(target_model.cfg.d_model)
    if vector.d_model != width:
        raise VectorError(
            f"the vector has d_model={vector.d_model}, the target {width}: fit a map first "
            "(steerlens.interop.transfer.fit_map)"
        )
    s_layers = source_layers or vector.metadata.get("n_layers")
    if s_layers is None and layer_mapping != "same":
        raise ConfigError("pass source_layers= (the vector records no n_layers)")
    out: dict[str, Tensor] = {}
    for name, v in vector.vectors.items():
        layer = hook_layer(name)
        if layer is None:
            out[name] = v.clone()
            continue
        new = map_layer(layer, int(s_layers or 0), n_layers(target_model), layer_mapping)
        out[name.replace(f"blocks.{layer}.", f"blocks.{new}.", 1)] = v.clone()
    meta = dict(vector.metadata, n_layers=n_layers(target_model), transfer="identity")
    result = SteeringVector(out, meta)
    result.check_model(target_model)
    return result


__all__ = [
    "ActivationMap",
    "aligned_positions",
    "explained_variance",
    "fit_affine",
    "fit_map",
    "map_layer",
    "paired_activations",
    "transfer_vector",
]
