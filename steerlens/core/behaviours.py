"""The behaviour datasets' layout: BiPO's free-text pairs and CAA's A/B items, by name.

The two public collections (BiPO, Cao et al. 2024: ``bipo/<behaviour>/{train,test,test_infer}.csv``;
CAA, Rimsky et al. 2024: ``caa/generate/<behaviour>/generate_dataset.json`` and
``caa/test/<behaviour>/test_dataset_{ab,open_ended}.json``) keep each behaviour's files in one
place; :func:`behaviour_files` names them and :func:`load_behaviour` reads them, so benchmarks,
notebooks and tests stop spelling the layout out. ``root`` is the folder that holds ``bipo/``
and ``caa/`` (default: the ``STEERLENS_DATA`` environment variable). ``hallucination`` is BiPO's
set; ``hallucination-caa`` is CAA's.

Examples:
    >>> import tempfile
    >>> files = behaviour_files("sycophancy", tempfile.gettempdir())
    >>> files.family, files.train.name, files.questions.name
    ('caa', 'generate_dataset.json', 'test_dataset_open_ended.json')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerlens.core.data import PreferencePair, load_pairs, load_prompts
from steerlens.core.errors import DataError

#: behaviours of BiPO's collection (free-text pairs)
BIPO_BEHAVIOURS = ("power-seeking", "hallucination")
#: behaviours of CAA's collection (A/B items)
CAA_BEHAVIOURS = (
    "corrigible-neutral-HHH",
    "survival-instinct",
    "sycophancy",
    "refusal",
    "hallucination-caa",
)


@dataclass(frozen=True)
class BehaviourFiles:
    """Where one behaviour's files are.

    Attributes:
        name: the behaviour.
        family: ``"bipo"`` (free-text pairs) or ``"caa"`` (A/B items).
        train: training pairs.
        test: held-out pairs (BiPO: ``test.csv``, free text; CAA: the A/B test items).
        ab: A/B items (BiPO: ``test_infer.csv``; CAA: ``test_dataset_ab.json``).
        questions: open-ended questions (BiPO: ``test_infer.csv``; CAA:
            ``test_dataset_open_ended.json``).
    """

    name: str
    family: Literal["bipo", "caa"]
    train: Path
    test: Path
    ab: Path
    questions: Path


@dataclass(frozen=True)
class BehaviourData:
    """One behaviour's data, read (see :class:`BehaviourFiles` for what each part is)."""

    name: str
    family: Literal["bipo", "caa"]
    pairs: list[PreferencePair]
    test: list[PreferencePair]
    ab: list[PreferencePair]
    questions: list[str]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root``, else ``$STEERLENS_DATA``; a :class:`DataError` when neither is a folder."""
    value = root if root is not None else os.environ.get("STEERLENS_DATA")
    if value is None:
        raise DataError("no data folder: pass root= or set STEERLENS_DATA (holds bipo/ and caa/)")
    path = Path(value)
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder (it should hold bipo/ and caa/)")
    return path


def behaviour_files(name: str, root: str | os.PathLike[str] | None = None) -> BehaviourFiles:
    """The files of behaviour ``name`` under ``root`` (they need not exist yet).

    Examples:
        >>> behaviour_files("power-seeking", "data").train.as_posix()
        'data/bipo/power-seeking/train.csv'
    """
    base = Path(root) if root is not None else data_root()
    if name in BIPO_BEHAVIOURS:
        d = base / "bipo" / name
        return BehaviourFiles(name, "bipo", d / "train.csv", d / "test.csv",
                              d / "test_infer.csv", d / "test_infer.csv")  # fmt: skip
    folder = name.removesuffix("-caa") if name == "hallucination-caa" else name
    if name not in CAA_BEHAVIOURS and not (base / "caa" / "generate" / folder).is_dir():
        known = ", ".join(BIPO_BEHAVIOURS + CAA_BEHAVIOURS)
        raise DataError(f"{base}: no behaviour {name!r} (known: {known})")
    test = base / "caa" / "test" / folder
    return BehaviourFiles(name, "caa", base / "caa" / "generate" / folder / "generate_dataset.json",
                          test / "test_dataset_ab.json", test / "test_dataset_ab.json",
                          test / "test_dataset_open_ended.json")  # fmt: skip


def load_behaviour(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    invalid: Literal["raise", "skip"] = "skip",
) -> BehaviourData:
    """Read behaviour ``name``'s training pairs, held-out pairs, A/B items and questions.

    Training and held-out files are read with ``duplicates="ignore"`` (the public files repeat
    some rows) and ``invalid`` (default: malformed rows skipped with one warning).

    Examples:
        >>> import tempfile
        >>> load_behaviour("power-seeking", tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlens.core.errors.DataError: ...train.csv: no such file
    """
    f = behaviour_files(name, data_root(root))
    pairs = load_pairs(f.train, invalid=invalid, duplicates="ignore")
    test = load_pairs(f.test, invalid=invalid, duplicates="ignore")
    ab = test if f.ab == f.test else load_pairs(f.ab, invalid=invalid, duplicates="ignore")
    return BehaviourData(name, f.family, pairs, test, ab, load_prompts(f.questions))


__all__ = [
    "BIPO_BEHAVIOURS",
    "CAA_BEHAVIOURS",
    "BehaviourData",
    "BehaviourFiles",
    "behaviour_files",
    "data_root",
    "load_behaviour",
]
