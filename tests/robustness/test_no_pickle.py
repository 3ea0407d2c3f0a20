"""Nothing unsafe is loaded: the package never unpickles."""

from __future__ import annotations

import ast
from pathlib import Path

import steerlens

PACKAGE = Path(steerlens.__file__).parent
UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "torch.load",
    "joblib.load",
    "dill.load",
    "cloudpickle.load",
    "numpy.load",
    "np.load",
    "marshal.loads",
    "shelve.open",
    "yaml.load",
    "eval",
    "exec",
}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                yield f.id, node
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield f"{f.value.id}.{f.attr}", node


def test_no_unsafe_loaders_in_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                mod = getattr(node, "module", None) or ""
                if "pickle" in names or mod in {"pickle", "dill", "cloudpickle"}:
                    found.append(f"{path.name}:{node.lineno} imports pickle")
        for name, node in _calls(tree):
            if name in UNSAFE_CALLS:
                ok = name == "torch.load" and any(
                    k.arg == "weights_only" and getattr(k.value, "value", None) is True
                    for k in node.keywords
                )
                if not ok:
                    found.append(f"{path.name}:{node.lineno} calls {name}")
    assert found == []


def test_scanner_catches_unsafe_code(tmp_path):
    bad = "import pickle\nimport torch\nx = torch.load('f')\ny = pickle.loads(b'')\n"
    tree = ast.parse(bad)
    names = [n for n, _ in _calls(tree)]
    assert "torch.load" in names and "pickle.loads" in names
