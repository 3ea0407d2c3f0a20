"""A corpus of bad preference files, each with the exact error a user sees."""

from __future__ import annotations

import json

import pytest

import steerlens as sl
from steerlens.core.errors import DataError, SteerlensError

HEADER = "question,matching,not_matching\n"

CASES = [
    # (name, file name, content bytes, expected message regex)
    ("empty", "empty.csv", b"", r"empty.csv: the file is empty"),
    ("blank", "blank.csv", b"\n\n  \n", r"blank.csv: the file is empty"),
    ("header only", "h.csv", HEADER.encode(), r"h.csv: the file has a header but no data rows"),
    (
        "truncated mid-row",
        "trunc.csv",
        (HEADER + 'q1,a,b\n"q2 is cut off, yes').encode(),
        r"trunc.csv: line 3: unreadable CSV \(unexpected end of data; .*truncated\)",
    ),
    (
        "truncated row, too few fields",
        "short.csv",
        (HEADER + "q1,a,b\nq2,only-one\n").encode(),
        r"short.csv: line 3: field 'not_matching' is missing \(row too short\?\)",
    ),
    (
        "wrong encoding",
        "latin1.csv",
        (HEADER + "caf\xe9?,yes,no\n").encode("latin-1"),
        r"latin1.csv: line 2: not valid UTF-8 \(byte 0xe9",
    ),
    (
        "missing column",
        "nocol.csv",
        b"question,matching\nq,a\n",
        r"nocol.csv: cannot tell the format from the fields \['matching', 'question'\]",
    ),
    (
        "empty field",
        "emptyfield.csv",
        (HEADER + "q1,a,b\nq2,a,   \n").encode(),
        r"emptyfield.csv: line 3: field 'not_matching' is empty",
    ),
    (
        "extra fields",
        "extra.csv",
        (HEADER + "q1,a,b,c\n").encode(),
        r"extra.csv: line 2: more values than header columns",
    ),
    (
        "non-string JSON field",
        "nonstr.json",
        json.dumps([{"question": "q", "matching": 3, "not_matching": "b"}]).encode(),
        r"nonstr.json: item 0: field 'matching' must be a string, got int",
    ),
    (
        "null JSON field",
        "null.jsonl",
        (json.dumps({"question": None, "matching": "a", "not_matching": "b"}) + "\n").encode(),
        r"null.jsonl: line 1: field 'question' is missing",
    ),
    (
        "invalid JSON",
        "broken.json",
        b'[{"question": "q", "matching": "a",',
        r"broken.json: line 1: invalid JSON",
    ),
    (
        "invalid JSONL line",
        "broken.jsonl",
        b'{"question": "q", "matching": "a", "not_matching": "b"}\n{oops}\n',
        r"broken.jsonl: line 2: invalid JSON",
    ),
    (
        "JSON not a list",
        "obj.json",
        b'"just a string"',
        r"obj.json: expected a JSON list of objects, got str",
    ),
    (
        "bad A/B letter",
        "ab.csv",
        b"question,A,B,matching\nq,x,y,C\n",
        r"ab.csv: line 2: field 'matching' must be A or B, got 'C'",
    ),
    (
        "unterminated quote in the header",
        "hdr.csv",
        b'"question,matching,not_matching\n',
        r"hdr.csv: line 1: unreadable CSV header \(unexpected end of data\)",
    ),
    ("unsupported type", "x.parquet", b"PAR1", r"x.parquet: unsupported file type '.parquet'"),
]


@pytest.mark.parametrize("name,fname,content,message", CASES, ids=[c[0] for c in CASES])
def test_bad_file(tmp_path, name, fname, content, message):
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        sl.load_pairs(path)
    assert isinstance(info.value, SteerlensError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv: no such file"):
        sl.load_pairs(tmp_path / "nope.csv")


def test_duplicated_questions(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text(HEADER + "q,a,b\nq,a,b\n")
    with pytest.raises(DataError, match=r"dup.csv: line 3: duplicate of line 2"):
        sl.load_pairs(p, duplicates="error")


def test_huge_line_jsonl(tmp_path):
    p = tmp_path / "huge.jsonl"
    big = "x" * (100 * 1024 * 1024)
    with open(p, "w") as f:
        f.write(json.dumps({"question": big, "matching": "a", "not_matching": "b"}) + "\n")
    with pytest.raises(DataError, match=r"huge.jsonl: line 1: line is 104.9 MB, over the 8 MB"):
        sl.load_pairs(p)


def test_huge_line_csv(tmp_path):
    p = tmp_path / "huge.csv"
    with open(p, "w") as f:
        f.write(HEADER + '"' + "x" * (100 * 1024 * 1024) + '",a,b\n')
    with pytest.raises(DataError, match=r"huge.csv: line 2: unreadable CSV \(field larger"):
        sl.load_pairs(p)
