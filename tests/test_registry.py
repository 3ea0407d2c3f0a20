"""The method registry: one place that lists the methods; everything else reads it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.cli.parser import build_parser
from steerlens.experiments.cache import cell_folder
from steerlens.experiments.vocabulary import Cell
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.checkpoint import fingerprint
from steerlens.methods.registry import (
    REGISTRY,
    MethodKind,
    method_kind,
    method_names,
    register_method,
)

PKG = Path(sl.__file__).resolve().parent


@pytest.fixture
def pairs():
    return sl.load_pairs(sl.demo_data_path("train"))[:4]


@pytest.mark.parametrize("kind", method_names(vectors_only=True))
def test_train_vector_works_for_every_registered_kind(tiny, pairs, kind):
    cls = method_kind(kind).config_class
    config = cls(epochs=1, progress=False) if cls is not None else None
    v = sl.train_vector(tiny, pairs, layers=1, method=kind, config=config, progress=False)
    assert v.hook_names == ["blocks.1.hook_resid_post"]
    assert v.metadata["method"] == kind
    assert torch.isfinite(v.vectors["blocks.1.hook_resid_post"]).all()


def test_reps_by_name_matches_train_reps(tiny, pairs):
    cfg = sl.RePSConfig(epochs=1, progress=False)
    a = sl.train_vector(tiny, pairs, layers=1, method="reps", config=cfg)
    b = sl.train_reps(tiny, pairs, layers=1, config=cfg)
    assert a.allclose(b)


def test_a_method_without_a_vector_and_an_unknown_one_are_refused(tiny, pairs):
    with pytest.raises(sl.ConfigError, match="makes no vector"):
        sl.train_vector(tiny, pairs, layers=1, method="prompt")
    with pytest.raises(sl.ConfigError, match="bipo, reps, caa, pca, prompt"):
        sl.train_vector(tiny, pairs, layers=1, method="steer-harder")


def test_the_cli_choices_come_from_the_registry():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    sweep = sub.choices["sweep"]
    method = next(a for a in sweep._actions if a.dest == "method")
    assert list(method.choices) == list(method_names(vectors_only=True))
    grid = sub.choices["grid"]
    methods = next(a for a in grid._actions if a.dest == "methods")
    assert ", ".join(method_names()) in methods.help


def test_method_names_are_written_in_one_place():
    """No module but the registry spells out the list of method kinds."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if {"bipo", "caa", "pca"} <= words:
                    offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert offenders == []


def test_a_registered_method_runs_in_the_engine(tiny, pairs, tmp_path):
    def doubled_caa(model, pairs, *, layers, config=None, checkpoint=None, progress=True):
        return 2 * sl.caa_vector(model, pairs, layers=layers, progress=False)

    register_method(MethodKind("caa2", doubled_caa))
    try:
        df = sl.sweep_grid(tiny, {"d": (pairs, pairs)}, layers=[1], methods=["caa", "caa2"],
                           folder=tmp_path, progress=False)  # fmt: skip
        norms = df.groupby("method")["norm"].first()
        assert norms["caa2"] == pytest.approx(2 * norms["caa"], rel=1e-5)
        with pytest.raises(sl.ConfigError, match="already registered"):
            register_method(MethodKind("caa2", doubled_caa))
    finally:
        REGISTRY.pop("caa2")


def test_recipe_fields_are_listed_once_and_shared_with_checkpoints(pairs):
    """The engine's cell hash and a checkpoint's fingerprint ignore the same fields."""
    base = BiPOConfig(epochs=1)
    quiet = dataclasses.replace(base, progress=False, eval_batch_size=2, cache_mb=1.0,
                                checkpoint_every=1)  # fmt: skip
    assert base.recipe() == quiet.recipe()
    assert fingerprint(pairs, ["h"], base) == fingerprint(pairs, ["h"], quiet)
    assert fingerprint(pairs, ["h"], base) != fingerprint(pairs, ["h"], BiPOConfig(epochs=2))
    method = sl.Method("bipo")
    cell = Cell("d", "bipo", 1, 0)
    b = sl.Behaviour("d", pairs)
    folders = {cell_folder(Path("/x"), cell, b, method, {"bipo": method}, c) for c in (base, quiet)}
    assert len(folders) == 1


def test_cell_hashes_are_those_of_the_committed_cache(shared_data):
    """Moving the engine kept every cell's name: bench/results.py's recipes (full-data BiPO,
    RePS, CAA at power-seeking's chosen layers) hash to the committed cells' folders."""
    root = PKG.parent / "bench" / "cache" / "results"
    pairs = sl.load_behaviour("power-seeking", shared_data).pairs[:640]
    b = sl.Behaviour("power-seeking", pairs)
    fast = dict(lr=1e-2, warmup_steps=0, batch_size=4, progress=False)
    methods = [
        (sl.Method("bipo-full", "bipo", config=BiPOConfig(epochs=5, **fast), n_pairs=640), 14),
        (sl.Method("reps-full", "reps", config=sl.RePSConfig(epochs=5, **{**fast, "lr": 3e-2}),
                   n_pairs=640), 22),
        (sl.Method("caa", n_pairs=640), 14),
    ]  # fmt: skip
    for m, layer in methods:
        folder = cell_folder(root, Cell(b.name, m.name, layer, 0), b, m, {m.name: m}, None)
        assert folder.is_dir(), f"{folder.name} is not among the committed cells"
