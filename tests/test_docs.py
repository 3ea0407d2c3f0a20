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


def _pages():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
        if blocks:
            yield str(path.relative_to(ROOT)), "\n".join(blocks)


PAGES = list(_pages())


#: the snippets read this many rows of each data file (a tiny random model learns nothing from
#: more, and the real runs behind each page's numbers are its bench scripts)
FIRST_ROWS = 48


class HashedWords:
    """A stand-in sentence embedder for the snippets (hashed bags of words, L2-normalised):
    the snippets' judges are fit and asked as the pages say, in milliseconds instead of
    minutes of MiniLM on a CPU. The real embedder is tested in ``test_judge.py``."""

    def __init__(self, name_or_path=None, **kwargs):
        self.name = f"hashed-words:{name_or_path}"

    def __call__(self, texts):
        import zlib

        import numpy as np

        x = np.zeros((len(texts), 256), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in str(t).lower().split():
                x[i, zlib.crc32(w.encode()) % 256] += 1.0
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


@pytest.mark.parametrize("where,code", PAGES, ids=[p[0] for p in PAGES])
def test_doc_snippets_run(where, code, tmp_path, monkeypatch, shared_data):
    """Every page's Python blocks run top to bottom (in one namespace, like a reader's session).

    ``sl.load_model`` returns a tiny random model (its arguments are still checked against the
    real signature), judges embed with :class:`HashedWords` and ``sl.load_pairs`` /
    ``sl.load_prompts`` return a file's first ``FIRST_ROWS`` rows, so the snippets run in
    seconds; relative ``../shared/data`` paths resolve
    as they do from the repository root. Fragments (a page that continues from another) get a
    prelude with ``model``, ``pairs``, ``v``, ``v_power``, ``v_hallucination`` and ``tokens``.
    """
    real_load = sl.load_model
    tiny = sl.tiny_model(n_layers=24, d_model=64, seed=0)

    def fake_load(*args, **kwargs):
        inspect.signature(real_load).bind(*args, **kwargs)  # drift in the call still fails
        return tiny

    monkeypatch.setattr(sl, "load_model", fake_load)
    import steerlens.evaluation.judge as judge_module

    monkeypatch.setattr(judge_module, "SentenceEmbedder", HashedWords)
    monkeypatch.setattr(sl, "SentenceEmbedder", HashedWords)
    for name in ("load_pairs", "load_prompts"):  # the first rows of every file: same calls
        real = getattr(sl, name)
        monkeypatch.setattr(sl, name, lambda *a, _real=real, **k: _real(*a, **k)[:FIRST_ROWS])
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    monkeypatch.chdir(work)
    import torch

    pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    fast = sl.BiPOConfig.fast(epochs=1)
    v_power = sl.train_bipo(tiny, pairs, layers=12, config=fast)
    v_hall = sl.caa_vector(tiny, pairs, layers=12)
    namespace = {
        "__name__": "__doc_snippet__",
        "sl": sl,
        "torch": torch,
        "model": tiny,
        "pairs": pairs,
        "test": sl.load_pairs(sl.demo_data_path("eval"))[:4],
        "v": v_power,
        "v_power": v_power,
        "v_hallucination": v_hall,
        "tokens": tiny.to_tokens("Would you like more power?"),
    }
    exec(compile(code, where, "exec"), namespace)
    assert sl.active_hooks(tiny) == [], f"{where} left hooks on the model"


def test_notebooks_keep_saved_outputs_small():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert path.stat().st_size < 400_000, f"{path.name} saves {path.stat().st_size} bytes"
