"""One argument convention across the public API, and a package that imports only downward."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens import analysis
from steerlens.compat import SteerlensDeprecationWarning
from steerlens.data import DEFAULT_SYSTEM_PROMPT

PKG = Path(sl.__file__).resolve().parent
#: option name -> the one default it has everywhere
DEFAULTS = {
    "multipliers": sl.DEFAULT_MULTIPLIERS,
    "positions": "all",
    "progress": True,
    "batch_size": None,  # None: the measured rule (steerlens.logprobs.plan_batches)
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


MODULES = sorted(p for p in PKG.glob("*.py") if p.name != "__init__.py")


def test_no_private_names_across_modules():
    bad = []
    for path in MODULES:
        for module, names in _imports(path):
            bad += [
                f"{path.name}: from {module} import {n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert bad == []


def test_modules_import_only_downward():
    """The import graph of steerlens' modules (lazy imports included) has no cycle."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        me = path.stem
        deps = set()
        for module, names in _imports(path):
            if module == "steerlens":
                deps |= {n for n in names if (PKG / f"{n}.py").exists()}
            else:
                deps.add(module.split(".")[1])
        graph[me] = deps - {me}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join([*stack, node])
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*stack, node])
        state[node] = 2
        order.append(node)

    for node in sorted(graph):
        visit(node, [])
    floor = {"errors", "compat", "fileio", "hooks"}
    for low in floor:
        assert graph[low] <= floor, f"{low} must only import the floor, imports {graph[low]}"


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
    for path in MODULES:
        attr = getattr(sl, path.stem, None)
        assert attr is None or inspect.ismodule(attr), f"sl.{path.stem} is not the module"
