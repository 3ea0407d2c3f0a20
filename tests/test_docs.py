"""Docs cannot drift from the API: docstring examples exist (and run as doctests), and every
steerlens call in the README, docs and notebooks names a real function with real keywords."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

import steerlens as sl
from steerlens import analysis, interop, viz

ROOT = Path(__file__).resolve().parents[1]
NAMESPACES = {
    "sl": sl,
    "analysis": analysis,
    "viz": viz,
    "interop": interop,
}


def test_public_api_has_examples():
    missing = []
    for name in sl.__all__:
        obj = getattr(sl, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            continue
        if callable(obj) and ">>>" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
    assert missing == []


def _code_blocks():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            yield f"{path.relative_to(ROOT)}#{i}", block
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                # IPython magics and shell escapes are not Python
                code = "\n".join(
                    line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
                )
                yield f"{path.relative_to(ROOT)}#{i}", code


BLOCKS = list(_code_blocks())


def _resolve(node):
    """`sl.x`, `sl.bipo.FAST`, `analysis.f` -> the object, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in NAMESPACES:
        return None, None
    obj = NAMESPACES[node.id]
    dotted = node.id
    for p in reversed(parts):
        dotted += "." + p
        if not hasattr(obj, p):
            return dotted, AttributeError
        obj = getattr(obj, p)
    return dotted, obj


@pytest.mark.parametrize("where,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_doc_snippets_use_the_real_api(where, code):
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted, obj = _resolve(node)
            assert obj is not AttributeError, f"{where}: {dotted} does not exist"
        if isinstance(node, ast.Call):
            dotted, obj = _resolve(node.func)
            if obj is None or obj is AttributeError or not callable(obj):
                continue
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            params = sig.parameters
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                continue
            for kw in node.keywords:
                if kw.arg is not None:
                    assert kw.arg in params, f"{where}: {dotted}() has no argument {kw.arg!r}"


def test_blocks_were_found():
    assert len(BLOCKS) > 20
