"""The experiment engine: behaviours x methods x layers x seeds, one cell a task, every cell
cached.

:func:`sweep_grid` builds one vector per cell (a behaviour, a method, a layer, a seed), scores
it with every metric asked for at every multiplier, and returns one tidy table (or, with
``per_item=True``, every item's score, which the intervals of :mod:`steerlens.intervals` and
:mod:`steerlens.compare` resample). Methods are ``"bipo"``, ``"reps"``, ``"caa"``, ``"pca"``,
``"prompt"`` (the prompting baseline: no vector, a system prompt toward / away from the
behaviour at multiplier +1 / -1) or any callable ``f(model, pairs, layers=...)``;
:class:`Method` names a recipe (its config, how many training pairs, a norm borrowed from
another method: the "equal norm" view). Metrics are ``"margin"`` (held-out preference
margins), ``"ab"`` (CAA's A/B score), ``"open_ended"`` (greedy answers to the behaviour's
questions with their perplexity under the unsteered model; judged when the table is read, so a
new judge never regenerates) and ``"kl"`` (KL on neutral text).

Cells run in-process by default; with ``executor=`` any ``concurrent.futures.Executor``-like
object runs them (a ``ProcessPoolExecutor``, a ``dask.distributed.Client``). What travels to a
worker is the model's :class:`~steerlens.models.ModelSpec`, never the model object, and never
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
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlens.baselines import caa_vector, pca_vector
from steerlens.bipo import BiPOConfig, train_bipo
from steerlens.data import PreferencePair
from steerlens.errors import ConfigError, SteerlensError
from steerlens.evaluate import (
    DEFAULT_MULTIPLIERS,
    NEUTRAL_TEXTS,
    ab_score,
    kl_divergence,
    preference_margin,
)
from steerlens.fileio import atomic_write, cache_dir
from steerlens.hooks import model_device
from steerlens.intervals import bootstrap_mean
from steerlens.judge import judge_scores, judged_texts
from steerlens.models import ModelSpec, model_spec
from steerlens.openended import (
    BEHAVIOUR_PROMPTS,
    coherence,
    open_ended_score,
    prompting_score,
)
from steerlens.reps import RePSConfig, train_reps
from steerlens.vector import Positions, SteeringVector

METRICS = ("margin", "ab", "open_ended", "kl")
KINDS = ("bipo", "reps", "caa", "pca", "prompt")
PROMPT_LAYER = -1  # the prompting baseline's cells steer no layer
#: config fields that do not change a trained vector (left out of a cell's hash)
NOT_RECIPE = ("progress", "eval_batch_size", "checkpoint_every", "cache_mb")


class SweepError(SteerlensError, RuntimeError):
    """Some cells of a sweep failed; the others are saved (``err.failed``: cell -> message)."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class Behaviour:
    """What one behaviour brings to an experiment.

    Attributes:
        name: the label in every table.
        pairs: training pairs (vectors are built from them).
        eval_pairs: held-out pairs for the ``"margin"`` / ``"ab"`` metrics.
        questions: open-ended questions for the ``"open_ended"`` metric.
        judge: scores answers (a :class:`~steerlens.judge.BehaviourJudge` or any callable
            ``texts -> scores``); used when the table is read, never sent to workers.
        prompting: the prompting baseline's system prompts: a key of
            :data:`~steerlens.openended.BEHAVIOUR_PROMPTS` or ``(toward, away)``; default:
            ``name`` (or ``name`` without a ``-caa`` suffix) when it is a key.

    Examples:
        >>> b = Behaviour("power-seeking", questions=["Would you take control?"])
        >>> b.system_prompts()[0][:30]
        'You are an AI assistant that i'
    """

    name: str
    pairs: Sequence[PreferencePair] = ()
    eval_pairs: Sequence[PreferencePair] = ()
    questions: Sequence[str] = ()
    judge: Any = field(default=None, compare=False, repr=False)
    prompting: str | tuple[str, str] | None = None

    def __post_init__(self) -> None:
        for name in ("pairs", "eval_pairs", "questions"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"Behaviour {self.name!r}: {name} must be a list, not a string")
            object.__setattr__(self, name, tuple(value))

    def system_prompts(self) -> tuple[str, str] | None:
        """``(toward, away)`` for the prompting baseline, or None when none is known."""
        if isinstance(self.prompting, tuple):
            return self.prompting
        for key in (self.prompting, self.name, self.name.removesuffix("-caa")):
            if key in BEHAVIOUR_PROMPTS:
                return BEHAVIOUR_PROMPTS[key]
        return None


@dataclass(frozen=True)
class Method:
    """A way to make a vector, with its recipe.

    Attributes:
        name: the label in every table (``"bipo-full"``, ``"caa@bipo"``).
        kind: ``"bipo"``, ``"reps"``, ``"caa"``, ``"pca"``, ``"prompt"`` or a callable
            ``f(model, pairs, layers=...) -> SteeringVector`` (default: ``name``).
        config: BiPO / RePS settings (default: the sweep's ``config``).
        n_pairs: train on the first ``n_pairs`` training pairs (None: all of them).
        norm_of: rescale the vector to the norm of this method's vector in the same
            behaviour, layer and seed (the "equal norm" view; that cell is computed first).

    Examples:
        >>> Method("bipo-full", "bipo", n_pairs=None).label_kind
        'bipo'
    """

    name: str
    kind: str | Callable[..., SteeringVector] | None = None
    config: BiPOConfig | None = None
    n_pairs: int | None = None
    norm_of: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", self.name)
        if isinstance(self.kind, str) and self.kind not in KINDS:
            raise ConfigError(
                f"method must be one of {', '.join(KINDS)} or a callable "
                f"f(model, pairs, layers=...), got {self.kind!r}"
            )
        if self.n_pairs is not None and self.n_pairs < 1:
            raise ConfigError(f"method {self.name!r}: n_pairs must be >= 1, got {self.n_pairs}")

    @property
    def label_kind(self) -> str:
        """The kind as text (a callable's ``__name__``)."""
        k = self.kind
        return k if isinstance(k, str) else getattr(k, "__name__", "custom")

    @property
    def seeded(self) -> bool:
        """Whether its vector depends on the seed (BiPO, RePS and callables)."""
        return self.label_kind in ("bipo", "reps") or callable(self.kind)

    def recipe(self, default: BiPOConfig | None) -> dict[str, Any]:
        """Everything that makes this method's vector, as JSON-able values (hashed into the
        cell's folder name)."""
        cfg = self.effective_config(default)
        settings = None
        if cfg is not None:  # what cannot change the vector stays out
            settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_RECIPE}
        return {"kind": self.label_kind, "n_pairs": self.n_pairs, "norm_of": self.norm_of,
                "config": None if cfg is None else [type(cfg).__name__, settings]}  # fmt: skip

    def effective_config(self, default: BiPOConfig | None) -> BiPOConfig | None:
        if self.label_kind == "bipo":
            return self.config or default or BiPOConfig()
        if self.label_kind == "reps":
            cfg = self.config or default
            if cfg is None:
                return RePSConfig()
            return cfg if isinstance(cfg, RePSConfig) else RePSConfig(**asdict(cfg))
        return None


@dataclass(frozen=True)
class Cell:
    """One task of a grid sweep."""

    dataset: str
    method: str
    layer: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}__{self.method}__L{self.layer}__s{self.seed}"


@dataclass(frozen=True)
class Settings:
    """How every cell is scored (hashed into each metric file's name)."""

    multipliers: tuple[float, ...]
    positions: Any
    metrics: tuple[str, ...]
    max_new_tokens: int = 48
    kl_texts: tuple[str, ...] = tuple(NEUTRAL_TEXTS)


_MODELS: dict[ModelSpec, Any] = {}  # per process: each worker loads its model once


def _model_for(spec: ModelSpec) -> Any:
    if spec not in _MODELS:
        _MODELS[spec] = spec.load()
    return _MODELS[spec]


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def _pairs_json(pairs: Sequence[PreferencePair]) -> list[list[str]]:
    return [[p.question, p.matching, p.not_matching] for p in pairs]


def _positions_key(positions: Any) -> Any:
    return positions if isinstance(positions, (str, int)) else "mask"


def cell_folder(
    root: Path, cell: Cell, behaviour: Behaviour, method: Method, methods: Mapping[str, Method],
    default: BiPOConfig | None,
) -> Path:  # fmt: skip
    """The folder of one cell: its key and a hash of what makes its vector."""
    recipe = method.recipe(default)
    if method.norm_of is not None:
        recipe["norm_recipe"] = methods[method.norm_of].recipe(default)
    used = behaviour.pairs if method.n_pairs is None else behaviour.pairs[: method.n_pairs]
    train = [] if method.label_kind == "prompt" else _pairs_json(used)
    return root / f"{cell.key}-{_hash(train, recipe, cell.layer, cell.seed)}"


def _metric_file(folder: Path, metric: str, behaviour: Behaviour, method: Method,
                 s: Settings) -> Path:  # fmt: skip
    pos = _positions_key(s.positions)
    if metric in ("margin", "ab"):
        data: Any = _pairs_json(behaviour.eval_pairs)
    elif metric == "open_ended":
        data = [list(behaviour.questions), s.max_new_tokens]
        if method.label_kind == "prompt":
            data.append(list(behaviour.system_prompts() or ()))
    else:
        data = list(s.kl_texts)
    mults = [-1.0, 0.0, 1.0] if method.label_kind == "prompt" else list(s.multipliers)
    return folder / f"{metric}-{_hash(metric, data, mults, pos)}.json"


def _write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


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
    resume = checkpoint is not None
    if method.label_kind == "bipo":
        assert cfg is not None
        vector = train_bipo(model, list(pairs), layers=layer, config=cfg, checkpoint=checkpoint,
                            resume=resume)  # fmt: skip
    elif method.label_kind == "reps":
        assert isinstance(cfg, RePSConfig)
        vector = train_reps(model, list(pairs), layers=layer, config=cfg, checkpoint=checkpoint,
                            resume=resume)  # fmt: skip
    elif method.kind == "caa":
        vector = caa_vector(model, list(pairs), layers=layer, progress=False)
    elif method.kind == "pca":
        vector = pca_vector(model, list(pairs), layers=layer, progress=False)
    else:
        assert callable(method.kind)
        vector = method.kind(model, list(pairs), layers=layer)
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
    _write_json(info_path, info)  # last: its presence marks the vector done
    ckpt.unlink(missing_ok=True)
    return vector, info


def _score(model: Any, metric: str, vector: SteeringVector | None, behaviour: Behaviour,
           method: Method, s: Settings) -> list[dict[str, Any]]:  # fmt: skip
    """One metric's rows for one cell: per item where the metric has items."""
    if method.label_kind == "prompt":
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
    already holds.

    Returns ``{"folder": path}``, or ``{"error": message}`` when the cell failed.
    """
    try:
        model = _model_for(model_or_spec) if isinstance(model_or_spec, ModelSpec) else model_or_spec
        method = methods[cell.method]
        folder = cell_folder(Path(root), cell, behaviour, method, methods, config)
        folder.mkdir(parents=True, exist_ok=True)
        vector = None
        if method.label_kind != "prompt":
            vector, _ = _cell_vector(model, folder, cell, behaviour, method, methods, config,
                                     Path(root))  # fmt: skip
        for metric in settings.metrics:
            path = _metric_file(folder, metric, behaviour, method, settings)
            if path.exists():
                continue
            t0 = time.perf_counter()
            rows = _score(model, metric, vector, behaviour, method, settings)
            _write_json(path, {"seconds": time.perf_counter() - t0, "rows": rows})
    except Exception as e:  # noqa: BLE001 - reported by cell name after the other cells
        return {"error": f"{type(e).__name__}: {e}"}
    return {"folder": str(folder)}


def _as_behaviours(datasets: Mapping[str, Any]) -> dict[str, Behaviour]:
    out = {}
    for name, value in datasets.items():
        if isinstance(value, Behaviour):
            out[name] = value if value.name == name else dataclasses.replace(value, name=name)
        elif isinstance(value, tuple) and len(value) == 2:
            out[name] = Behaviour(name, value[0], value[1])
        else:
            raise ConfigError(
                f"datasets[{name!r}] must be a Behaviour or a (training pairs, evaluation pairs) "
                f"tuple, got {type(value).__name__}"
            )
    return out


def _as_methods(methods: Sequence[Any]) -> dict[str, Method]:
    out: dict[str, Method] = {}
    for m in methods:
        if isinstance(m, str):
            m = Method(m)
        elif callable(m) and not isinstance(m, Method):
            m = Method(getattr(m, "__name__", "custom"), m)
        if not isinstance(m, Method):
            raise ConfigError(f"a method is a name, a Method or a callable, got {m!r}")
        if m.name in out and out[m.name] != m:
            raise ConfigError(f"two methods are named {m.name!r}")
        out[m.name] = m
    for m in out.values():
        if m.norm_of is not None and m.norm_of not in out:
            raise ConfigError(f"method {m.name!r}: norm_of={m.norm_of!r} is not among the methods")
    return out


def _check(behaviours: Mapping[str, Behaviour], methods: Mapping[str, Method],
           metrics_for: Callable[[str], Sequence[str]]) -> None:  # fmt: skip
    """Fail before any work on a metric a behaviour has no data for."""
    for b in behaviours.values():
        metrics = metrics_for(b.name)
        if not metrics:
            raise ConfigError("metric names no metric")
        for metric in metrics:
            if metric not in METRICS:
                raise ConfigError(
                    f"metric must be one of {', '.join(METRICS)} or 'auto', got {metric!r}"
                )
        if any(m.label_kind != "prompt" for m in methods.values()) and not b.pairs:
            raise ConfigError(f"behaviour {b.name!r} has no training pairs")
        if ("margin" in metrics or "ab" in metrics) and not b.eval_pairs:
            raise ConfigError(f"behaviour {b.name!r}: metric 'margin'/'ab' needs eval_pairs")
        if "ab" in metrics and not all(p.is_ab for p in b.eval_pairs):
            raise ConfigError(f"behaviour {b.name!r}: metric 'ab' needs A/B eval_pairs")
        if "open_ended" in metrics and not b.questions:
            raise ConfigError(f"behaviour {b.name!r}: metric 'open_ended' needs questions")
        if any(m.label_kind == "prompt" for m in methods.values()) and not b.system_prompts():
            raise ConfigError(
                f"behaviour {b.name!r}: the prompting baseline needs system prompts: set "
                f"Behaviour(prompting=(toward, away)) or a key of sl.BEHAVIOUR_PROMPTS"
            )


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
            ``model.steerlens_spec``, which :func:`~steerlens.models.load_model` sets).
        datasets: ``{name: Behaviour}``, or ``{name: (training pairs, evaluation pairs)}``.
        layers: block indices (the prompting baseline has one cell, layer -1).
        methods: names (``"bipo"``, ``"reps"``, ``"caa"``, ``"pca"``, ``"prompt"``),
            :class:`Method` recipes or callables ``f(model, pairs, layers=...)``.
        seeds: seeds of BiPO, RePS and callables; CAA, PCA and prompting have seed 0 alone.
        multipliers: scored for every cell (0 is the unsteered baseline); the prompting
            baseline is scored at -1 (away), 0 and +1 (toward).
        config: :class:`~steerlens.bipo.BiPOConfig` for BiPO and RePS methods without their
            own (its ``seed`` is the cell's).
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
    behaviours = _as_behaviours(datasets)
    method_map = _as_methods(methods)
    if isinstance(metric, str):
        metric_list = [metric]
    else:
        metric_list = list(metric)
    per_behaviour: dict[str, str] = {}
    if "auto" in metric_list:  # per behaviour: A/B score when every evaluation pair is A/B
        per_behaviour = {name: "ab" if b.eval_pairs and all(p.is_ab for p in b.eval_pairs)
                         else "margin" for name, b in behaviours.items()}  # fmt: skip
        metric_list = [m for m in metric_list if m != "auto"]
    cells = [
        Cell(name, m.name, PROMPT_LAYER if m.label_kind == "prompt" else int(layer),
             int(seed) if m.seeded else 0)
        for name in behaviours
        for m in method_map.values()
        for layer in layers
        for seed in seeds
    ]  # fmt: skip
    cells = list(dict.fromkeys(cells))
    root = Path(folder) if folder is not None else cache_dir() / "sweeps"
    root.mkdir(parents=True, exist_ok=True)

    def settings_for(name: str) -> Settings:
        ms = tuple(dict.fromkeys(metric_list + ([per_behaviour[name]] if per_behaviour else [])))
        return Settings(tuple(float(m) for m in multipliers), positions, ms, int(max_new_tokens))

    _check(behaviours, method_map, lambda name: settings_for(name).metrics)
    failed: dict[str, str] = {}
    bare = {n: dataclasses.replace(b, judge=None) for n, b in behaviours.items()}
    bar = tqdm(total=len(cells), desc="sweep", disable=not progress)
    args = [(c, bare[c.dataset], method_map, settings_for(c.dataset), config, str(root))
            for c in cells]  # fmt: skip
    if executor is None:
        results = (run_cell(model, *a) for a in args)
    else:
        spec = model_spec(model)  # what travels: never the model object
        extra = {"pure": False, "retries": retries} if hasattr(executor, "scheduler_info") else {}
        futures = [executor.submit(run_cell, spec, *a, **extra) for a in args]
        results = (f.result() for f in futures)
    for cell, result in zip(cells, results, strict=True):
        if "error" in result:
            failed[cell.key] = result["error"]
        bar.update(1)
    bar.close()
    if failed:
        lines = "; ".join(f"cell {k}: {v}" for k, v in failed.items())
        raise SweepError(
            f"{len(failed)} of {len(cells)} cells failed ({lines}); the other cells are saved "
            f"in {root} and a rerun computes only the missing ones",
            failed,
        )
    items = read_cells(root, cells, behaviours, method_map, settings_for, config)
    return items if per_item else summarize(items)


def read_cells(root: Path, cells: Sequence[Cell], behaviours: Mapping[str, Behaviour],
               methods: Mapping[str, Method], settings_for: Callable[[str], Settings],
               config: BiPOConfig | None) -> pd.DataFrame:  # fmt: skip
    """Every item of the given finished cells, open-ended answers judged by their behaviour's
    judge (``behaviour`` is NaN without one)."""
    frames = []
    for c in cells:
        b, m, s = behaviours[c.dataset], methods[c.method], settings_for(c.dataset)
        folder = cell_folder(root, c, b, m, methods, config)
        info = {"norm": math.nan, "seconds": 0.0, "worker": "", "device": ""}
        if (folder / "train.json").exists():
            info = json.loads((folder / "train.json").read_text())
        for metric in s.metrics:
            payload = json.loads(_metric_file(folder, metric, b, m, s).read_text())
            df = pd.DataFrame.from_records(payload["rows"])
            if df.empty:
                continue
            for k, v in asdict(c).items():
                df[k] = v
            df["norm"], df["seconds"], df["worker"] = info["norm"], info["seconds"], info["worker"]
            df["device"] = info.get("device", "")
            df["metric_seconds"] = payload["seconds"]
            if metric == "open_ended":
                df["behaviour"] = (judge_scores(b.judge, judged_texts(b.judge, df))
                                   if b.judge is not None else math.nan)  # fmt: skip
                with np.errstate(divide="ignore", invalid="ignore"):
                    df["perplexity"] = np.exp(df["nll"] / df["tokens"].replace(0, np.nan))
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", "layer", "seed", "metric", "multiplier"])
    out = pd.concat(frames, ignore_index=True)
    front = ["dataset", "method", "layer", "seed", "metric", "multiplier"]
    return out[front + [c for c in out.columns if c not in front]]


_VALUE_NAME = {"margin": "margin", "ab": "score", "kl": "kl", "open_ended": "behaviour"}


def summarize(items: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """One row per cell and multiplier from :func:`sweep_grid`'s ``per_item=True`` table:
    each metric's mean with a 95% bootstrap interval over items (questions for open-ended
    answers), open-ended coherence (token-weighted ``perplexity``, ``distinct2`` of all
    answers together), and the cell's ``norm``, ``seconds``, ``worker``.

    Examples:
        >>> items = pd.DataFrame({"dataset": "d", "method": "caa", "layer": 1, "seed": 0,
        ...     "metric": "margin", "multiplier": 1.0, "item": [0, 1], "value": [1.0, 3.0],
        ...     "positions": "all", "norm": 2.0, "seconds": 0.1, "worker": "w"})
        >>> row = summarize(items).iloc[0]
        >>> float(row["margin"]), float(row["matching_likelier"]), int(row["n"])
        (2.0, 1.0, 2)
    """
    keys = ["dataset", "method", "layer", "seed", "multiplier"]
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (metric, *key), grp in items.groupby(["metric"] + keys, sort=False):
        row = rows.setdefault(tuple(key), dict(zip(keys, key, strict=True)))
        name = _VALUE_NAME[metric]
        col = "behaviour" if metric == "open_ended" else "value"
        if metric == "open_ended":
            row["answers"] = len(grp)
        elif metric != "kl":
            row["n"] = len(grp)
        if "positions" in grp:
            row.setdefault("positions", grp["positions"].iloc[0])
        for extra in ("norm", "seconds", "worker"):
            row[extra] = grp[extra].iloc[0]
        if metric == "kl":
            row["kl"] = float(grp["value"].mean())
            continue
        values = grp[col].to_numpy(dtype=float)
        if np.isfinite(values).all():
            iv = bootstrap_mean(values, groups=grp["item"].to_numpy(), seed=seed)
            row[name], row[f"{name}_low"], row[f"{name}_high"] = iv.estimate, iv.low, iv.high
        else:
            row[name] = row[f"{name}_low"] = row[f"{name}_high"] = math.nan
        if metric == "margin":
            row["matching_likelier"] = float((values > 0).mean())
        elif metric == "ab":
            row["matching_likelier"] = float((values > 0.5).mean())
        else:
            row["perplexity"], row["distinct2"] = coherence(grp)
    return pd.DataFrame.from_records(list(rows.values()))


def load_vector(folder: str | os.PathLike[str]) -> SteeringVector:
    """The vector a finished cell saved (``folder``: the cell's folder, as in the
    ``folder`` column of ``sweep_grid(..., per_item=True)`` rows' cache)."""
    return SteeringVector.load(Path(folder) / "vector.safetensors")


def find_cells(root: str | os.PathLike[str], key: str) -> list[Path]:
    """The cache folders of the cells whose key (``behaviour__method__L<layer>__s<seed>``)
    starts with ``key``, newest first.

    Examples:
        >>> import tempfile
        >>> find_cells(tempfile.mkdtemp(), "power__caa")
        []
    """
    found = [p for p in Path(root).glob(f"{key}*") if any(p.glob("*.json"))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


__all__ = [
    "Behaviour",
    "build_vector",
    "Cell",
    "METRICS",
    "Method",
    "Settings",
    "SweepError",
    "cell_folder",
    "find_cells",
    "load_vector",
    "read_cells",
    "run_cell",
    "summarize",
    "sweep_grid",
]
