"""The engine's on-disk cell cache: one folder a cell, named by a hash of what makes its
vector, one JSON file a metric, named by a hash of what makes its scores (see
:mod:`steerlens.experiments.grid`).

Examples:
    >>> import tempfile
    >>> find_cells(tempfile.mkdtemp(), "power__caa")
    []
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from steerlens.core.data import PreferencePair
from steerlens.core.fileio import atomic_write
from steerlens.evaluation.answers import score_answers
from steerlens.evaluation.scoring import perplexity
from steerlens.experiments.vocabulary import (
    Behaviour,
    Cell,
    Method,
    Settings,
)
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.steering.vector import SteeringVector


def hash_parts(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def pairs_json(pairs: Sequence[PreferencePair]) -> list[list[str]]:
    return [[p.question, p.matching, p.not_matching] for p in pairs]


def positions_key(positions: Any) -> Any:
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
    train = pairs_json(used) if method.makes_vector else []
    return root / f"{cell.key}-{hash_parts(train, recipe, cell.layer, cell.seed)}"


def metric_file(folder: Path, metric: str, behaviour: Behaviour, method: Method,
                 s: Settings) -> Path:  # fmt: skip
    pos = positions_key(s.positions)
    if metric in ("margin", "ab"):
        data: Any = pairs_json(behaviour.eval_pairs)
    elif metric == "open_ended":
        data = [list(behaviour.questions), s.max_new_tokens]
        if not method.makes_vector:
            data.append(list(behaviour.system_prompts() or ()))
    else:
        data = list(s.kl_texts)
    mults = list(s.multipliers) if method.makes_vector else [-1.0, 0.0, 1.0]
    return folder / f"{metric}-{hash_parts(metric, data, mults, pos)}.json"


def file_hash(path: Path) -> str | None:
    """A short SHA-256 of a file's bytes (None: no file): what a metric file records of the
    vector its answers came from."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def recorded_vector(path: Path) -> str | None:
    """The :func:`file_hash` of the vector a metric file says it came from; None for a missing
    file or one written before vectors were kept."""
    return json.loads(path.read_text()).get("vector") if path.exists() else None


def made_by_kept_vector(path: Path, vector: Path) -> bool:
    """Whether a metric file came from the vector the cell keeps (``vector``)."""
    recorded = recorded_vector(path)
    return recorded is not None and recorded == file_hash(vector)


def stale_metrics(paths: Mapping[str, Path], vector: Path) -> list[str]:
    """The metrics whose file is missing or came from another vector than ``vector`` (the
    cell's ``vector.safetensors``): a file records its vector's :func:`file_hash`, so a deleted
    or rebuilt vector never keeps another vector's answers. Files written before vectors were
    kept record none: they are read as they are (a rebuilt vector deletes them first:
    :func:`forget_other_vectors`)."""
    current = file_hash(vector)
    out = []
    for metric, path in paths.items():
        if not path.exists():
            out.append(metric)
            continue
        recorded = recorded_vector(path)
        if recorded is not None and recorded != current:
            out.append(metric)
    return out


def forget_other_vectors(folder: Path, vector: Path) -> list[Path]:
    """Delete every score file in a cell's ``folder`` that did not come from ``vector`` (it
    records another vector's hash, or none: written before vectors were kept), whichever metric
    it holds: after a rebuild, a metric not asked for this time must not be read later beside a
    vector that did not make it. Judge scores are kept (they record the answers they scored).

    Returns:
        The files deleted.
    """
    current = file_hash(vector)
    gone = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "train.json" or path.name.startswith("judged-"):
            continue
        if recorded_vector(path) != current:
            path.unlink()
            gone.append(path)
    return gone


def write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


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


def judged(judge: Any, answers: pd.DataFrame, path: Path) -> Any:
    """The judge's scores of a metric file's answers, cached beside it as
    ``judged-<judge key>-<file stem>.json`` for a judge with a ``key`` (a fitted
    :class:`~steerlens.evaluation.judge.BehaviourJudge`, an LLM rubric judge): a rerun with the
    same judge reads them; another judge has another key and never reads them, and the file
    records a hash of the answers it scored, so answers written again are judged again."""
    key = getattr(judge, "key", None)
    cache = path.with_name(f"judged-{key}-{path.stem}.json") if isinstance(key, str) else None
    texts, prompts = answers["text"].tolist(), answers["prompt"].tolist()
    digest = hash_parts(texts, prompts)
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        if isinstance(saved, dict) and saved.get("answers") == digest:
            return saved["scores"]
    scores = score_answers(judge, texts, prompts).tolist()
    if cache is not None:
        write_json(cache, {"answers": digest, "scores": scores})
    return scores


def read_cells(root: Path, cells: Sequence[Cell], behaviours: Mapping[str, Behaviour],
               methods: Mapping[str, Method], settings_for: Callable[[str], Settings],
               config: BiPOConfig | None) -> pd.DataFrame:  # fmt: skip
    """Every item of the given finished cells, open-ended answers judged by their behaviour's
    judge (``behaviour`` is NaN without one; scores cached by :func:`judged`)."""
    frames = []
    for c in cells:
        b, m, s = behaviours[c.dataset], methods[c.method], settings_for(c.dataset)
        folder = cell_folder(root, c, b, m, methods, config)
        info = {"norm": math.nan, "seconds": 0.0, "worker": "", "device": ""}
        if (folder / "train.json").exists():
            info = json.loads((folder / "train.json").read_text())
        for metric in s.metrics:
            path = metric_file(folder, metric, b, m, s)
            payload = json.loads(path.read_text())
            df = pd.DataFrame.from_records(payload["rows"])
            if df.empty:
                continue
            for k, v in asdict(c).items():
                df[k] = v
            df["norm"], df["seconds"], df["worker"] = info["norm"], info["seconds"], info["worker"]
            df["device"] = info.get("device", "")
            df["metric_seconds"] = payload["seconds"]
            if metric == "open_ended":
                df["behaviour"] = judged(b.judge, df, path) if b.judge is not None else math.nan
                df["perplexity"] = perplexity(df["nll"], df["tokens"])
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["dataset", "method", "layer", "seed", "metric", "multiplier"])
    out = pd.concat(frames, ignore_index=True)
    front = ["dataset", "method", "layer", "seed", "metric", "multiplier"]
    return out[front + [c for c in out.columns if c not in front]]
