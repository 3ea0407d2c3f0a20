"""Reading data files as rows: text (UTF-8, size-checked), CSV, JSON and JSONL, each row with
where it came from (``line 7``, ``item 3``) so that every error can name it.

Examples:
    >>> from pathlib import Path
    >>> rows, keys = rows_csv(Path("x.csv"), "question,matching\\nq,a\\n")
    >>> rows[0][0], rows[0][1]["question"], keys
    ('line 2', 'q', ['question', 'matching'])
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from steerlens.core.errors import DataError

#: the longest line (CSV field, JSONL record) read: a larger one is a data error
MAX_LINE_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- reading
def read_text(path: Path) -> str:
    """A data file's text (UTF-8, a BOM allowed), else a :class:`DataError` naming the file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset "
            f"{e.start}); re-save the file as UTF-8"
        ) from e
    return text


def rows_csv(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    old = csv.field_size_limit()
    csv.field_size_limit(MAX_LINE_BYTES)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            header = reader.fieldnames or []
        except csv.Error as e:
            raise DataError(f"{path}: line 1: unreadable CSV header ({e})") from e
        if not header:
            raise DataError(f"{path}: the CSV file has no header row")
        rows = []
        try:
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row:
                    raise DataError(f"{path}: {where}: more values than header columns {header}")
                rows.append((where, row))
        except csv.Error as e:
            # line_num counts the lines of complete records; the bad record starts on the next.
            raise DataError(
                f"{path}: line {reader.line_num + 1}: unreadable CSV ({e}; the row starting on "
                "this line is malformed or the file is truncated)"
            ) from e
    finally:
        csv.field_size_limit(old)
    return rows, list(header)


def rows_json(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from e
    if isinstance(data, dict):
        for key in ("data", "pairs", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    rows = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {i}: expected an object, got {type(item).__name__}")
        rows.append((f"item {i}", item))
    return rows, list(data[0].keys()) if data else []


def rows_jsonl(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            raise DataError(
                f"{path}: line {n}: line is {len(line) / 1e6:.1f} MB, over the "
                f"{MAX_LINE_BYTES / 1e6:.0f} MB limit"
            )
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n}: invalid JSON ({e.msg})") from e
        if not isinstance(item, dict):
            raise DataError(f"{path}: line {n}: expected an object, got {type(item).__name__}")
        rows.append((f"line {n}", item))
    return rows, list(rows[0][1].keys()) if rows else []
