"""Preference data: ``PreferencePair``, file loaders, chat-template formatting.

Supported formats (detected from the file, or named with ``format=``):

=============  ======================================================================
``bipo``       CSV ``question,matching,not_matching`` (the BiPO authors' files)
``bipo_ab``    CSV ``question,A,B,matching`` where ``matching`` is the letter A or B
``caa``        JSON list of ``{"question", "answer_matching_behavior": "(A)", ...}``
``ab_prompt``  JSON list of ``{"prompt", "correct": "(A)", "incorrect": "(B)"}`` (MMLU, TQA)
``mwe``        JSONL of Anthropic model-written evals (``answer_matching_behavior: " Yes"``)
``pairs``      any CSV/JSON/JSONL with ``question``, ``matching``, ``not_matching``
=============  ======================================================================

A/B items become pairs whose question holds the choices and whose answers are ``"(A)"`` /
``"(B)"``, so one list feeds BiPO, CAA and the A/B score.

Examples:
    >>> p = PreferencePair("Do you want more power?", "Yes, absolutely.", "No, thank you.")
    >>> p.is_ab
    False
    >>> ab = ab_pair("Pick one.", "More power", "Less power", matching="A")
    >>> ab.matching, ab.not_matching
    ('(A)', '(B)')
    >>> print(ab.question)
    Pick one.
    <BLANKLINE>
    Choices:
     (A) More power
     (B) Less power
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from steerlens.core.errors import ConfigError, DataError
from steerlens.core.fileio import download
from steerlens.core.readers import read_text, rows_csv, rows_json, rows_jsonl

DEFAULT_SYSTEM_PROMPT = "You are a helpful, honest and concise assistant."
FORMATS = ("bipo", "bipo_ab", "caa", "ab_prompt", "mwe", "pairs")
_AB_RE = re.compile(r"^\s*\(\s*([A-Z])\s*\)\s*$")
_LETTER_RE = re.compile(r"^\s*\(?\s*([A-Z])\s*\)?\s*$")


@dataclass(frozen=True)
class PreferencePair:
    """One preference example: a prompt, the behaviour-matching answer and the opposite one.

    Attributes:
        question: the user turn (for A/B items it includes the choices).
        matching: r_T, the answer that shows the behaviour.
        not_matching: r_O, the opposite answer.

    Examples:
        >>> p = PreferencePair("Q?", "Yes, more power.", "No, thanks.")
        >>> p.matching
        'Yes, more power.'
    """

    question: str
    matching: str
    not_matching: str

    def __post_init__(self) -> None:
        for name in ("question", "matching", "not_matching"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise DataError(
                    f"PreferencePair.{name} must be a string, got {type(value).__name__}"
                )
            if not value.strip():
                raise DataError(f"PreferencePair.{name} is empty")

    @property
    def is_ab(self) -> bool:
        """True for multiple-choice items: both answers are letters such as ``"(A)"``."""
        return bool(_AB_RE.match(self.matching) and _AB_RE.match(self.not_matching))

    @property
    def matching_letter(self) -> str | None:
        """The matching answer's letter (``"A"``, ``"B"``, ...) for A/B items, else None."""
        m = _AB_RE.match(self.matching)
        return m.group(1) if m and self.is_ab else None

    @property
    def not_matching_letter(self) -> str | None:
        """The non-matching answer's letter for A/B items, else None."""
        m = _AB_RE.match(self.not_matching)
        return m.group(1) if m and self.is_ab else None


def ab_pair(question: str, a: str, b: str, matching: str) -> PreferencePair:
    """Build an A/B pair: the question with both choices, answers ``"(A)"`` / ``"(B)"``.

    Examples:
        >>> ab_pair("Pick.", "x", "y", "B").matching
        '(B)'
    """
    letter = matching.strip().strip("()").upper()
    if letter not in {"A", "B"}:
        raise DataError(f"matching must be 'A' or 'B', got {matching!r}")
    q = f"{question.rstrip()}\n\nChoices:\n (A) {a.strip()}\n (B) {b.strip()}"
    other = "B" if letter == "A" else "A"
    return PreferencePair(q, f"({letter})", f"({other})")


def _normalise_ab(answer: str) -> str:
    m = _LETTER_RE.match(answer)
    return f"({m.group(1)})" if m else answer.strip()


def _field(path: Path, where: str, row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise DataError(f"{path}: {where}: missing field {name!r}")
    value = row[name]
    if value is None:
        raise DataError(f"{path}: {where}: field {name!r} is missing (row too short?)")
    if not isinstance(value, str):
        raise DataError(
            f"{path}: {where}: field {name!r} must be a string, got {type(value).__name__} "
            f"({value!r:.40})"
        )
    if not value.strip():
        raise DataError(f"{path}: {where}: field {name!r} is empty")
    return value


def _pair_from_row(path: Path, where: str, row: dict[str, Any], fmt: str) -> PreferencePair:
    if fmt in ("bipo", "pairs"):
        return PreferencePair(
            _field(path, where, row, "question").strip(),
            _field(path, where, row, "matching").strip(),
            _field(path, where, row, "not_matching").strip(),
        )
    if fmt == "bipo_ab":
        letter = _field(path, where, row, "matching").strip().strip("()").upper()
        if letter not in {"A", "B"}:
            raise DataError(f"{path}: {where}: field 'matching' must be A or B, got {letter!r}")
        return ab_pair(
            _field(path, where, row, "question"),
            _field(path, where, row, "A"),
            _field(path, where, row, "B"),
            letter,
        )
    if fmt in ("caa", "mwe"):
        q = _field(path, where, row, "question").strip()
        m = _field(path, where, row, "answer_matching_behavior")
        n = _field(path, where, row, "answer_not_matching_behavior")
        return PreferencePair(q, _normalise_ab(m), _normalise_ab(n))
    if fmt == "ab_prompt":
        return PreferencePair(
            _field(path, where, row, "prompt").strip(),
            _normalise_ab(_field(path, where, row, "correct")),
            _normalise_ab(_field(path, where, row, "incorrect")),
        )
    raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _detect(keys: Iterable[str], path: Path, is_jsonl: bool) -> str:
    k = set(keys)
    if {"question", "matching", "not_matching"} <= k:
        return "bipo"
    if {"question", "A", "B", "matching"} <= k:
        return "bipo_ab"
    if {"question", "answer_matching_behavior", "answer_not_matching_behavior"} <= k:
        return "mwe" if is_jsonl else "caa"
    if {"prompt", "correct", "incorrect"} <= k:
        return "ab_prompt"
    raise DataError(
        f"{path}: cannot tell the format from the fields {sorted(k)}; expected "
        "question/matching/not_matching, question/A/B/matching, "
        "question/answer_matching_behavior/answer_not_matching_behavior or "
        "prompt/correct/incorrect (or pass format=...)"
    )


BIPO_URL = "https://raw.githubusercontent.com/CaoYuanpu/BiPO/HEAD/data/{name}/{split}.csv"
CAA_URL = "https://raw.githubusercontent.com/nrimsky/CAA/HEAD/datasets/{kind}/{name}/{file}"


def public_dataset_url(name: str) -> str:
    """Public URL of a dataset of the BiPO or CAA repositories.

    Names: ``bipo/<behaviour>/<train|test|test_infer>`` (behaviours: power-seeking,
    wealth-seeking, hallucination, jailbreak), ``caa/generate/<behaviour>``,
    ``caa/test/<behaviour>`` (A/B test items) and ``caa/test/mmlu``.

    Examples:
        >>> public_dataset_url("bipo/power-seeking/train")
        'https://raw.githubusercontent.com/CaoYuanpu/BiPO/HEAD/data/power-seeking/train.csv'
        >>> public_dataset_url("caa/test/sycophancy").rsplit("/", 2)[1:]
        ['sycophancy', 'test_dataset_ab.json']
    """
    parts = name.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "bipo" and parts[2] in ("train", "test", "test_infer"):
        return BIPO_URL.format(name=parts[1], split=parts[2])
    if len(parts) == 3 and parts[0] == "caa" and parts[1] in ("generate", "test"):
        if parts[1] == "generate":
            return CAA_URL.format(kind="generate", name=parts[2], file="generate_dataset.json")
        if parts[2] == "mmlu":
            return CAA_URL.format(kind="test", name="mmlu", file="mmlu.json")
        return CAA_URL.format(kind="test", name=parts[2], file="test_dataset_ab.json")
    raise ConfigError(
        f"unknown public dataset {name!r}; use bipo/<behaviour>/<split>, caa/generate/<b>, "
        "caa/test/<b> or caa/test/mmlu"
    )


def load_pairs(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    duplicates: Literal["warn", "error", "ignore", "drop"] = "warn",
    invalid: Literal["raise", "skip"] = "raise",
    limit: int | None = None,
) -> list[PreferencePair]:
    """Read preference pairs from a CSV, JSON or JSONL file.

    Args:
        path: the data file, or an ``http(s)://`` URL (downloaded once into the steerlens
            cache; see :func:`public_dataset_url` for the BiPO and CAA files).
        format: one of ``bipo``, ``bipo_ab``, ``caa``, ``ab_prompt``, ``mwe``, ``pairs``; by
            default detected from the extension and the fields.
        duplicates: what to do with exact duplicate pairs: ``"warn"`` (default), ``"error"``,
            ``"drop"`` or ``"ignore"``.
        invalid: ``"raise"`` (default) stops at the first bad row; ``"skip"`` warns about
            each bad row (empty field, bad letter, ...) and leaves it out. Some public files
            have such rows (e.g. two empty questions in BiPO's power-seeking ``train.csv``).
        limit: keep only the first ``limit`` pairs.

    Raises:
        DataError: naming the file, the row/line and the field at fault.

    Examples:
        >>> pairs = load_pairs(demo_data_path("train"))
        >>> len(pairs) > 10, pairs[0].is_ab
        (True, False)
    """
    if isinstance(path, str) and path.startswith(("http://", "https://")):
        path = download(path)
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows, keys = rows_jsonl(path, text)
    elif suffix == ".json":
        rows, keys = rows_json(path, text)
    elif suffix in (".csv", ".tsv", ".txt", ""):
        stripped = text.lstrip()
        if stripped.startswith("[") or stripped.startswith('{"'):
            rows, keys = (rows_json if stripped.startswith("[") else rows_jsonl)(path, text)
        else:
            rows, keys = rows_csv(path, text)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv, .json or .jsonl)")
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    fmt = format or _detect(keys, path, suffix == ".jsonl")
    if invalid not in ("raise", "skip"):
        raise ConfigError(f"invalid must be 'raise' or 'skip', got {invalid!r}")
    pairs, skipped, dups = _pairs_from_rows(path, rows, fmt, invalid=invalid,
                                            duplicates=duplicates, limit=limit)  # fmt: skip
    if skipped:
        _warn_once(path, "skipped", len(skipped), skipped)
    if dups and duplicates == "warn":
        _warn_once(path, "kept", len(dups), dups, what="duplicate")
    return pairs


def _pairs_from_rows(
    path: Path, rows: Any, fmt: str, *, invalid: str, duplicates: str, limit: int | None
) -> tuple[list[PreferencePair], list[str], list[str]]:
    """The pairs of a file's rows (invalid rows raised or skipped, duplicates kept, dropped or
    refused, up to ``limit`` pairs), the skipped rows and the duplicates."""
    pairs: list[PreferencePair] = []
    seen: dict[PreferencePair, str] = {}
    skipped: list[str] = []
    dups: list[str] = []
    for where, row in rows:
        try:
            pair = _pair_from_row(path, where, row, fmt)
        except DataError as e:
            if invalid == "raise":
                raise DataError(f"{e} (pass invalid='skip' to leave such rows out)") from None
            skipped.append(str(e).removeprefix(f"{path}: "))
            continue
        if pair in seen:
            msg = f"{where}: duplicate of {seen[pair]} (question {pair.question[:60]!r})"
            if duplicates == "error":
                raise DataError(f"{path}: {msg}")
            if duplicates in ("warn", "drop"):
                dups.append(msg)
            if duplicates == "drop":
                continue
        else:
            seen[pair] = where
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    return pairs, skipped, dups


class SteerlensDataWarning(UserWarning):
    """A data file had rows that were skipped or duplicated (one warning per file)."""


def _warn_once(path: Path, verb: str, n: int, details: list[str], what: str = "invalid") -> None:
    """One warning per file and kind: a count and the first three row details."""
    first = "; ".join(details[:3]) + ("; ..." if n > 3 else "")
    noun = "row" if n == 1 else "rows"
    warnings.warn(f"{path}: {verb} {n} {what} {noun} ({first})", SteerlensDataWarning, stacklevel=3)


def check_overlap(
    train: Sequence[PreferencePair], eval: Sequence[PreferencePair], *, warn: bool = True
) -> list[str]:
    """Questions that appear in both sets (whitespace-insensitive); warns when any do.

    Examples:
        >>> a = [PreferencePair("Q1", "x", "y")]
        >>> check_overlap(a, a, warn=False)
        ['Q1']
    """
    norm = {" ".join(p.question.split()): p.question for p in train}
    both = sorted({norm[k] for p in eval if (k := " ".join(p.question.split())) in norm})
    if both and warn:
        warnings.warn(
            f"{len(both)} of {len(eval)} evaluation questions also appear in the training data "
            f"(e.g. {both[0][:60]!r})",
            stacklevel=2,
        )
    return both


def split_pairs(
    pairs: Sequence[PreferencePair], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Shuffle with a seed and split into (train, eval).

    Examples:
        >>> pairs = [PreferencePair(f"Q{i}", "a", "b") for i in range(10)]
        >>> tr, ev = split_pairs(pairs, 0.3)
        >>> len(tr), len(ev)
        (7, 3)
    """
    if not 0 < eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, round(len(pairs) * eval_fraction))
    return [pairs[i] for i in idx[n_eval:]], [pairs[i] for i in idx[:n_eval]]


def demo_data_path(split: Literal["train", "eval", "ab"] = "train") -> Path:
    """Path of the small power-seeking dataset shipped with steerlens (written for it).

    ``train`` and ``eval`` are free-text pairs; ``ab`` holds A/B items built from the eval
    questions.

    Examples:
        >>> demo_data_path("eval").name
        'power_demo_eval.csv'
    """
    names = {
        "train": "power_demo_train.csv",
        "eval": "power_demo_eval.csv",
        "ab": "power_demo_ab.csv",
    }
    if split not in names:
        raise ConfigError(f"split must be one of {sorted(names)}, got {split!r}")
    return Path(str(resources.files("steerlens") / "datasets" / names[split]))


# --------------------------------------------------------------------------- prompts
def load_prompts(path: str | os.PathLike[str], *, limit: int | None = None) -> list[str]:
    """Open-ended questions: the ``question`` field of a JSON list of objects (CAA's
    ``test_dataset_open_ended.json``), a JSONL file or a CSV file (BiPO's ``test_infer.csv``),
    or the lines of a text file.

    Raises:
        DataError: naming the file, the row and the field at fault.

    Examples:
        >>> qs = load_prompts(demo_data_path("eval"))
        >>> isinstance(qs[0], str) and len(qs) > 3
        True
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_text(path)
    readers = {".json": rows_json, ".jsonl": rows_jsonl, ".csv": rows_csv}
    if path.suffix.lower() in readers:
        rows, _ = readers[path.suffix.lower()](path, text)
    else:
        rows = [(f"line {i}", {"question": ln}) for i, ln in enumerate(text.splitlines(), 1)]
        rows = [(w, r) for w, r in rows if r["question"].strip()]
    out = []
    for where, row in rows[:limit]:
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{path}: {where}: field 'question' is missing or empty")
        out.append(q.strip())
    if not out:
        raise DataError(f"{path}: no questions found")
    return out


def format_prompt(
    tokenizer: Any, question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> str:
    """The chat-formatted prompt, ending right where the assistant's answer begins.

    Uses the tokenizer's chat template when it has one, else a plain
    ``"System: ...\\nUser: ...\\nAssistant:"`` layout.

    Examples:
        >>> import steerlens as sl
        >>> tok = sl.tiny_model(n_layers=1).tokenizer
        >>> format_prompt(tok, "Hi?", system_prompt=None).endswith("<|im_start|>assistant\\n")
        True
    """
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(out)
    head = f"System: {system_prompt}\n" if system_prompt else ""
    return f"{head}User: {question}\nAssistant:"
