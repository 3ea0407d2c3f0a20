"""The experiment engine: behaviours x methods x layers x seeds, one cell a task, every cell
cached.

:func:`sweep_grid` builds one vector per cell (a behaviour, a method, a layer, a seed), scores
it with every metric asked for at every multiplier, and returns one tidy table (or, with
``per_item=True``, every item's score, which the intervals of :mod:`steerlens.core.intervals` and
:mod:`steerlens.experiments.compare` resample). Methods are ``"bipo"``, ``"reps"``, ``"caa"``,
``"pca"``, ``"prompt"`` (the prompting baseline: no vector, a system prompt toward / away from the
behaviour at multiplier +1 / -1) or any callable ``f(model, pairs, layers=...)``;
:class:`Method` names a recipe (its config, how many training pairs, a norm borrowed from
another method: the "equal norm" view). Metrics are ``"margin"`` (held-out preference
margins), ``"ab"`` (CAA's A/B score), ``"open_ended"`` (greedy answers to the behaviour's
questions with their perplexity under the unsteered model; judged when the table is read, so a
new judge never regenerates) and ``"kl"`` (KL on neutral text).

Cells run in-process by default; with ``executor=`` any ``concurrent.futures.Executor``-like
object runs them (a ``ProcessPoolExecutor``, a ``dask.distributed.Client``). What travels to a
worker is the model's :class:`~steerlens.core.models.ModelSpec`, never the model object, and never
the judge.

**Cache.** Each cell has its own folder, ``<behaviour>__<method>__L<layer>__s<seed>-<hash>``
under ``folder``, the hash covering what makes its vector (the training pairs it uses, the
method's recipe, layer, seed); in it ``vector.safetensors``, ``train.json`` (seconds, worker)
and one ``<metric>-<hash>.json`` per metric, that hash covering what makes the scores (data,
multipliers, positions, tokens). A rerun reads what is there and computes what is missing: a
deleted cell folder is recomputed alone, a new metric or multiplier grid reuses the trained
vectors, and cells from earlier runs accumulate (a full-data BiPO cell takes about an hour on
two CPU cores; it is computed once). A cell that fails (say, a layer out of range) is reported
by name after the other cells have finished and been saved.

Examples:
    >>> import tempfile, steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> items = sl.load_pairs(sl.demo_data_path("ab"))
    >>> df = sweep_grid(model, {"demo": (items[:6], items[6:10])}, layers=[0, 1], methods=["caa"],
    ...            folder=tempfile.mkdtemp(), progress=False)
    >>> df[["dataset", "method", "layer", "multiplier"]].drop_duplicates().shape[0]
    6
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError, SweepError
from steerlens.core.fileio import cache_dir
from steerlens.core.hooks import model_device
from steerlens.core.models import ModelSpec, model_spec
from steerlens.evaluation.metrics import ab_score, kl_divergence, preference_margin
from steerlens.evaluation.openended import (
    open_ended_score,
    prompting_score,
)
from steerlens.evaluation.scoring import DEFAULT_MULTIPLIERS
from steerlens.experiments.cache import (
    cell_folder,
    file_hash,
    forget_other_vectors,
    metric_file,
    read_cells,
    stale_metrics,
    write_json,
)
from steerlens.experiments.summary import summarize
from steerlens.experiments.vocabulary import (
    PROMPT_LAYER,
    Behaviour,
    Cell,
    Method,
    Settings,
    as_behaviours,
    as_methods,
    check_data,
)
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.steering.hookpoints import Positions
from steerlens.steering.vector import SteeringVector

_MODELS: dict[ModelSpec, Any] = {}  # per process: each worker loads its model once


def _model_for(spec: ModelSpec) -> Any:
    if spec not in _MODELS:
        _MODELS[spec] = spec.load()
    return _MODELS[spec]


def build_vector(
    model: Any,
    pairs: Sequence[PreferencePair],
    method: Method,
    *,
    layer: int,
    seed: int = 0,
    config: BiPOConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> SteeringVector:
    """One method's vector from ``pairs`` at ``layer`` (what a cell trains; BiPO and RePS
    resume from ``checkpoint`` when it exists).

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> build_vector(m, pairs, Method("caa"), layer=1).metadata["name"]
        'caa'
    """
    if not pairs:
        raise ConfigError(f"method {method.name!r} got no training pairs")
    cfg = method.effective_config(config)
    if cfg is not None:
        cfg = dataclasses.replace(cfg, seed=seed, progress=False)
    kind = method.registered
    if kind is None:
        assert callable(method.kind)
        vector = method.kind(model, list(pairs), layers=layer)
    elif kind.build is None:
        raise ConfigError(f"method {method.name!r} ({kind.name}) makes no vector")
    else:
        vector = kind.build(model, list(pairs), layers=layer, config=cfg, checkpoint=checkpoint,
                            progress=False)  # fmt: skip
    vector.metadata.update(seed=seed, name=method.name)
    return vector


def _build_vector(model: Any, behaviour: Behaviour, method: Method, layer: int, seed: int,
                  default: BiPOConfig | None, checkpoint: Path) -> SteeringVector:  # fmt: skip
    pairs = list(behaviour.pairs if method.n_pairs is None else behaviour.pairs[: method.n_pairs])
    if not pairs:
        raise ConfigError(f"behaviour {behaviour.name!r} has no training pairs")
    vector = build_vector(model, pairs, method, layer=layer, seed=seed, config=default,
                          checkpoint=checkpoint)  # fmt: skip
    vector.metadata.update(dataset=behaviour.name)
    return vector


def _cell_vector(model: Any, folder: Path, cell: Cell, behaviour: Behaviour, method: Method,
                 methods: Mapping[str, Method], default: BiPOConfig | None,
                 root: Path) -> tuple[SteeringVector, dict[str, Any]]:  # fmt: skip
    """The cell's vector: read from its folder, or built (and its norm borrowed) and saved."""
    path, info_path = folder / "vector.safetensors", folder / "train.json"
    if path.exists() and info_path.exists():
        return SteeringVector.load(path), json.loads(info_path.read_text())
    t0 = time.perf_counter()
    ckpt = folder / "checkpoint.safetensors"
    vector = _build_vector(model, behaviour, method, cell.layer, cell.seed, default, ckpt)
    if method.norm_of is not None:
        ref_m = methods[method.norm_of]
        ref_cell = Cell(cell.dataset, ref_m.name, cell.layer, cell.seed if ref_m.seeded else 0)
        ref_folder = cell_folder(root, ref_cell, behaviour, ref_m, methods, default)
        ref, _ = _cell_vector(model, ref_folder, ref_cell, behaviour, ref_m, methods, default,
                              root)  # fmt: skip
        own, target = sum(vector.norms().values()), sum(ref.norms().values())
        meta = dict(vector.metadata)
        vector = vector * (target / own)
        vector.metadata.update(meta, norm_of=method.norm_of)
    info = {"seconds": time.perf_counter() - t0, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "device": str(model_device(model)), "threads": torch.get_num_threads(),
            "norm": float(sum(vector.norms().values()))}  # fmt: skip
    vector.save(path, overwrite=True)
    write_json(info_path, info)  # last: its presence marks the vector done
    ckpt.unlink(missing_ok=True)
    return vector, info


def _score(model: Any, metric: str, vector: SteeringVector | None, behaviour: Behaviour,
           method: Method, s: Settings) -> list[dict[str, Any]]:  # fmt: skip
    """One metric's rows for one cell: per item where the metric has items."""
    if not method.makes_vector:
        if metric != "open_ended":
            return []
        toward, away = behaviour.system_prompts() or (None, None)
        df = prompting_score(model, list(behaviour.questions), None, toward=toward, away=away,
                             max_new_tokens=s.max_new_tokens, per_item=True,
                             progress=False)  # fmt: skip
    elif metric == "margin":
        df = preference_margin(model, vector, list(behaviour.eval_pairs),
                               multipliers=s.multipliers, positions=s.positions, per_item=True,
                               progress=False)  # fmt: skip
        df = df.rename(columns={"margin": "value"})
    elif metric == "ab":
        df = ab_score(model, vector, list(behaviour.eval_pairs), multipliers=s.multipliers,
                      positions=s.positions, per_item=True, progress=False)  # fmt: skip
        df = df.rename(columns={"score": "value"})
    elif metric == "open_ended":
        df = open_ended_score(model, vector, list(behaviour.questions), None,
                              multipliers=s.multipliers, positions=s.positions,
                              max_new_tokens=s.max_new_tokens, per_item=True,
                              progress=False)  # fmt: skip
    else:
        assert vector is not None
        df = kl_divergence(model, vector, list(s.kl_texts), multipliers=s.multipliers,
                           positions=s.positions, progress=False)  # fmt: skip
        df = df.rename(columns={"kl": "value"})
    if metric == "open_ended":
        index = {q: i for i, q in enumerate(behaviour.questions)}
        df["item"] = [index[q] for q in df["prompt"]]
        df = df.drop(columns=[c for c in ("method", "distinct2") if c in df])
    df.insert(0, "metric", metric)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]  # fmt: skip


def run_cell(
    model_or_spec: Any,
    cell: Cell,
    behaviour: Behaviour,
    methods: Mapping[str, Method],
    settings: Settings,
    config: BiPOConfig | None,
    root: str,
) -> dict[str, Any]:
    """Build, score and save one cell (in whatever process runs it), reusing what its folder
    already holds: a cell whose every score is saved needs neither the model nor its vector
    (the committed cells keep scores, not vectors).

    Returns ``{"folder": path}``, or ``{"error": message}`` when the cell failed.
    """
    try:
        method = methods[cell.method]
        folder = cell_folder(Path(root), cell, behaviour, method, methods, config)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {m: metric_file(folder, m, behaviour, method, settings) for m in settings.metrics}
        missing = stale_metrics(paths, folder / "vector.safetensors")
        if not missing:  # every score is there and from this vector: no model needed
            return {"folder": str(folder)}
        model = _model_for(model_or_spec) if isinstance(model_or_spec, ModelSpec) else model_or_spec
        vector, made_by = None, None
        if method.makes_vector:
            rebuilt = not all((folder / f).exists() for f in ("vector.safetensors", "train.json"))
            vector, _ = _cell_vector(model, folder, cell, behaviour, method, methods, config,
                                     Path(root))  # fmt: skip
            made_by = file_hash(folder / "vector.safetensors")
            if rebuilt:  # no other vector's scores stay beside this one, asked for or not
                forget_other_vectors(folder, folder / "vector.safetensors")
            missing = stale_metrics(paths, folder / "vector.safetensors")
        for metric in missing:
            path = paths[metric]
            t0 = time.perf_counter()
            rows = _score(model, metric, vector, behaviour, method, settings)
            payload = {"seconds": time.perf_counter() - t0, "rows": rows, "vector": made_by}
            write_json(path, payload if made_by else {k: payload[k] for k in ("seconds", "rows")})
    except Exception as e:  # noqa: BLE001 - reported by cell name after the other cells
        return {"error": f"{type(e).__name__}: {e}"}
    return {"folder": str(folder)}


def sweep_grid(
    model: Any,
    datasets: Mapping[str, Any],
    *,
    layers: Sequence[int],
    methods: Sequence[str | Method | Callable[..., SteeringVector]] = ("bipo", "caa"),
    seeds: Sequence[int] = (0,),
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    config: BiPOConfig | None = None,
    positions: Positions = "all",
    folder: str | os.PathLike[str] | None = None,
    metric: str | Sequence[str] = "auto",
    max_new_tokens: int = 48,
    per_item: bool = False,
    executor: Any = None,
    retries: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Build and score one vector per (behaviour, method, layer, seed) cell.

    Args:
        model: the model (in-process runs use it; workers load it from
            ``model.steerlens_spec``, which :func:`~steerlens.core.models.load_model` sets).
        datasets: ``{name: Behaviour}``, or ``{name: (training pairs, evaluation pairs)}``.
        layers: block indices (the prompting baseline has one cell, layer -1).
        methods: names (``"bipo"``, ``"reps"``, ``"caa"``, ``"pca"``, ``"prompt"``),
            :class:`Method` recipes or callables ``f(model, pairs, layers=...)``.
        seeds: seeds of BiPO, RePS and callables; CAA, PCA and prompting have seed 0 alone.
        multipliers: scored for every cell (0 is the unsteered baseline); the prompting
            baseline is scored at -1 (away), 0 and +1 (toward).
        config: :class:`~steerlens.methods.bipo_config.BiPOConfig` for BiPO and RePS methods without
            their own (its ``seed`` is the cell's).
        positions: steered positions (``"all"`` or ``"after_prompt"``).
        metric: one of ``"margin"``, ``"ab"``, ``"open_ended"``, ``"kl"``, a list of them,
            or ``"auto"`` (``"ab"`` when every evaluation pair is A/B, else ``"margin"``).
        max_new_tokens: answer length for ``"open_ended"`` (greedy decoding).
        per_item: return every item's score (one row per cell, metric, multiplier and item:
            ``value``; open-ended rows carry ``prompt``, ``text``, ``behaviour`` (judged),
            ``nll``, ``tokens``, ``perplexity``) instead of the summary.
        folder: the cache (default: the steerlens cache's ``sweeps``); see the module
            docstring.
        executor: ``None`` (in-process, one cell after another), or anything with
            ``submit(fn, *args)`` returning futures with ``.result()``.
        retries: on Dask, how often a cell whose worker died is run again.

    Returns:
        One row per cell and multiplier: ``dataset``, ``method``, ``layer``, ``seed``,
        ``multiplier``; per metric its mean with a 95% bootstrap interval over items
        (``margin``, ``margin_low``, ``margin_high``, ``matching_likelier``; ``score`` ...;
        ``behaviour`` ... with ``perplexity`` and ``distinct2``; ``kl``), ``n``,
        ``positions``, ``norm``, ``seconds`` (the vector's build time) and ``worker``.

    Raises:
        SweepError: cells that failed, by name; every other cell is saved first.

    Examples:
        >>> import tempfile, steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))
        >>> df = sweep_grid(m, {"power": (pairs[:4], pairs[4:6])}, layers=[1], methods=["caa"],
        ...                 folder=tempfile.mkdtemp(), progress=False)
        >>> sorted(set(df["multiplier"])), df["worker"].nunique()
        ([-1.0, 0.0, 1.0], 1)
    """
    if not datasets:
        raise ConfigError("datasets must name at least one behaviour")
    behaviours = as_behaviours(datasets)
    method_map = as_methods(methods)
    cells = plan_cells(behaviours, method_map, layers=layers, seeds=seeds)
    settings = scoring_settings(behaviours, metric=metric, multipliers=multipliers,
                                positions=positions, max_new_tokens=max_new_tokens)  # fmt: skip
    return run_grid(model, behaviours, method_map, cells, settings, config=config, folder=folder,
                    per_item=per_item, executor=executor, retries=retries,
                    progress=progress)  # fmt: skip


def plan_cells(behaviours: Mapping[str, Behaviour], methods: Mapping[str, Method], *,
               layers: Sequence[int], seeds: Sequence[int] = (0,)) -> list[Cell]:  # fmt: skip
    """Every (behaviour, method, layer, seed) cell, in that order, each once: the prompting
    baseline steers no layer (one cell, layer -1); unseeded methods have seed 0 alone."""
    cells = [
        Cell(name, m.name, PROMPT_LAYER if not m.makes_vector else int(layer),
             int(seed) if m.seeded else 0)
        for name in behaviours
        for m in methods.values()
        for layer in layers
        for seed in seeds
    ]  # fmt: skip
    return list(dict.fromkeys(cells))


def scoring_settings(behaviours: Mapping[str, Behaviour], *, metric: str | Sequence[str],
                     multipliers: Sequence[float], positions: Positions,
                     max_new_tokens: int) -> dict[str, Settings]:  # fmt: skip
    """Per behaviour, how its cells are scored; ``"auto"`` is ``"ab"`` when every evaluation
    pair is A/B, else ``"margin"``."""
    metric_list = [metric] if isinstance(metric, str) else list(metric)
    out = {}
    for name, b in behaviours.items():
        ms = [m for m in metric_list if m != "auto"]
        if "auto" in metric_list:
            ms.append("ab" if b.eval_pairs and all(p.is_ab for p in b.eval_pairs) else "margin")
        out[name] = Settings(tuple(float(m) for m in multipliers), positions,
                             tuple(dict.fromkeys(ms)), int(max_new_tokens))  # fmt: skip
    return out


def cache_root(folder: str | os.PathLike[str] | None) -> Path:
    """The engine's cell cache: ``folder``, or ``sweeps`` in the user cache (None)."""
    return Path(folder) if folder is not None else cache_dir() / "sweeps"


def run_grid(model: Any, behaviours: Mapping[str, Behaviour], methods: Mapping[str, Method],
             cells: Sequence[Cell], settings: Mapping[str, Settings], *,
             config: BiPOConfig | None = None, folder: str | os.PathLike[str] | None = None,
             per_item: bool = False, executor: Any = None, retries: int = 2,
             progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Run the given cells (what :func:`sweep_grid` does once it has planned them): check the
    data before any work, run every cell, report the failed ones by name, read the rest."""
    root = cache_root(folder)
    root.mkdir(parents=True, exist_ok=True)
    check_data(behaviours, methods, lambda name: settings[name].metrics)
    bare = {n: dataclasses.replace(b, judge=None) for n, b in behaviours.items()}
    args = [(c, bare[c.dataset], methods, settings[c.dataset], config, str(root)) for c in cells]
    if executor is None:
        results: Iterable[dict[str, Any]] = (run_cell(model, *a) for a in args)
    else:
        spec = model_spec(model)  # what travels: never the model object
        extra = {"pure": False, "retries": retries} if hasattr(executor, "scheduler_info") else {}
        futures = [executor.submit(run_cell, spec, *a, **extra) for a in args]
        results = (f.result() for f in futures)
    failed: dict[str, str] = {}
    for cell, result in tqdm(zip(cells, results, strict=True), total=len(cells), desc="sweep",
                             disable=not progress):  # fmt: skip
        if "error" in result:
            failed[cell.key] = result["error"]
    if failed:
        lines = "; ".join(f"cell {k}: {v}" for k, v in failed.items())
        raise SweepError(
            f"{len(failed)} of {len(cells)} cells failed ({lines}); the other cells are saved "
            f"in {root} and a rerun computes only the missing ones",
            failed,
        )
    items = read_cells(root, cells, behaviours, methods, settings.__getitem__, config)
    return items if per_item else summarize(items)


__all__ = [
    "build_vector",
    "cache_root",
    "plan_cells",
    "read_cells",
    "run_cell",
    "run_grid",
    "scoring_settings",
    "sweep_grid",
]
