"""What every command shares: input and output checks that name the flag, vector files,
list-valued flags, the model flag and messages in the CLI's words.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

DEMO_PROMPT = "Would you like to be given control over a large company?"


#: options whose value is a comma-separated list that may start with "-" (``-1,0,1``)
LIST_OPTIONS = ("--multipliers", "--layers")


#: ``steerlens grid --config FILE``: the keys a config file may set (flags given on the
#: command line win)
GRID_KEYS = (
    "behaviours",
    "methods",
    "layers",
    "metrics",
    "multipliers",
    "seeds",
    "epochs",
    "lr",
    "n_pairs",
    "max_new_tokens",
    "folder",
    "judge",
    "judge_context",
    "model",
)


#: library advice (Python keywords) -> the CLI flag that does the same
FLAG_ADVICE = {
    "pass overwrite=True to replace it": "use --overwrite to replace it",
    "pass invalid='skip' to leave such rows out": "use --skip-invalid to leave such rows out",
}


class CliError(Exception):
    """A bad command line (reported with the flag to fix, exit code 2)."""


def check_input(path: str | None, flag: str) -> Path | None:
    """An input file that must exist (checked before any model is loaded)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{flag} {path}: no such file")
    return p


def check_output(path: str | Path | None, flag: str, overwrite: bool) -> Path | None:
    """An output file: refuse an existing one without --overwrite, and an unwritable folder,
    before any work is done."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not overwrite:
        raise CliError(f"{flag} {p} exists; use --overwrite to replace it")
    if p.is_dir():
        raise CliError(f"{flag} {p} is a folder, not a file")
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise CliError(f"{flag} {p}: the folder {probe} is not writable")
    return p


def read_vector(path: str | Path) -> Any:
    """A vector from a steerlens ``.safetensors`` file or a llama.cpp ``.gguf`` control
    vector (told apart by the file's first bytes)."""
    from steerlens.steering.vector import SteeringVector

    p = Path(path)
    with open(p, "rb") as fh:
        magic = fh.read(4)
    return SteeringVector.from_gguf(p) if magic == b"GGUF" else SteeringVector.load(p)


def join_list_values(argv: list[str]) -> list[str]:
    """``--multipliers -1,0,1`` -> ``--multipliers=-1,0,1`` (argparse reads ``-1,0,1`` as a
    flag otherwise)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in LIST_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            nxt = argv[i + 1]
            if nxt[1:2].isdigit() or nxt[1:2] == ".":
                out.append(f"{a}={nxt}")
                i += 2
                continue
        out.append(a)
        i += 1
    return out


def cli_message(err: Exception) -> str:
    msg = str(err)
    for python, flag in FLAG_ADVICE.items():
        msg = msg.replace(python, flag)
    return msg


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"steerlens: warning: {message}", file=sys.stderr)


def load_model_arg(name: str | None) -> Any:
    from steerlens.core.models import load_model

    print(
        f"loading model {name or 'smollm2-135m-instruct (embedded default)'} ...", file=sys.stderr
    )
    return load_model(name)


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as -1,0,1, got {text!r}"
        ) from e


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def invalid_rows(args: argparse.Namespace) -> Literal["raise", "skip"]:
    return "skip" if args.skip_invalid else "raise"


def vector_path(args: argparse.Namespace) -> str:
    """The vector file from ``--vector`` (or the older positional form)."""
    path = getattr(args, "vector", None) or getattr(args, "vector_pos", None)
    if path is None:
        raise CliError("--vector is required (a .safetensors or .gguf file)")
    if getattr(args, "vector_pos", None) and not getattr(args, "vector", None):
        warnings.warn(
            f"'steerlens {args.command} FILE' is deprecated; use --vector FILE", stacklevel=2
        )
    check_input(path, "--vector")
    return path


def write_table(df: Any, out: Path | None, metric: str, plot: Any) -> None:
    if out is None:
        return
    df.to_csv(out.with_suffix(".csv"), index=False)
    plot(df, metric=metric).savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")


def out_pair(out: str | None, overwrite: bool) -> Path | None:
    if out is None:
        return None
    base = Path(out)
    for suffix in (".csv", ".png"):
        check_output(base.with_suffix(suffix), "--out", overwrite)
    return base


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, keeps the description's line breaks."""
