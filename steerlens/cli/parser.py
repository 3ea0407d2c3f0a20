"""The steerlens argument parser: one small function a subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from steerlens.cli.commands import (
    cmd_cosine,
    cmd_eval,
    cmd_export,
    cmd_grid,
    cmd_info,
    cmd_project,
    cmd_sweep,
    cmd_train,
)
from steerlens.cli.common import (
    GRID_KEYS,
    Formatter,
    floats,
    ints,
)
from steerlens.evaluation.scoring import DEFAULT_MULTIPLIERS
from steerlens.methods.registry import method_names


def _parser(sub: Any, name: str, help: str, *, model: bool = False, vector: bool | None = None,
            **kw: Any) -> argparse.ArgumentParser:  # fmt: skip
    """A subcommand's parser; ``model``: it takes ``--model``; ``vector``: it takes
    ``--vector`` (True: required, False: optional, None: not at all)."""
    sp = sub.add_parser(name, help=help, description=help, formatter_class=Formatter, **kw)
    if model:
        _model_arg(sp)
    if vector is not None:
        _vector_arg(sp, required=vector)
    return sp


def _model_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--model",
        default=None,
        help="hub id, local HF folder or .gguf (default: embedded SmolLM2-135M-Instruct)",
    )


def _vector_arg(sp: argparse.ArgumentParser, required: bool = True) -> None:
    sp.add_argument(
        "--vector",
        default=None,
        help="steering vector file (.safetensors or llama.cpp .gguf)"
        + ("" if required else "; optional"),
    )


def _multipliers_arg(sp: argparse.ArgumentParser, default: Sequence[float]) -> None:
    sp.add_argument(
        "--multipliers",
        type=floats,
        default=list(default),
        metavar="M1,M2,...",
        help="comma-separated multipliers, e.g. --multipliers -2,-1,0,1,2",
    )


def _data_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--limit", type=int, help="use only the first N pairs of --data")
    sp.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out malformed rows (one warning lists them) instead of stopping",
    )


def _table_out(sp: argparse.ArgumentParser, out: str, overwrite: str) -> None:
    """``--out`` (a results table) and ``--overwrite``."""
    sp.add_argument("--out", help=out)
    sp.add_argument("--overwrite", action="store_true", help=overwrite)


def _add_info(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "info", "describe a model and/or a vector file", model=True, vector=False)
    return sp


def _add_train(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "train", "train a BiPO vector and show its effect", model=True)
    sp.add_argument("--data", help="preference file (default: the bundled power-seeking demo)")
    sp.add_argument(
        "--format",
        default=None,
        help="bipo, bipo_ab, caa, ab_prompt, mwe or pairs (default: detected)",
    )
    sp.add_argument(
        "--eval-data",
        help="held-out pairs (default: the bundled demo's held-out file, or 20%% of --data)",
    )
    sp.add_argument("--layer", type=int, default=12, help="block index (negative: from the end)")
    sp.add_argument("--epochs", type=int, default=4, help="passes over the training pairs")
    sp.add_argument("--lr", type=float, help="learning rate (default: 1e-2, --paper: 5e-4)")
    sp.add_argument("--beta", type=float, help="preference temperature (default: 0.1)")
    sp.add_argument("--batch-size", type=int, help="pairs per step (default: 4)")
    sp.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.0)")
    sp.add_argument(
        "--warmup-steps", type=int, help="linear warm-up steps (default: 0, --paper: 100)"
    )
    sp.add_argument(
        "--paper",
        action="store_true",
        help="the authors' settings (lr 5e-4, 100 warm-up steps) instead of the fast CPU ones",
    )
    sp.add_argument("--seed", type=int, default=0, help="seeds batch order and directions")
    sp.add_argument("--eval-limit", type=int, help="use only the first N held-out pairs")
    _data_opts(sp)
    sp.add_argument("--behaviour", default=None, help="label stored in the vector's metadata")
    sp.add_argument("--checkpoint", help="checkpoint file, written after each epoch")
    sp.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    sp.add_argument("--out", default="steering.safetensors", help="where to save the vector")
    sp.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sp.add_argument("--prompt", help="question for the before/after generation")
    sp.add_argument("--max-new-tokens", type=int, default=40, help="length of the generations")
    sp.add_argument(
        "--gen-multiplier",
        type=float,
        default=6.0,
        help="the steered generations shown after training use -M and +M",
    )
    sp.add_argument("--no-report", action="store_true", help="skip the before/after report")
    return sp


def _add_eval(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "eval", "A/B score or preference margin of a vector over multipliers",
                 model=True, vector=True)  # fmt: skip
    sp.add_argument("vector_pos", nargs="?", metavar="VECTOR", help="(deprecated) use --vector")
    sp.add_argument("--data", required=True, help="A/B items or free-text pairs to score")
    sp.add_argument("--format", default=None, help="data format (default: detected)")
    _multipliers_arg(sp, DEFAULT_MULTIPLIERS)
    sp.add_argument(
        "--positions",
        default="all",
        choices=["all", "after_prompt"],
        help="steered positions: all (BiPO's protocol) or after_prompt (CAA's)",
    )
    _data_opts(sp)
    _table_out(sp, "also write OUT.csv and OUT.png", "replace existing output files")
    return sp


def _add_sweep(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "sweep", "train and score one vector per layer", model=True)
    sp.add_argument("--data", required=True, help="training pairs")
    sp.add_argument("--eval-data", required=True, help="held-out pairs or A/B items")
    sp.add_argument(
        "--layers", type=ints, required=True, metavar="L1,L2,...", help="e.g. --layers 6,9,12"
    )
    sp.add_argument("--method", default="caa", choices=method_names(vectors_only=True))
    sp.add_argument("--epochs", type=int, default=2, help="BiPO epochs per layer")
    _multipliers_arg(sp, DEFAULT_MULTIPLIERS)
    sp.add_argument("--eval-limit", type=int, help="use only the first N held-out items")
    _data_opts(sp)
    sp.add_argument("--cache-dir", help="folder that keeps finished layers (a rerun resumes)")
    _table_out(sp, "also write OUT.csv and OUT.png", "replace existing output files")
    return sp


def _add_grid(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(
        sub,
        "grid",
        "the experiment engine: behaviours x methods x layers x seeds, every cell cached "
        "(a rerun computes only what is missing)",
    )
    _model_arg(sp)
    sp.add_argument("--config", help="JSON file with any of: " + ", ".join(GRID_KEYS))
    sp.add_argument("--behaviour", default="behaviour", help="name of the --data behaviour")
    sp.add_argument("--data", help="training pairs")
    sp.add_argument("--eval-data", help="held-out pairs or A/B items (margin, ab)")
    sp.add_argument("--questions", help="open-ended questions (open_ended)")
    sp.add_argument(
        "--methods", default="bipo,caa", help="comma-separated: " + ", ".join(method_names())
    )
    sp.add_argument(
        "--metrics", default="margin", help="comma-separated: margin, ab, open_ended, kl"
    )
    sp.add_argument("--layers", type=ints, default=[12], metavar="L1,L2,...")
    sp.add_argument("--seeds", type=ints, default=[0], metavar="S1,S2,...")
    _multipliers_arg(sp, DEFAULT_MULTIPLIERS)
    sp.add_argument("--epochs", type=int, default=2, help="BiPO / RePS epochs")
    sp.add_argument("--lr", type=float, help="BiPO / RePS learning rate (default 1e-2)")
    sp.add_argument("--n-pairs", type=int, help="train on the first N pairs (default: all)")
    sp.add_argument("--eval-limit", type=int, help="use only the first N held-out items")
    sp.add_argument("--questions-limit", type=int, help="use only the first N questions")
    sp.add_argument("--max-new-tokens", type=int, default=48, help="answer length (open_ended)")
    sp.add_argument(
        "--judge", action="store_true", help="judge answers (offline MiniLM judge fit on --data)"
    )
    sp.add_argument(
        "--judge-context", action="store_true", help="the judge reads question + answer"
    )
    _data_opts(sp)
    sp.add_argument("--folder", help="the cell cache (default: the steerlens cache)")
    _table_out(sp, "write the table as CSV", "replace an existing --out")
    return sp


def _add_cosine(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "cosine", "cosine similarity of two vector files per hook",
                 aliases=["compare"])  # fmt: skip
    sp.add_argument("a", metavar="A", help="first vector (.safetensors or .gguf)")
    sp.add_argument("b", metavar="B", help="second vector (.safetensors or .gguf)")
    return sp


def _add_project(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "project", "per-token projection of a text onto a vector", model=True,
                 vector=True)  # fmt: skip
    sp.add_argument("--chat", action="store_true", help="wrap the text in the chat template")
    sp.add_argument("--html", help="also write a coloured-token HTML file")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --html file")
    sp.add_argument("text", help="the text to project")
    return sp


def _add_export(sub: Any) -> argparse.ArgumentParser:
    sp = _parser(sub, "export", "convert a vector to GGUF (llama.cpp) or safetensors",
                 vector=True)  # fmt: skip
    sp.add_argument("vector_pos", nargs="?", metavar="VECTOR", help="(deprecated) use --vector")
    sp.add_argument("--format", choices=["gguf", "safetensors"], default="gguf")
    sp.add_argument("--out", help="output file (default: the vector's name, new suffix)")
    sp.add_argument("--arch", default=None, help="architecture name for GGUF (default: llama)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return sp


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand a function above."""
    from steerlens import __version__

    p = argparse.ArgumentParser(
        prog="steerlens",
        description="Steering vectors at TransformerLens hook points (BiPO, CAA, analysis).",
        epilog="Run 'steerlens COMMAND --help' for the options of each command.",
        formatter_class=Formatter,
    )
    p.add_argument("--version", action="version", version=f"steerlens {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {_add_info: cmd_info, _add_train: cmd_train, _add_eval: cmd_eval,
                _add_sweep: cmd_sweep, _add_grid: cmd_grid, _add_cosine: cmd_cosine,
                _add_project: cmd_project, _add_export: cmd_export}  # fmt: skip
    for add, run in commands.items():
        add(sub).set_defaults(func=run)
    return p
