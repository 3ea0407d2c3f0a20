"""One argument convention across the public API, and a package that imports only downward."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens import analysis
from steerlens.core.compat import SteerlensDeprecationWarning
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT

PKG = Path(sl.__file__).resolve().parent
#: option name -> the one default it has everywhere
DEFAULTS = {
    "multipliers": sl.DEFAULT_MULTIPLIERS,
    "positions": "all",
    "progress": True,
    "batch_size": None,  # None: the measured rule (steerlens.core.batching.plan_batches)
    "system_prompt": DEFAULT_SYSTEM_PROMPT,
    "hook": "resid_post",
    "per_item": False,
}
OLD_NAMES = {"layer", "items", "train_data", "eval_data", "bipo_config", "where"}
DATA_NAMES = {"pairs", "prompts", "texts", "eval_pairs", "judge", "datasets"}


def public_functions():
    for name in sl.__all__:
        obj = getattr(sl, name)
        if inspect.isfunction(obj):
            yield f"sl.{name}", obj
    for name in ("project", "pca_activations", "projection_gap", "compare"):
        yield f"analysis.{name}", getattr(analysis, name)


FUNCS = list(public_functions())


#: building blocks that name one thing (a hook, a loss on one batch, a pair), not workflow steps
LOW_LEVEL = {"sl.resid_hook", "sl.bipo_loss", "sl.reps_loss", "sl.ab_pair", "sl.format_prompt"}


@pytest.mark.parametrize("name,fn", FUNCS, ids=[n for n, _ in FUNCS])
def test_one_argument_convention(name, fn):
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    if name in LOW_LEVEL:
        return
    assert not OLD_NAMES & set(names), f"{name} still uses {OLD_NAMES & set(names)}"
    model_positional = any(p.name == "model" and p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    if model_positional:
        assert names[0] == "model", f"{name}: model must come first"
        if "vector" in names:
            assert names[1] == "vector", f"{name}: vector must come right after model"
    for p in params:
        if p.name in DEFAULTS:
            assert p.kind is p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
            assert p.default == DEFAULTS[p.name], f"{name}: {p.name}={p.default!r}"
        if p.name == "layers":
            assert p.kind is p.KEYWORD_ONLY, f"{name}: layers must be keyword-only"
        positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        if model_positional and positional and p.name not in {"model", "vector"}:
            assert p.name in DATA_NAMES, f"{name}: option {p.name!r} must be keyword-only"


def test_old_call_forms_still_work_with_a_warning(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    cfg = sl.BiPOConfig(epochs=1, progress=False)
    with pytest.warns(SteerlensDeprecationWarning, match="'layer=' is deprecated"):
        v = sl.train_bipo(tiny, pairs, layer=1, config=cfg)
    with pytest.warns(SteerlensDeprecationWarning, match="by position"):
        c = sl.caa_vector(tiny, pairs, 1)
    assert c.allclose(sl.caa_vector(tiny, pairs, layers=1))
    with pytest.warns(SteerlensDeprecationWarning, match="by position"):
        sl.preference_margin(tiny, v, pairs, (0, 1))
    items = sl.load_pairs(sl.demo_data_path("ab"))[:2]
    with pytest.warns(SteerlensDeprecationWarning, match="'items=' is deprecated"):
        sl.ab_score(tiny, None, items=items, multipliers=(0,))
    with pytest.warns(SteerlensDeprecationWarning, match="project"):
        old = analysis.project(tiny, ["Hello"], v)
    assert old.equals(analysis.project(tiny, v, ["Hello"]))
    with pytest.warns(SteerlensDeprecationWarning, match="'layer=' is deprecated"):
        analysis.pca_activations(tiny, pairs, layer=1)


def test_public_surface():
    for name in ("analysis", "viz", "interop", "FileExistsSteerlensError", "score_vector"):
        assert hasattr(sl, name), name
    assert issubclass(sl.FileExistsSteerlensError, sl.SteerlensError)
    assert not hasattr(sl.SteeringVector, "layers")


# ----------------------------------------------------------------- the package floor
def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every steerlens import in a file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("steerlens"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            continue
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("steerlens.")]
    return out


#: every module of the package, by dotted name below steerlens ("core.errors", "cli")
MODULES = {
    ".".join(p.relative_to(PKG).with_suffix("").parts): p
    for p in sorted(PKG.rglob("*.py"))
    if p.name != "__init__.py"
}
#: each wing and the wings it may import (the floor is core; cli stands on everything)
WINGS = {
    "core": {"core"},
    "steering": {"core", "steering"},
    "methods": {"core", "steering", "methods"},
    "evaluation": {"core", "steering", "evaluation"},
    "analysis": {"core", "steering", "methods", "analysis"},
    "interop": {"core", "steering", "interop"},
    "experiments": {"core", "steering", "methods", "evaluation", "experiments"},
    "cli": {
        "core",
        "steering",
        "methods",
        "evaluation",
        "analysis",
        "interop",
        "experiments",
        "cli",
    },
}


def _wing(module: str) -> str:
    return module.split(".")[0]


def _targets(module: str, names: list[str]) -> set[str]:
    """The modules an import statement reaches, as dotted names below steerlens."""
    rel = module.removeprefix("steerlens").lstrip(".")
    found = set()
    for n in names:  # `from steerlens.wing import module`
        sub = f"{rel}.{n}" if rel else n
        if sub in MODULES or (PKG / sub.replace(".", "/")).is_dir():
            found.add(sub)
    if rel and not found:
        found.add(rel)
    return found


def test_every_module_lives_in_a_wing_with_a_docstring():
    for module in MODULES:
        assert _wing(module) in WINGS, f"steerlens/{module}.py is in no wing"
    for wing in WINGS:
        init = PKG / wing / "__init__.py"
        if wing == "cli" and not init.exists():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, (
            f"steerlens/{wing}/__init__.py must say what it may import"
        )


def test_no_private_names_across_modules():
    bad = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            bad += [
                f"{name}: from {module} import {n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert bad == []


def test_wings_import_only_downward():
    """A module imports only from its own wing and the wings below it (lazy imports included)."""
    bad = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            for target in _targets(module, names):
                if _wing(target) not in WINGS[_wing(name)]:
                    bad.append(f"{name} imports {target}")
    assert bad == []


def test_modules_import_only_downward():
    """The import graph of steerlens' modules (lazy imports included) has no cycle."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps: set[str] = set()
        for module, names in _imports(path):
            deps |= {t for t in _targets(module, names) if t in MODULES}
        graph[name] = deps - {name}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join([*stack, node])
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])
    floor = {"core.errors", "core.compat", "core.fileio", "core.hooks"}
    for low in floor:
        assert graph[low] <= floor, f"{low} must only import the floor, imports {graph[low]}"


#: a module a maintainer can read in one sitting, a function on one screen (docstring included)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def _sizes() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    modules, functions = [], []
    for name, path in MODULES.items():
        text = path.read_text()
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                functions.append((n, f"{name}.{node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def test_modules_and_functions_stay_small():
    """No module over 500 lines, no function over 80 (docstring included); the message names
    the largest of each, so a report shows how close the package is."""
    modules, functions = _sizes()
    big_m = [f"{n} {m}" for n, m in modules if n > MAX_MODULE_LINES]
    big_f = [f"{n} {f}" for n, f in functions if n > MAX_FUNCTION_LINES]
    largest = f"largest module: {modules[0]}, largest function: {functions[0]}"
    assert not big_m and not big_f, f"{big_m} {big_f} ({largest})"


def test_the_size_rule_sees_a_long_function(tmp_path):
    src = "def f():\n" + "    x = 1\n" * 90
    node = ast.parse(src).body[0]
    assert node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]


def test_gguf_pads_every_layer_and_round_trips(tmp_path):
    import gguf

    v = sl.SteeringVector({"blocks.2.hook_resid_post": torch.arange(4.0)}, {"n_layers": 6})
    path = v.to_gguf(tmp_path / "v.gguf")
    names = sorted(t.name for t in gguf.GGUFReader(str(path)).tensors)
    assert names == [f"direction.{i}" for i in (1, 2, 3, 4, 5)]  # block 0 has no slot
    back = sl.SteeringVector.from_gguf(path)
    assert back.hook_names == ["blocks.2.hook_resid_post"]
    assert torch.equal(back.vectors["blocks.2.hook_resid_post"], torch.arange(4.0))
    with pytest.warns(UserWarning, match="n_layers"):
        sl.SteeringVector({"blocks.2.hook_resid_post": torch.ones(4)}).to_gguf(tmp_path / "w.gguf")


def test_trained_vectors_record_n_layers(tiny):
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:2]
    assert sl.caa_vector(tiny, pairs, layers=1).metadata["n_layers"] == tiny.cfg.n_layers


def test_no_export_shadows_a_module():
    """`from steerlens import sweep` must give the module, not a function of that name."""
    for name in [*MODULES, *WINGS]:
        attr = getattr(sl, name.split(".")[-1], None)
        assert attr is None or inspect.ismodule(attr), f"sl.{name} is not a module"
