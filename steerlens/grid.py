"""Grid sweeps beyond one process: datasets x methods x layers x seeds, one cell a task.

:func:`sweep_grid` trains one vector per cell (a behaviour's dataset, a method, a layer, a seed),
scores it at every multiplier and returns one tidy table. It runs in-process by default; with
``executor=`` any ``concurrent.futures.Executor``-compatible object runs the cells: a
``ProcessPoolExecutor``, a ``dask.distributed.Client`` (a ``LocalCluster``, or a SLURM/PBS
cluster from ``dask-jobqueue``, or Kubernetes from ``dask-kubernetes``). What travels to a
worker is the model's :class:`~steerlens.models.ModelSpec` (name, dtype, device), never the
model object; each worker process loads the model once and reuses it for every cell it runs.

Every finished cell is written at once, atomically, to a folder keyed by the data and the
settings (its vector as safetensors, its rows as JSON); a rerun skips finished cells, so an
interrupted sweep resumes where it stopped. On Dask a cell whose worker dies is run again on
another worker (``retries``). A cell that fails (say, a layer out of range) is reported by
name after the other cells have finished and been saved.

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

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from steerlens.bipo import BiPOConfig
from steerlens.data import PreferencePair
from steerlens.errors import ConfigError, SteerlensError
from steerlens.evaluate import DEFAULT_MULTIPLIERS
from steerlens.fileio import atomic_write, cache_dir
from steerlens.models import ModelSpec, model_spec
from steerlens.sweep import score_vector, train_vector
from steerlens.vector import Positions, SteeringVector

Datasets = Mapping[str, tuple[Sequence[PreferencePair], Sequence[PreferencePair]]]


class SweepError(SteerlensError, RuntimeError):
    """Some cells of a sweep failed; the others are saved (``err.failed``: cell -> message)."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


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
class _Settings:
    multipliers: tuple[float, ...]
    positions: Any
    metric: str
    config: dict[str, Any]


_MODELS: dict[ModelSpec, Any] = {}  # per process: each worker loads its model once


def _model_for(spec: ModelSpec) -> Any:
    if spec not in _MODELS:
        _MODELS[spec] = spec.load()
    return _MODELS[spec]


def run_cell(
    model_or_spec: Any,
    cell: Cell,
    pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair],
    settings: _Settings,
    folder: str,
) -> dict[str, Any]:
    """Train, score and save one cell (in whatever process runs it).

    Returns ``{"rows": [...]}``, or ``{"error": message}`` when the cell failed.
    """
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        model = _model_for(model_or_spec) if isinstance(model_or_spec, ModelSpec) else model_or_spec
        config = BiPOConfig(**{**settings.config, "seed": cell.seed, "progress": False})
        vector = train_vector(
            model, pairs, layers=cell.layer, method=cell.method, config=config, progress=False
        )
        vector.metadata.update(dataset=cell.dataset, seed=cell.seed)
        df = score_vector(
            model, vector, eval_pairs, multipliers=settings.multipliers,
            positions=settings.positions, metric=settings.metric, progress=False,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - reported by cell name after the other cells
        return {"error": f"{type(e).__name__}: {e}"}
    seconds = time.perf_counter() - t0
    rows = [
        {**asdict(cell), **row, "norm": sum(vector.norms().values()), "seconds": seconds,
         "worker": worker}
        for row in df.to_dict("records")
    ]  # fmt: skip
    base = Path(folder) / cell.key
    vector.save(base.with_suffix(".safetensors"), overwrite=True)
    payload = json.dumps(rows)

    def write(tmp: str) -> None:
        Path(tmp).write_text(payload)

    atomic_write(base.with_suffix(".json"), write)  # last: its presence marks the cell done
    return {"rows": rows}


def _fingerprint(datasets: Datasets, settings: _Settings) -> str:
    h = hashlib.sha256()
    for name in sorted(datasets):
        h.update(name.encode())
        for group in datasets[name]:
            for p in group:
                h.update(json.dumps([p.question, p.matching, p.not_matching]).encode())
            h.update(b"|")
    pos = settings.positions if isinstance(settings.positions, (str, int)) else "mask"
    h.update(
        json.dumps(
            [settings.multipliers, pos, settings.metric, settings.config], default=str
        ).encode()
    )
    return h.hexdigest()[:12]


def sweep_grid(
    model: Any,
    datasets: Datasets,
    *,
    layers: Sequence[int],
    methods: Sequence[str] = ("bipo", "caa"),
    seeds: Sequence[int] = (0,),
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    config: BiPOConfig | None = None,
    positions: Positions = "all",
    folder: str | os.PathLike[str] | None = None,
    metric: str = "auto",
    executor: Any = None,
    retries: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Train and score one vector per (dataset, method, layer, seed) cell.

    Args:
        model: the model (in-process runs use it; workers load it from
            ``model.steerlens_spec``, which :func:`~steerlens.models.load_model` sets).
        datasets: ``{name: (training pairs, evaluation pairs)}``, e.g. one per behaviour.
        layers: block indices.
        methods: ``"bipo"``, ``"caa"``, ``"pca"``.
        seeds: BiPO seeds (batch order and directions); CAA and PCA give the same vector for
            every seed.
        multipliers: scored for every cell (0 is the unsteered baseline).
        positions: steered positions when scoring (``"all"`` or ``"after_prompt"``).
        config: :class:`~steerlens.bipo.BiPOConfig` for BiPO cells (its ``seed`` is the cell's).
        metric: ``"ab"``, ``"margin"`` or ``"auto"`` (see :func:`~steerlens.sweep.score_vector`).
        folder: where cells are saved (default: the steerlens cache); a subfolder named by a
            hash of the data and the settings holds one ``.json`` and one ``.safetensors`` per
            finished cell. A rerun with the same data and settings computes only the missing
            cells.
        executor: ``None`` (in-process, one cell after another), or anything with
            ``submit(fn, *args)`` returning futures with ``.result()``: a
            ``concurrent.futures.ProcessPoolExecutor`` or a ``dask.distributed.Client``.
        retries: on Dask, how often a cell whose worker died is run again.

    Returns:
        One row per cell and multiplier: ``dataset``, ``method``, ``layer``, ``seed``,
        ``multiplier``, the metric columns, ``n``, ``positions``, ``norm``, ``seconds`` (the
        cell's wall time) and ``worker`` (host:pid), in a fixed cell order.

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
        raise ConfigError("datasets must name at least one (pairs, eval_pairs) entry")
    cells = [
        Cell(name, str(method), int(layer), int(seed) if method == "bipo" else 0)
        for name in datasets
        for method in methods
        for layer in layers
        for seed in (seeds if method == "bipo" else (0,))
    ]
    cells = list(dict.fromkeys(cells))
    cfg = asdict(config or BiPOConfig())
    settings = _Settings(tuple(float(m) for m in multipliers), positions, metric, cfg)
    root = Path(folder) if folder is not None else cache_dir() / "sweeps"
    out = root / _fingerprint(datasets, settings)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not (out / f"{c.key}.json").exists()]
    failed: dict[str, str] = {}
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", disable=not progress)
    if executor is None:
        results = (
            run_cell(model, c, *datasets[c.dataset], settings, str(out)) for c in todo
        )  # fmt: skip
    else:
        spec = model_spec(model)  # what travels: never the model object
        extra = {"pure": False, "retries": retries} if hasattr(executor, "scheduler_info") else {}
        futures = [
            executor.submit(run_cell, spec, c, *datasets[c.dataset], settings, str(out), **extra)
            for c in todo
        ]
        results = (f.result() for f in futures)
    for cell, result in zip(todo, results, strict=True):
        if "error" in result:
            failed[cell.key] = result["error"]
        bar.update(1)
    bar.close()
    if failed:
        lines = "; ".join(f"cell {k}: {v}" for k, v in failed.items())
        raise SweepError(
            f"{len(failed)} of {len(cells)} cells failed ({lines}); the other cells are saved "
            f"in {out} and a rerun computes only the missing ones",
            failed,
        )
    rows = []
    for c in cells:
        rows += json.loads((out / f"{c.key}.json").read_text())
    return pd.DataFrame.from_records(rows)


def load_vector(folder: str | os.PathLike[str], cell: Cell) -> SteeringVector:
    """The vector a finished cell saved (``folder`` is the sweep's hashed subfolder)."""
    return SteeringVector.load(Path(folder) / f"{cell.key}.safetensors")


__all__ = ["Cell", "SweepError", "load_vector", "run_cell", "sweep_grid"]
