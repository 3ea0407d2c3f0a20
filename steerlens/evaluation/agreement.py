"""How well a judge agrees with readers on the answers it judges.

A judge is only as good as its agreement with people reading the same *generated* answers.
:func:`judge_agreement` scores labelled answers with a judge and compares, per behaviour:

* ``rank_corr``: rank correlation (Spearman) of the judge's score and the readers' stance, per
  answer;
* ``sign_acc``: on answers the readers gave a stance (mean label not 0), the share the judge
  puts on the same side of 0.5;
* ``cond_corr``: correlation (Pearson) of the per-condition means (a condition is a method at a
  multiplier) of the judge's scores and of the readers' stance: what verdicts are made of;
* ``range_error``: the mean, over the comparisons in ``ranges`` (a method at ``+m`` minus at
  ``-m``), of ``|judge's range - readers' range / 2|``: the readers' stance runs from -1 to 1,
  a judge's score from 0 to 1, so half the readers' range is on the judge's scale.

Each comes with a 95% percentile bootstrap interval over questions (a question carries all its
answers, as in :mod:`steerlens.core.intervals`). Labels are read by :func:`load_labels` from the
gold files' JSONL (``stance`` and ``fluency`` as lists, one label per reader) or from a CSV of
the same columns (one label per reader in ``stance``, ``stance_2``, ...); the small labelling
workflow for a new behaviour is :func:`export_for_labelling` (a blind, shuffled CSV for readers
and a separate key) and :func:`read_labels` (their labels back, joined to the key).

Examples:
    >>> import numpy as np, pandas as pd
    >>> labels = pd.DataFrame({"behaviour": "b", "question": np.repeat(list("abcd"), 2),
    ...     "answer": "x", "method": "caa", "multiplier": [-1.0, 1.0] * 4,
    ...     "stance": [-1.0, 1.0] * 4})
    >>> row = agreement_from_scores(labels, np.tile([0.2, 0.8], 4), ranges=[("caa", 1.0)])
    >>> round(float(row["rank_corr"].iloc[0]), 6), round(float(row["range_error"].iloc[0]), 6)
    (1.0, 0.4)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlens.core.errors import DataError
from steerlens.core.intervals import N_BOOT, SEED

#: The comparisons of the gold files' verdicts: a method at +m minus at -m.
GOLD_RANGES: tuple[tuple[str, float], ...] = (
    ("bipo-full", 0.5),
    ("bipo-full", 1.0),
    ("caa", 0.5),
    ("caa", 1.0),
    ("prompt", 1.0),
)
#: The columns :func:`load_labels` returns (``stance`` and ``fluency`` are reader means).
LABEL_COLUMNS = ("behaviour", "question", "answer", "method", "multiplier", "stance", "fluency")
STATS = ("rank_corr", "sign_acc", "cond_corr", "range_error")


def _mean_label(value: Any) -> float:
    if isinstance(value, (list, tuple)):
        vals = [float(v) for v in value if v is not None and v == v]
        return float(np.mean(vals)) if vals else float("nan")
    return float(value)


def load_labels(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Labelled answers: a gold JSONL file, a folder of them, a CSV, or a list of any.

    Returns one row per answer with :data:`LABEL_COLUMNS` (``stance`` and ``fluency`` the mean
    over readers) and every other column the file has (``item``, ``layer``, ``cell`` ...).

    Raises:
        DataError: a missing file, or a row without a field, naming file and row.

    Examples:
        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "b.jsonl")
        >>> row = {"behaviour": "b", "question": "q", "answer": "a", "method": "caa",
        ...        "multiplier": 1, "stance": [1, 0], "fluency": [2, 2]}
        >>> _ = open(path, "w").write(json.dumps(row) + "\\n")
        >>> load_labels(path)[["stance", "fluency"]].values.tolist()
        [[0.5, 2.0]]
    """
    if isinstance(path, (list, tuple)):
        return pd.concat([load_labels(p) for p in path], ignore_index=True)
    p = Path(path)  # type: ignore[arg-type]
    if p.is_dir():
        files = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.csv"))
        if not files:
            raise DataError(f"{p}: no .jsonl or .csv label files")
        return load_labels(files)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix == ".csv":
        df = pd.read_csv(p)
        for field in ("stance", "fluency"):
            cols = [c for c in df.columns if c == field or c.startswith(f"{field}_")]
            if cols:
                df[field] = df[cols].astype(float).mean(axis=1)
        rows = df.to_dict("records")
    else:
        rows = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}: line {n}: not JSON ({e})") from e
    out = []
    for n, r in enumerate(rows, 1):
        missing = [c for c in LABEL_COLUMNS if c != "fluency" and c not in r]
        if missing:
            raise DataError(f"{p}: row {n}: field {missing[0]!r} is missing")
        r = dict(r)
        r["stance"] = _mean_label(r["stance"])
        r["fluency"] = _mean_label(r.get("fluency", float("nan")))
        r["multiplier"] = float(r["multiplier"])
        out.append(r)
    df = pd.DataFrame.from_records(out)
    return df[list(LABEL_COLUMNS) + [c for c in df.columns if c not in LABEL_COLUMNS]]


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's correlation uses them)."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(x), dtype=float)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class _Answers:
    """One behaviour's scored answers as arrays, for fast resampling by question."""

    def __init__(self, g: pd.DataFrame, ranges: Sequence[tuple[str, float]]) -> None:
        self.s, self.y = g["score"].to_numpy(float), g["stance"].to_numpy(float)
        keys = list(zip(g["method"], g["multiplier"].astype(float), strict=True))
        where = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        self.c = np.array([where[k] for k in keys])
        self.n_cond = len(where)
        self.pairs = [(where[(m, float(p))], where[(m, -float(p))]) for m, p in ranges
                      if (m, float(p)) in where and (m, -float(p)) in where]  # fmt: skip
        q = pd.factorize(g["question"])[0]
        self.rows = [np.flatnonzero(q == i) for i in range(int(q.max()) + 1)]

    def stats(self, idx: np.ndarray) -> dict[str, float]:
        s, y, c = self.s[idx], self.y[idx], self.c[idx]
        signed = y != 0
        n = np.bincount(c, minlength=self.n_cond).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ms = np.bincount(c, s, self.n_cond) / n
            my = np.bincount(c, y, self.n_cond) / n
        seen = n > 0
        errors = [abs((ms[h] - ms[lo]) - (my[h] - my[lo]) / 2) for h, lo in self.pairs
                  if seen[h] and seen[lo]]  # fmt: skip
        sign = float(((s[signed] > 0.5) == (y[signed] > 0)).mean()) if signed.any() else np.nan
        return {"rank_corr": _corr(_rank(s), _rank(y)), "sign_acc": sign,
                "cond_corr": _corr(ms[seen], my[seen]),
                "range_error": float(np.mean(errors)) if errors else float("nan")}  # fmt: skip


def agreement_from_scores(
    labels: pd.DataFrame,
    scores: Sequence[float] | np.ndarray,
    *,
    ranges: Sequence[tuple[str, float]] = GOLD_RANGES,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """:func:`judge_agreement` for scores already computed (one per row of ``labels``).

    Returns one row per behaviour: ``n`` answers, ``questions``, and per statistic of
    :data:`STATS` its value with ``<stat>_low`` / ``<stat>_high`` bounds.
    """
    df = labels.assign(score=np.asarray(scores, dtype=float))
    if len(df) != len(labels):
        raise DataError(f"{len(scores)} scores for {len(labels)} labelled answers")
    rng = np.random.default_rng(seed)
    q = (1 - level) / 2
    rows = []
    for behaviour, g in df.groupby("behaviour", sort=False):
        row: dict[str, Any] = {"behaviour": behaviour, "n": len(g),
                               "questions": g["question"].nunique()}  # fmt: skip
        answers = _Answers(g, ranges)
        row.update(answers.stats(np.arange(len(g))))
        boots = []
        for _ in range(n_boot):
            pick = rng.integers(0, len(answers.rows), len(answers.rows))
            boots.append(answers.stats(np.concatenate([answers.rows[i] for i in pick])))
        for stat in STATS:
            vals = np.array([b[stat] for b in boots], dtype=float)
            vals = vals[np.isfinite(vals)]
            lo, hi = np.quantile(vals, [q, 1 - q]) if len(vals) else (np.nan, np.nan)
            row[f"{stat}_low"], row[f"{stat}_high"] = float(lo), float(hi)
        rows.append(row)
    cols = ["behaviour", "n", "questions"]
    for stat in STATS:
        cols += [stat, f"{stat}_low", f"{stat}_high"]
    return pd.DataFrame.from_records(rows)[cols]


def judge_agreement(
    judge: Any,
    labels: pd.DataFrame | str | os.PathLike[str],
    *,
    ranges: Sequence[tuple[str, float]] = GOLD_RANGES,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """Agreement of ``judge`` with readers' labels, per behaviour (see the module docstring).

    Args:
        judge: a :class:`~steerlens.evaluation.judge.BehaviourJudge`, any callable ``texts ->
            scores`` in 0..1, or a mapping ``{behaviour: judge}``; each answer is scored with
            its question (:func:`~steerlens.evaluation.answers.score_answers`).
        labels: :func:`load_labels`' table, or a path it reads.
        ranges: the ``(method, m)`` comparisons whose range error is averaged.

    Examples:
        >>> import pandas as pd
        >>> labels = pd.DataFrame({"behaviour": "b", "question": ["q1", "q1", "q2", "q2"],
        ...     "answer": ["yes", "no", "yes", "no"], "method": "caa",
        ...     "multiplier": [1.0, -1.0] * 2, "stance": [1.0, -1.0] * 2})
        >>> judge = lambda texts: [0.9 if t == "yes" else 0.1 for t in texts]
        >>> row = judge_agreement(judge, labels, ranges=[("caa", 1.0)], n_boot=10).iloc[0]
        >>> round(float(row["cond_corr"]), 3), round(float(row["range_error"]), 3)
        (1.0, 0.2)
    """
    from steerlens.evaluation.answers import score_answers

    table = labels if isinstance(labels, pd.DataFrame) else load_labels(labels)
    scores = np.zeros(len(table))
    for behaviour, g in table.groupby("behaviour", sort=False):
        j = judge[behaviour] if isinstance(judge, dict) else judge
        idx = np.flatnonzero((table["behaviour"] == behaviour).to_numpy())
        scores[idx] = score_answers(j, g["answer"].tolist(), g["question"].tolist())
    return agreement_from_scores(table, scores, ranges=ranges, level=level, n_boot=n_boot,
                                 seed=seed)  # fmt: skip


def export_for_labelling(
    answers: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = SEED,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a blind, shuffled sample of answers for readers, and its key apart.

    ``answers`` has ``question`` (or ``prompt``) and ``answer`` (or ``text``) columns and any
    condition columns (``behaviour``, ``method``, ``multiplier`` ...). ``path`` (a CSV) gets
    ``id, question, answer`` and empty ``stance`` and ``fluency`` columns, rows shuffled: the
    readers see no condition. ``<path stem>.key.csv`` maps each ``id`` to its row's conditions;
    :func:`read_labels` joins them back.

    Returns:
        ``(sheet, key)`` paths.

    Examples:
        >>> import pandas as pd, tempfile, os
        >>> answers = pd.DataFrame({"prompt": ["Q?"], "text": ["A."], "multiplier": [1.0]})
        >>> sheet, key = export_for_labelling(answers, os.path.join(tempfile.mkdtemp(), "s.csv"))
        >>> list(pd.read_csv(sheet).columns), "multiplier" in pd.read_csv(key)
        (['id', 'question', 'answer', 'stance', 'fluency'], True)
    """
    from steerlens.core.fileio import atomic_write

    df = answers.rename(columns={"prompt": "question", "text": "answer"}).reset_index(drop=True)
    for col in ("question", "answer"):
        if col not in df:
            raise DataError(f"export_for_labelling: answers need a {col!r} column")
    order = np.random.default_rng(seed).permutation(len(df))[: n or len(df)]
    sample = df.iloc[order].reset_index(drop=True)
    sample.insert(0, "id", [f"a{i:05d}" for i in range(len(sample))])
    sheet = Path(path)
    key = sheet.with_name(sheet.stem + ".key.csv")
    for p in (sheet, key):
        if p.exists() and not overwrite:
            raise DataError(f"{p}: exists; pass overwrite=True to replace it")
    blind = sample[["id", "question", "answer"]].assign(stance="", fluency="")
    keep = [c for c in sample.columns if c not in ("question", "answer")]
    atomic_write(sheet, lambda tmp: blind.to_csv(tmp, index=False))
    atomic_write(key, lambda tmp: sample[keep].to_csv(tmp, index=False))
    return sheet, key


def read_labels(
    sheets: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    key: str | os.PathLike[str],
) -> pd.DataFrame:
    """Readers' labelled sheets (from :func:`export_for_labelling`; one per reader) joined to
    the key: :func:`load_labels`' table, ``stance`` and ``fluency`` the readers' means.

    Raises:
        DataError: a sheet row whose stance is not -1, 0 or 1 (or fluency not 0, 1 or 2), or
            whose ``id`` is not in the key, naming sheet and row.

    Examples:
        >>> import pandas as pd, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> answers = pd.DataFrame({"prompt": ["Q?"], "text": ["A."], "multiplier": [1.0]})
        >>> sheet, key = export_for_labelling(answers, os.path.join(folder, "s.csv"))
        >>> pd.read_csv(sheet).assign(stance=1, fluency=2).to_csv(sheet, index=False)
        >>> read_labels(sheet, key)[["answer", "multiplier", "stance"]].values.tolist()
        [['A.', 1.0, 1.0]]
    """
    paths = [sheets] if isinstance(sheets, (str, os.PathLike)) else list(sheets)
    k = pd.read_csv(key)
    merged = None
    for r, p in enumerate(paths):
        s = pd.read_csv(p)
        for n, row in enumerate(s.itertuples(index=False), 2):
            if row.id not in set(k["id"]):
                raise DataError(f"{p}: line {n}: id {row.id!r} is not in the key {key}")
            for field, allowed in (("stance", (-1, 0, 1)), ("fluency", (0, 1, 2))):
                v = getattr(row, field)
                if pd.isna(v) or float(v) not in allowed:
                    raise DataError(f"{p}: line {n}: field {field!r} must be one of {allowed}, "
                                    f"got {v!r}")  # fmt: skip
        s = s.rename(columns={"stance": f"stance_{r}", "fluency": f"fluency_{r}"})
        merged = s if merged is None else merged.merge(
            s[["id", f"stance_{r}", f"fluency_{r}"]], on="id")  # fmt: skip
    assert merged is not None
    out = merged.merge(k, on="id")
    out["stance"] = out[[c for c in out if c.startswith("stance_")]].astype(float).mean(axis=1)
    out["fluency"] = out[[c for c in out if c.startswith("fluency_")]].astype(float).mean(axis=1)
    for col, default in (("behaviour", "behaviour"), ("method", ""), ("multiplier", np.nan)):
        if col not in out:
            out[col] = default
    return out[list(LABEL_COLUMNS) + [c for c in out.columns if c not in LABEL_COLUMNS]]


__all__ = [
    "GOLD_RANGES",
    "LABEL_COLUMNS",
    "STATS",
    "agreement_from_scores",
    "export_for_labelling",
    "judge_agreement",
    "load_labels",
    "read_labels",
]
