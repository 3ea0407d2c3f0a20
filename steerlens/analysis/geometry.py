"""Analysis of steering vectors: cosine similarity, projections, PCA of activations, comparison.

Everything returns plain tensors or pandas DataFrames; :mod:`steerlens.analysis.viz` draws them.

Examples:
    >>> import torch, steerlens as sl
    >>> a = sl.SteeringVector({"blocks.1.hook_resid_post": torch.tensor([1.0, 0.0])})
    >>> b = sl.SteeringVector({"blocks.1.hook_resid_post": torch.tensor([1.0, 1.0])})
    >>> cosine_similarity(a, b)[["layer", "cosine"]].round(4).to_dict("records")
    [{'layer': 1, 'cosine': 0.7071}]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from steerlens.core.compat import SteerlensDeprecationWarning, deprecated_args
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT, PreferencePair, format_prompt
from steerlens.core.encoding import encode_text
from steerlens.core.errors import ConfigError, HookError
from steerlens.core.hooks import hook_layer, model_device
from steerlens.methods.baselines import (
    Read,
    balanced_mean,
    collect_activations,
    matching_letter_is_first,
)
from steerlens.steering.activations import read_activations
from steerlens.steering.vector import SteeringVector


def cosine_similarity(a: SteeringVector, b: SteeringVector) -> pd.DataFrame:
    """Cosine similarity and norms per shared hook (one row per hook, sorted by layer)."""
    cos = a.cosine(b)
    na, nb = a.norms(), b.norms()
    rows = [
        {"hook": h, "layer": hook_layer(h), "cosine": c, "norm_a": na[h], "norm_b": nb[h]}
        for h, c in cos.items()
    ]
    df = pd.DataFrame.from_records(rows, columns=["hook", "layer", "cosine", "norm_a", "norm_b"])
    return df.sort_values("layer", kind="stable").reset_index(drop=True)


def cosine_by_layer(vectors: Mapping[str, SteeringVector]) -> pd.DataFrame:
    """Pairwise cosine similarity of named vectors at every shared hook.

    Returns a long DataFrame with columns ``a``, ``b``, ``hook``, ``layer``, ``cosine``.

    Examples:
        >>> import torch
        >>> vs = {"x": SteeringVector({"blocks.0.hook_resid_post": torch.tensor([1.0, 0.0])}),
        ...       "y": SteeringVector({"blocks.0.hook_resid_post": torch.tensor([0.0, 2.0])})}
        >>> cosine_by_layer(vs)["cosine"].tolist()
        [0.0]
    """
    names = list(vectors)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for h, c in vectors[a].cosine(vectors[b]).items():
                rows.append({"a": a, "b": b, "hook": h, "layer": hook_layer(h), "cosine": c})
    return pd.DataFrame.from_records(rows, columns=["a", "b", "hook", "layer", "cosine"])


@torch.no_grad()
def project(
    model: Any,
    vector: SteeringVector,
    texts: Sequence[str],
    *,
    chat: bool = False,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> pd.DataFrame:
    """Per-token projection of the residual stream onto the vector's unit direction.

    The activation is read at each of the vector's hooks (unsteered). With ``chat=True`` each
    text is wrapped in the chat template as a user turn.

    Returns:
        DataFrame with columns ``text``, ``hook``, ``layer``, ``position``, ``token``,
        ``projection``.

    Examples:
        >>> import torch, steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> v = SteeringVector({"blocks.1.hook_resid_post": torch.ones(64)})
        >>> project(m, v, ["Hello world"])[["position", "token"]].values.tolist()
        [[0, 'Hello'], [1, ' world']]
    """
    if isinstance(texts, SteeringVector) and not isinstance(vector, SteeringVector):
        warnings.warn(
            "project(model, texts, vector) is deprecated; use project(model, vector, texts)",
            SteerlensDeprecationWarning,
            stacklevel=3,
        )
        vector, texts = texts, vector
    if isinstance(texts, str):
        texts = [texts]
    vector.check_model(model)
    tok = model.tokenizer
    hooks = vector.hook_names
    layers = [hook_layer(h) for h in hooks]
    known = [x for x in layers if x is not None]
    stop = max(known) + 1 if len(known) == len(layers) else None
    device = model_device(model)
    rows = []
    for ti, text in enumerate(texts):
        prompt = format_prompt(tok, text, system_prompt) if chat else text
        ids = encode_text(tok, prompt)
        x = torch.tensor([ids], device=device)
        cache = read_activations(model, x, hooks, stop_at_layer=stop)
        pieces = [tok.decode([t]) for t in ids]
        for h in hooks:
            direction = vector.vectors[h].float().to(device)
            direction = direction / direction.norm().clamp_min(1e-12)
            proj = (cache[h][0].float() @ direction).cpu()
            for pos, (piece, value) in enumerate(zip(pieces, proj.tolist(), strict=True)):
                rows.append(
                    {
                        "text": ti,
                        "hook": h,
                        "layer": hook_layer(h),
                        "position": pos,
                        "token": piece,
                        "projection": value,
                    }
                )
    return pd.DataFrame.from_records(rows)


@dataclass
class PCAResult:
    """PCA of matching vs non-matching activations at one hook.

    Attributes:
        coords: DataFrame with ``pc1``, ``pc2``, ``label`` (``matching``/``not_matching``),
            ``pair`` (index of the pair).
        explained_variance_ratio: variance explained by PC1 and PC2.
        directions: ``{name: (x, y)}`` each given vector's unit direction in the PC plane.
        components: ``[2, d_model]`` principal axes.
        hook: the hook read.
    """

    coords: pd.DataFrame
    explained_variance_ratio: np.ndarray
    directions: dict[str, tuple[float, float]]
    components: np.ndarray
    hook: str


@deprecated_args(renamed={"layer": "layers"}, positional=("layers", "vectors"))
def pca_activations(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    layers: int,
    vectors: Mapping[str, SteeringVector] | Sequence[SteeringVector] = (),
    read: Read = "auto",
    hook: str = "resid_post",
    batch_size: int | None = None,
    progress: bool = True,
) -> PCAResult:
    """scikit-learn PCA (2 components) of matching and non-matching activations at a layer.

    Each given vector's unit direction at that layer is projected onto the same PC plane, so the
    plot shows which way each method points relative to the data.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> res = pca_activations(m, sl.load_pairs(sl.demo_data_path("train"))[:4], layers=1)
        >>> res.coords.shape, res.hook
        ((8, 4), 'blocks.1.hook_resid_post')
    """
    from sklearn.decomposition import PCA

    if not isinstance(layers, int):
        raise ConfigError(f"pca_activations takes one layer, got layers={layers!r}")
    acts = collect_activations(
        model, pairs, layers=layers, read=read, hook=hook, batch_size=batch_size, progress=progress
    )
    hook, (m, n) = next(iter(acts.items()))
    x = torch.cat([m, n]).double().numpy()
    pca = PCA(n_components=2).fit(x)
    xy = pca.transform(x)
    labels = ["matching"] * len(m) + ["not_matching"] * len(n)
    pair_idx = list(range(len(m))) * 2
    coords = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1], "label": labels, "pair": pair_idx})
    named = (
        dict(vectors)
        if isinstance(vectors, Mapping)
        else {str(v.metadata.get("method") or f"vector{i}"): v for i, v in enumerate(vectors)}
    )
    directions = {}
    for name, v in named.items():
        if hook not in v.vectors:
            raise HookError(f"vector {name!r} has no entry at {hook!r} (has {v.hook_names})")
        u = v.vectors[hook].double().numpy()
        u = u / max(np.linalg.norm(u), 1e-12)
        d = pca.components_ @ u
        directions[name] = (float(d[0]), float(d[1]))
    return PCAResult(coords, pca.explained_variance_ratio_, directions, pca.components_, hook)


def projection_gap(
    model: Any,
    vector: SteeringVector,
    pairs: Sequence[PreferencePair],
    *,
    read: Read = "auto",
    balance_letters: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean projection of matching minus non-matching activations onto the vector's unit
    direction, per hook, with the fraction of pairs whose matching side projects higher.

    With ``balance_letters`` (A/B items) both numbers weight the items that match with (A) and
    those that match with (B) equally, so that a direction that only encodes the answer
    letter's identity scores 0 however the letters are distributed (see
    :func:`~steerlens.methods.baselines.caa_vector`).

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> v = sl.caa_vector(m, pairs, layers=1)
        >>> float(projection_gap(m, v, pairs)["gap"][0]) > 0
        True
    """
    layers = [hook_layer(h) for h in vector.hook_names]
    if any(x is None for x in layers):
        raise HookError("projection_gap needs block hooks (blocks.N...)")
    groups = matching_letter_is_first(pairs) if balance_letters else None
    acts = collect_activations(
        model,
        pairs,
        layers=[int(x) for x in layers if x is not None],
        read=read,
        batch_size=batch_size,
        progress=progress,
    )

    def mean(x: Tensor) -> float:
        return float(x.mean() if groups is None else balanced_mean(x, groups))

    rows = []
    for h, v in vector.vectors.items():
        m, n = acts[h]
        u = v.float() / v.float().norm().clamp_min(1e-12)
        pm, pn = m @ u, n @ u
        rows.append(
            {
                "hook": h,
                "layer": hook_layer(h),
                "gap": mean(pm - pn),
                "separated": mean((pm > pn).float()),
                "proj_matching": float(pm.mean()),
                "proj_not_matching": float(pn.mean()),
            }
        )
    return pd.DataFrame.from_records(rows)


def compare(
    a: SteeringVector,
    b: SteeringVector,
    *,
    model: Any = None,
    pairs: Sequence[PreferencePair] | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> pd.DataFrame:
    """One table across shared layers: cosine, both norms and (with a model and pairs) each
    vector's projection gap between matching and non-matching activations.

    Examples:
        >>> import torch
        >>> a = SteeringVector({"blocks.1.hook_resid_post": torch.tensor([1.0, 0.0])})
        >>> compare(a, 2 * a)[["layer", "cosine", "norm_a", "norm_b"]].values.tolist()
        [[1.0, 1.0, 1.0, 2.0]]
    """
    df = cosine_similarity(a, b).rename(
        columns={"norm_a": f"norm_{names[0]}", "norm_b": f"norm_{names[1]}"}
    )
    if model is not None and pairs:
        for name, v in zip(names, (a, b), strict=True):
            shared = SteeringVector({h: v.vectors[h] for h in df["hook"]}, dict(v.metadata))
            gap = projection_gap(model, shared, pairs)
            df = df.merge(
                gap[["hook", "gap"]].rename(columns={"gap": f"gap_{name}"}), on="hook", how="left"
            )
    return df
