"""Layer and multiplier sweeps, returning tidy DataFrames (resumable).

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=3)
    >>> items = sl.load_pairs(sl.demo_data_path("ab"))
    >>> df = sl.sweep_layers(model, items[:6], items[6:], layers=[0, 2], method="caa",
    ...                      progress=False)
    >>> sorted(df["layer"].unique().tolist()), sorted(df["multiplier"].unique().tolist())
    ([0, 2], [-1.0, 0.0, 1.0])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from steerlens.core.compat import SteerlensDeprecationWarning, deprecated_args
from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError
from steerlens.core.hooks import resolve_layer
from steerlens.evaluation.metrics import ab_score, preference_margin
from steerlens.evaluation.scoring import DEFAULT_MULTIPLIERS
from steerlens.experiments import grid
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.train import MethodLike
from steerlens.steering.hookpoints import Positions
from steerlens.steering.vector import SteeringVector


@deprecated_args(positional=("multipliers", "metric"), renamed={"eval_data": "pairs"})
def score_vector(
    model: Any,
    vector: SteeringVector | None,
    pairs: Sequence[PreferencePair],
    *,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    positions: Positions = "all",
    metric: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """A/B score (A/B items) or preference margin (free text) at each multiplier.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> items = sl.load_pairs(sl.demo_data_path("ab"))[:4]
        >>> v = sl.caa_vector(m, items, layers=1, progress=False)
        >>> score_vector(m, v, items, multipliers=(-1, 1), progress=False)["multiplier"].tolist()
        [-1.0, 1.0]
    """
    if metric == "auto":
        metric = "ab" if pairs and all(p.is_ab for p in pairs) else "margin"
    if metric == "ab":
        return ab_score(
            model, vector, pairs, multipliers=multipliers, positions=positions, progress=progress
        )
    if metric == "margin":
        return preference_margin(
            model, vector, pairs, multipliers=multipliers, positions=positions, progress=progress
        )
    raise ConfigError(f"metric must be 'auto', 'ab' or 'margin', got {metric!r}")


@deprecated_args(
    positional=("layers", "method", "multipliers"),
    renamed={"train_data": "pairs", "eval_data": "eval_pairs", "bipo_config": "config"},
)
def sweep_layers(
    model: Any,
    pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair],
    *,
    layers: Sequence[int] | None = None,
    method: MethodLike = "bipo",
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    positions: Positions = "all",
    config: BiPOConfig | None = None,
    metric: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train one vector per layer on ``pairs`` and score it on ``eval_pairs``.

    Args:
        layers: block indices (default: every layer).
        method: ``"bipo"``, ``"caa"``, ``"pca"`` or ``f(model, pairs, layers=...) ->
            SteeringVector``.
        multipliers: multipliers to score (0 is the unsteered baseline).
        positions: steered positions when scoring (``"all"`` or ``"after_prompt"``).
        config: :class:`~steerlens.methods.bipo_config.BiPOConfig` for ``method="bipo"``.
        metric: ``"ab"`` (A/B score), ``"margin"`` (preference margin) or ``"auto"``.
        cache_dir: a folder where each finished layer's vector and rows are stored (the
            cell cache of :func:`~steerlens.experiments.grid.sweep_grid`, which this calls); a rerun
            with the same folder skips finished layers (resume after an interruption). Cells are
            keyed by a hash of data and settings, so other settings never read stale rows.

    Returns:
        DataFrame with ``layer``, ``method``, ``multiplier``, the metric columns
        (``score`` or ``margin``, and ``matching_likelier``), ``n``, ``positions``, ``norm``
        and ``seconds``.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> items = sl.load_pairs(sl.demo_data_path("ab"))
        >>> df = sweep_layers(m, items[:4], items[4:8], layers=[1], method="caa", progress=False)
        >>> df[["layer", "method", "multiplier"]].values.tolist()
        [[1, 'caa', -1.0], [1, 'caa', 0.0], [1, 'caa', 1.0]]
    """
    layer_list = list(range(int(model.cfg.n_layers))) if layers is None else list(layers)
    layer_list = [resolve_layer(model, lyr) for lyr in layer_list]
    label = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    spec = grid.Method(label, method if callable(method) else None)
    seed = config.seed if config is not None else 0
    with (
        tempfile.TemporaryDirectory() if cache_dir is None else contextlib.nullcontext(cache_dir)
    ) as folder:  # fmt: skip
        df = grid.sweep_grid(
            model, {"data": (pairs, eval_pairs)}, layers=layer_list, methods=[spec],
            seeds=[seed], multipliers=multipliers, config=config, positions=positions,
            folder=folder, metric=metric, progress=progress,
        )  # fmt: skip
    df = df.drop(columns=["dataset", "seed", "worker"])
    front = ["layer", "method"]
    return df[front + [c for c in df.columns if c not in front]]


def sweep_multipliers(
    model: Any,
    vector: SteeringVector,
    pairs: Sequence[PreferencePair],
    *args: Any,
    **kwargs: Any,
) -> pd.DataFrame:
    """Deprecated: a second name for :func:`score_vector`; use that.

    Examples:
        >>> import warnings, steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> items = sl.load_pairs(sl.demo_data_path("ab"))[:2]
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     sweep_multipliers(m, None, items, multipliers=(0,), progress=False)["n"].tolist()
        [2]
    """
    warnings.warn(
        "sweep_multipliers() is deprecated; use score_vector()",
        SteerlensDeprecationWarning,
        stacklevel=2,
    )
    return score_vector(model, vector, pairs, *args, **kwargs)
