"""Layer and multiplier sweeps, returning tidy DataFrames (resumable).

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=3)
    >>> items = sl.load_pairs(sl.demo_data_path("ab"))
    >>> df = sl.sweep_layers(model, items[:6], items[6:], layers=[0, 2], method="caa",
    ...                      progress=False)
    >>> sorted(df["layer"].unique().tolist()), sorted(df["multiplier"].unique().tolist())
    ([0, 2], [-1.0, 1.0])
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from steerlens.baselines import caa_vector, pca_vector
from steerlens.bipo import BiPOConfig, train_bipo
from steerlens.data import PreferencePair
from steerlens.errors import ConfigError
from steerlens.evaluate import ab_score, preference_margin
from steerlens.models import resolve_layer
from steerlens.vector import SteeringVector

Method = str | Callable[[Any, Sequence[PreferencePair], int], SteeringVector]


def _train(
    model: Any,
    method: Method,
    train: Sequence[PreferencePair],
    layer: int,
    bipo_config: BiPOConfig | None,
) -> SteeringVector:
    if callable(method):
        return method(model, train, layer)
    if method == "bipo":
        return train_bipo(model, train, layer=layer, config=bipo_config or BiPOConfig())
    if method == "caa":
        return caa_vector(model, train, layers=layer)
    if method == "pca":
        return pca_vector(model, train, layers=layer)
    raise ConfigError(f"method must be 'bipo', 'caa', 'pca' or a callable, got {method!r}")


def score_vector(
    model: Any,
    vector: SteeringVector | None,
    eval_data: Sequence[PreferencePair],
    multipliers: Sequence[float],
    metric: str = "auto",
) -> pd.DataFrame:
    """A/B score (A/B items) or preference margin (free text) at each multiplier."""
    if metric == "auto":
        metric = "ab" if eval_data and all(p.is_ab for p in eval_data) else "margin"
    if metric == "ab":
        return ab_score(model, vector, eval_data, multipliers)
    if metric == "margin":
        return preference_margin(model, vector, eval_data, multipliers)
    raise ConfigError(f"metric must be 'auto', 'ab' or 'margin', got {metric!r}")


def sweep_layers(
    model: Any,
    train_data: Sequence[PreferencePair],
    eval_data: Sequence[PreferencePair],
    layers: Sequence[int] | None = None,
    method: Method = "bipo",
    multipliers: Sequence[float] = (-1, 1),
    *,
    bipo_config: BiPOConfig | None = None,
    metric: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train one vector per layer and score it at each multiplier.

    Args:
        layers: block indices (default: every layer).
        method: ``"bipo"``, ``"caa"``, ``"pca"`` or ``f(model, pairs, layer) -> SteeringVector``.
        multipliers: multipliers to score (0 is the unsteered baseline).
        metric: ``"ab"`` (A/B score), ``"margin"`` (preference margin) or ``"auto"``.
        cache_dir: a folder where each finished layer's vector and rows are stored; a rerun
            with the same folder and the same data and settings skips finished layers (resume
            after an interruption). Files are keyed by a hash of data and settings, so a rerun
            with other settings never reads stale rows.

    Returns:
        DataFrame with ``layer``, ``method``, ``multiplier``, the metric columns
        (``score`` or ``margin``, and ``matching_likelier``), ``norm`` and ``seconds``.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> items = sl.load_pairs(sl.demo_data_path("ab"))
        >>> df = sweep_layers(m, items[:4], items[4:8], layers=[1], method="caa", progress=False)
        >>> df[["layer", "method", "multiplier"]].values.tolist()
        [[1, 'caa', -1.0], [1, 'caa', 1.0]]
    """
    layer_list = list(range(int(model.cfg.n_layers))) if layers is None else list(layers)
    layer_list = [resolve_layer(model, lyr) for lyr in layer_list]
    label = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(train_data, eval_data, multipliers, metric, bipo_config)
    frames = []
    for layer in tqdm(layer_list, desc=f"sweep {label}", disable=not progress):
        rows_file = cache / f"{label}_L{layer}_{fp}.json" if cache else None
        if rows_file is not None and rows_file.exists():
            frames.append(pd.DataFrame.from_records(json.loads(rows_file.read_text())))
            continue
        t = time.perf_counter()
        vector = _train(model, method, train_data, layer, bipo_config)
        seconds = time.perf_counter() - t
        df = score_vector(model, vector, eval_data, multipliers, metric)
        df.insert(0, "method", label)
        df.insert(0, "layer", layer)
        df["norm"] = sum(vector.norms().values())
        df["seconds"] = seconds
        if cache is not None and rows_file is not None:
            vector.save(cache / f"{label}_L{layer}_{fp}.safetensors", overwrite=True)
            tmp = rows_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(df.to_dict("records")))
            os.replace(tmp, rows_file)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _fingerprint(
    train: Sequence[PreferencePair],
    ev: Sequence[PreferencePair],
    multipliers: Sequence[float],
    metric: str,
    cfg: BiPOConfig | None,
) -> str:
    """A short hash of everything that changes a sweep's rows (cache files are keyed by it)."""
    import hashlib
    from dataclasses import asdict

    h = hashlib.sha256()
    for group in (train, ev):
        for p in group:
            h.update(json.dumps([p.question, p.matching, p.not_matching]).encode())
        h.update(b"|")
    settings = asdict(cfg) if cfg is not None else None
    h.update(json.dumps([list(map(float, multipliers)), metric, settings], default=str).encode())
    return h.hexdigest()[:10]


def sweep_multipliers(
    model: Any,
    vector: SteeringVector,
    eval_data: Sequence[PreferencePair],
    multipliers: Sequence[float] = (-2, -1, 0, 1, 2),
    *,
    metric: str = "auto",
) -> pd.DataFrame:
    """Score one vector at each multiplier (A/B score or preference margin).

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> items = sl.load_pairs(sl.demo_data_path("ab"))[:4]
        >>> v = sl.caa_vector(m, items, layers=1)
        >>> sweep_multipliers(m, v, items, (-1, 1))["multiplier"].tolist()
        [-1.0, 1.0]
    """
    return score_vector(model, vector, eval_data, multipliers, metric)
