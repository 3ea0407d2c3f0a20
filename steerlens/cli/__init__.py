"""The ``steerlens`` command line: a thin shell over the public API.

Subcommands: ``info``, ``train``, ``eval``, ``sweep``, ``grid``, ``cosine`` (``compare``, its
old name, still works), ``project``, ``export``. Run ``steerlens COMMAND --help`` for the
options of each. ``common`` holds what commands share, ``commands`` one function a subcommand,
``parser`` the argument parser.

May import: every wing (the CLI stands on the whole package).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from steerlens.cli.common import CliError, cli_message, join_list_values, show_warning
from steerlens.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    from steerlens.core.errors import SteerlensError

    argv_list = join_list_values(list(argv) if argv is not None else sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv_list)
    args.model_given = "--model" in argv_list or any(a.startswith("--model=") for a in argv_list)
    args.argv = argv_list
    old = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="(?!steerlens)")
            return int(args.func(args))
    except (SteerlensError, CliError) as e:
        print(f"steerlens: error: {cli_message(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old


__all__ = ["build_parser", "main"]
