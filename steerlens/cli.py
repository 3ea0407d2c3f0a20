"""``steerlens`` command line: a thin shell over the public API.

Subcommands: ``info``, ``train``, ``eval``, ``sweep``, ``grid``, ``compare``, ``project``,
``export``.
Run ``steerlens COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
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
    from steerlens.vector import SteeringVector

    p = Path(path)
    with open(p, "rb") as fh:
        magic = fh.read(4)
    return SteeringVector.from_gguf(p) if magic == b"GGUF" else SteeringVector.load(p)


def _join_list_values(argv: list[str]) -> list[str]:
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


def _cli_message(err: Exception) -> str:
    msg = str(err)
    for python, flag in FLAG_ADVICE.items():
        msg = msg.replace(python, flag)
    return msg


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"steerlens: warning: {message}", file=sys.stderr)


def _load_model(name: str | None) -> Any:
    from steerlens.models import load_model

    print(
        f"loading model {name or 'smollm2-135m-instruct (embedded default)'} ...", file=sys.stderr
    )
    return load_model(name)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as -1,0,1, got {text!r}"
        ) from e


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def cmd_info(args: argparse.Namespace) -> int:
    from steerlens.models import describe

    check_input(args.vector, "--vector")
    if args.vector:
        v = read_vector(args.vector)
        print(f"vector {args.vector}: d_model={v.d_model}")
        for hook, norm in v.norms().items():
            print(f"  {hook}: norm {norm:.4f}")
        meta = {k: v for k, v in v.metadata.items() if k != "history"}
        print("metadata:", json.dumps(meta, indent=2, default=str))
        if not args.model_given:
            return 0
    model = _load_model(args.model)
    d = describe(model)
    print(f"model: {d['model']} ({d['class']})")
    print(f"layers: {d['n_layers']}  d_model: {d['d_model']}  vocab: {d['d_vocab']}")
    print("hooks per block (blocks.{L}.<name>): " + ", ".join(d["block_hooks"]))
    print("other hooks: " + ", ".join(d["other_hooks"]))
    return 0


def _invalid(args: argparse.Namespace) -> Literal["raise", "skip"]:
    return "skip" if args.skip_invalid else "raise"


def cmd_train(args: argparse.Namespace) -> int:
    import time

    check_input(args.data, "--data")
    check_input(args.eval_data, "--eval-data")
    out = Path(args.out)
    check_output(out, "--out", args.overwrite)
    if args.checkpoint and not args.resume:
        check_output(args.checkpoint, "--checkpoint", args.overwrite)

    from steerlens.bipo import FAST, BiPOConfig, train_bipo
    from steerlens.data import demo_data_path, load_pairs, split_pairs
    from steerlens.evaluate import generate, preference_margin

    data = Path(args.data) if args.data else demo_data_path("train")
    pairs = load_pairs(data, args.format, invalid=_invalid(args))
    if args.limit:
        pairs = pairs[: args.limit]
    if args.eval_data:
        eval_pairs = load_pairs(args.eval_data, invalid=_invalid(args))
    elif args.data is None:
        eval_pairs = load_pairs(demo_data_path("eval"))
    else:
        pairs, eval_pairs = split_pairs(pairs, 0.2, seed=args.seed)
    if args.eval_limit:
        eval_pairs = eval_pairs[: args.eval_limit]
    settings: dict[str, Any] = {} if args.paper else dict(FAST)
    for key in ("lr", "beta", "batch_size", "weight_decay", "warmup_steps"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    settings.update(epochs=args.epochs, seed=args.seed, behaviour=args.behaviour)
    cfg = BiPOConfig(**settings)
    model = _load_model(args.model)
    print(
        f"training BiPO on {len(pairs)} pairs from {data} ({len(eval_pairs)} held out), "
        f"layer {args.layer}, {cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}",
        file=sys.stderr,
    )
    t = time.perf_counter()
    vector = train_bipo(
        model,
        pairs,
        layers=args.layer,
        config=cfg,
        eval_pairs=eval_pairs,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    seconds = time.perf_counter() - t
    path = vector.save(out, overwrite=True)  # checked before training
    print(f"\nsaved {path} (norm {sum(vector.norms().values()):.3f}, {seconds:.0f} s)")
    if args.no_report:
        return 0
    mults = sorted({-1.0, 0.0, 1.0, -args.gen_multiplier, args.gen_multiplier})
    print(
        "\nheld-out pairs: margin = mean[log p(matching) - log p(not matching)] in nats; "
        "matching_likelier = share of pairs whose matching answer is the likelier:"
    )
    df = preference_margin(model, vector, eval_pairs, multipliers=mults)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    question = args.prompt or DEMO_PROMPT
    g = args.gen_multiplier
    gen = generate(
        model, vector, [question], multipliers=(-g, 0, g), max_new_tokens=args.max_new_tokens
    )
    print(f"\nprompt: {question}")
    for _, row in gen.iterrows():
        m = row["multiplier"]
        label = "unsteered" if m == 0 else f"steered {m:+g}"
        print(f"[{label}] {row['text']}")
    return 0


def _vector_arg(args: argparse.Namespace) -> str:
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


def _write_table(df: Any, out: Path | None, metric: str, plot: Any) -> None:
    if out is None:
        return
    df.to_csv(out.with_suffix(".csv"), index=False)
    plot(df, metric=metric).savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")


def _out_pair(out: str | None, overwrite: bool) -> Path | None:
    if out is None:
        return None
    base = Path(out)
    for suffix in (".csv", ".png"):
        check_output(base.with_suffix(suffix), "--out", overwrite)
    return base


def cmd_eval(args: argparse.Namespace) -> int:
    path = _vector_arg(args)
    check_input(args.data, "--data")
    out = _out_pair(args.out, args.overwrite)

    from steerlens.data import load_pairs
    from steerlens.evaluate import ab_score, preference_margin
    from steerlens.viz import plot_multiplier_curve

    vector = read_vector(path)
    items = load_pairs(args.data, args.format, invalid=_invalid(args))
    if args.limit:
        items = items[: args.limit]
    model = _load_model(args.model)
    kw = dict(positions=args.positions, progress=True)
    if all(p.is_ab for p in items):
        print(
            "A/B items: score = mean p(matching letter) / (p(A) + p(B)); matching_likelier = "
            "share of items whose matching letter is the likelier",
            file=sys.stderr,
        )
        df = ab_score(model, vector, items, multipliers=args.multipliers, **kw)
    else:
        print(
            "free-text pairs: margin = mean[log p(matching) - log p(not matching)] in nats; "
            "matching_likelier = share of pairs whose matching answer is the likelier",
            file=sys.stderr,
        )
        df = preference_margin(model, vector, items, multipliers=args.multipliers, **kw)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    _write_table(df, out, "score" if "score" in df else "margin", plot_multiplier_curve)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    check_input(args.data, "--data")
    check_input(args.eval_data, "--eval-data")
    out = _out_pair(args.out, args.overwrite)

    from steerlens.bipo import FAST, BiPOConfig
    from steerlens.data import load_pairs
    from steerlens.sweep import sweep_layers
    from steerlens.viz import plot_sweep

    train = load_pairs(args.data, invalid=_invalid(args))
    ev = load_pairs(args.eval_data, invalid=_invalid(args))
    if args.limit:
        train = train[: args.limit]
    if args.eval_limit:
        ev = ev[: args.eval_limit]
    model = _load_model(args.model)
    cfg = BiPOConfig(**{**FAST, "epochs": args.epochs, "progress": False})
    df = sweep_layers(
        model,
        train,
        ev,
        layers=args.layers,
        method=args.method,
        multipliers=args.multipliers,
        config=cfg,
        cache_dir=args.cache_dir,
    )
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if out is not None:
        df.to_csv(out.with_suffix(".csv"), index=False)
        plot_sweep(df).savefig(out.with_suffix(".png"), dpi=120)
        print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


def _grid_config(args: argparse.Namespace, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Fill ``args`` from ``--config`` (flags on the command line win) and return the
    behaviours: ``[{"name", "data", "eval_data", "questions", "limit", ...}]``."""
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    behaviours: list[dict[str, Any]] = []
    if args.config:
        path = check_input(args.config, "--config")
        assert path is not None
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CliError(f"--config {path}: not JSON ({e})") from e
        if not isinstance(cfg, dict):
            raise CliError(f"--config {path}: expected a JSON object with keys {GRID_KEYS}")
        unknown = sorted(set(cfg) - set(GRID_KEYS))
        if unknown:
            raise CliError(f"--config {path}: unknown keys {unknown}; known: {list(GRID_KEYS)}")
        for key, value in cfg.items():
            if key != "behaviours" and key not in given:
                setattr(args, key, value)
        behaviours = list(cfg.get("behaviours", []))
        for i, b in enumerate(behaviours):
            if not isinstance(b, dict) or "name" not in b or "data" not in b:
                raise CliError(f"--config {path}: behaviours[{i}] needs 'name' and 'data'")
    if args.data or not behaviours:
        if not args.data:
            raise CliError("--data is required (or --config with 'behaviours')")
        behaviours = [{"name": args.behaviour, "data": args.data, "eval_data": args.eval_data,
                       "questions": args.questions}]  # fmt: skip
    for i, b in enumerate(behaviours):
        where = f"behaviours[{i}]" if args.config and not args.data else ""
        for key, flag in (("data", "--data"), ("eval_data", "--eval-data"),
                          ("questions", "--questions")):  # fmt: skip
            check_input(b.get(key), f"{where}.{key}" if where else flag)
    return behaviours


def cmd_grid(args: argparse.Namespace) -> int:
    from steerlens.bipo import FAST, BiPOConfig
    from steerlens.data import load_pairs, load_prompts
    from steerlens.grid import METRICS, Behaviour, Method, sweep_grid
    from steerlens.judge import BehaviourJudge

    specs = _grid_config(args, args.argv)
    methods = args.methods.split(",") if isinstance(args.methods, str) else list(args.methods)
    metrics = args.metrics.split(",") if isinstance(args.metrics, str) else list(args.metrics)
    for m in methods:
        if m not in ("bipo", "reps", "caa", "pca", "prompt"):
            raise CliError(f"--methods: unknown method {m!r} (bipo, reps, caa, pca, prompt)")
    for m in metrics:
        if m not in METRICS:
            raise CliError(f"--metrics: unknown metric {m!r} ({', '.join(METRICS)})")
    out = check_output(args.out, "--out", args.overwrite)
    behaviours = {}
    for b in specs:
        pairs = load_pairs(b["data"], invalid=_invalid(args))[: b.get("limit") or args.limit]
        ev = (load_pairs(b["eval_data"], invalid=_invalid(args))[: args.eval_limit]
              if b.get("eval_data") else [])  # fmt: skip
        qs = load_prompts(b["questions"])[: args.questions_limit] if b.get("questions") else []
        judge = (BehaviourJudge.fit(load_pairs(b["data"], invalid=_invalid(args)),
                                    context=bool(args.judge_context))
                 if (args.judge or args.judge_context) and qs else None)  # fmt: skip
        if judge is not None:
            print(f"{b['name']}: {judge!r}", file=sys.stderr)
        prompting = tuple(b["prompting"]) if b.get("prompting") else None
        behaviours[b["name"]] = Behaviour(b["name"], pairs, ev, qs, judge, prompting)  # type: ignore[arg-type]
    cfg = BiPOConfig(**{**FAST, "epochs": args.epochs, "progress": False,
                        **({"lr": args.lr} if args.lr else {})})  # fmt: skip
    model = _load_model(args.model)
    df = sweep_grid(model, behaviours, layers=args.layers,
                    methods=[Method(m, n_pairs=args.n_pairs) for m in methods],
                    seeds=args.seeds, multipliers=args.multipliers, config=cfg, metric=metrics,
                    max_new_tokens=args.max_new_tokens, folder=args.folder)  # fmt: skip
    cols = [c for c in df.columns if c not in ("worker", "positions")]
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if out is not None:
        df.to_csv(out, index=False)
        print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    check_input(args.a, "A")
    check_input(args.b, "B")
    from steerlens.analysis import cosine_similarity

    df = cosine_similarity(read_vector(args.a), read_vector(args.b))
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    path = _vector_arg(args)
    html = check_output(args.html, "--html", args.overwrite)
    from steerlens.analysis import project

    vector = read_vector(path)
    model = _load_model(args.model)
    df = project(model, vector, [args.text], chat=args.chat)
    print(
        df[["position", "token", "projection"]].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )
    )
    if html is not None:
        from steerlens.viz import projection_html

        html.write_text(projection_html(df))
        print(f"wrote {html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    src = Path(_vector_arg(args))
    out = (
        Path(args.out)
        if args.out
        else src.with_suffix(".gguf" if args.format == "gguf" else ".safetensors")
    )
    check_output(out, "--out", args.overwrite)
    vector = read_vector(src)
    if args.format == "gguf":
        vector.to_gguf(out, overwrite=True, model_hint=args.arch)
    else:
        vector.save(out, overwrite=True)
    print(f"wrote {out}")
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, keeps the description's line breaks."""


def build_parser() -> argparse.ArgumentParser:
    from steerlens import __version__

    p = argparse.ArgumentParser(
        prog="steerlens",
        description="Steering vectors at TransformerLens hook points (BiPO, CAA, analysis).",
        epilog="Run 'steerlens COMMAND --help' for the options of each command.",
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"steerlens {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def parser(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)

    def model_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--model",
            default=None,
            help="hub id, local HF folder or .gguf (default: embedded SmolLM2-135M-Instruct)",
        )

    def vector_arg(sp: argparse.ArgumentParser, required: bool = True) -> None:
        sp.add_argument(
            "--vector",
            default=None,
            help="steering vector file (.safetensors or llama.cpp .gguf)"
            + ("" if required else "; optional"),
        )

    def multipliers_arg(sp: argparse.ArgumentParser, default: Sequence[float]) -> None:
        sp.add_argument(
            "--multipliers",
            type=_floats,
            default=list(default),
            metavar="M1,M2,...",
            help="comma-separated multipliers, e.g. --multipliers -2,-1,0,1,2",
        )

    def data_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--limit", type=int, help="use only the first N pairs of --data")
        sp.add_argument(
            "--skip-invalid",
            action="store_true",
            help="leave out malformed rows (one warning lists them) instead of stopping",
        )

    from steerlens.evaluate import DEFAULT_MULTIPLIERS

    sp = parser("info", "describe a model and/or a vector file")
    model_arg(sp)
    vector_arg(sp, required=False)
    sp.set_defaults(func=cmd_info)

    sp = parser("train", "train a BiPO vector and show its effect")
    model_arg(sp)
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
    data_opts(sp)
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
    sp.set_defaults(func=cmd_train)

    sp = parser("eval", "A/B score or preference margin of a vector over multipliers")
    model_arg(sp)
    vector_arg(sp)
    sp.add_argument("vector_pos", nargs="?", metavar="VECTOR", help="(deprecated) use --vector")
    sp.add_argument("--data", required=True, help="A/B items or free-text pairs to score")
    sp.add_argument("--format", default=None, help="data format (default: detected)")
    multipliers_arg(sp, DEFAULT_MULTIPLIERS)
    sp.add_argument(
        "--positions",
        default="all",
        choices=["all", "after_prompt"],
        help="steered positions: all (BiPO's protocol) or after_prompt (CAA's)",
    )
    data_opts(sp)
    sp.add_argument("--out", help="also write OUT.csv and OUT.png")
    sp.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sp.set_defaults(func=cmd_eval)

    sp = parser("sweep", "train and score one vector per layer")
    model_arg(sp)
    sp.add_argument("--data", required=True, help="training pairs")
    sp.add_argument("--eval-data", required=True, help="held-out pairs or A/B items")
    sp.add_argument(
        "--layers", type=_ints, required=True, metavar="L1,L2,...", help="e.g. --layers 6,9,12"
    )
    sp.add_argument("--method", default="caa", choices=["bipo", "caa", "pca"])
    sp.add_argument("--epochs", type=int, default=2, help="BiPO epochs per layer")
    multipliers_arg(sp, DEFAULT_MULTIPLIERS)
    sp.add_argument("--eval-limit", type=int, help="use only the first N held-out items")
    data_opts(sp)
    sp.add_argument("--cache-dir", help="folder that keeps finished layers (a rerun resumes)")
    sp.add_argument("--out", help="also write OUT.csv and OUT.png")
    sp.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sp.set_defaults(func=cmd_sweep)

    sp = parser(
        "grid",
        "the experiment engine: behaviours x methods x layers x seeds, every cell cached "
        "(a rerun computes only what is missing)",
    )
    model_arg(sp)
    sp.add_argument("--config", help="JSON file with any of: " + ", ".join(GRID_KEYS))
    sp.add_argument("--behaviour", default="behaviour", help="name of the --data behaviour")
    sp.add_argument("--data", help="training pairs")
    sp.add_argument("--eval-data", help="held-out pairs or A/B items (margin, ab)")
    sp.add_argument("--questions", help="open-ended questions (open_ended)")
    sp.add_argument(
        "--methods", default="bipo,caa", help="comma-separated: bipo, reps, caa, pca, prompt"
    )
    sp.add_argument(
        "--metrics", default="margin", help="comma-separated: margin, ab, open_ended, kl"
    )
    sp.add_argument("--layers", type=_ints, default=[12], metavar="L1,L2,...")
    sp.add_argument("--seeds", type=_ints, default=[0], metavar="S1,S2,...")
    multipliers_arg(sp, DEFAULT_MULTIPLIERS)
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
    data_opts(sp)
    sp.add_argument("--folder", help="the cell cache (default: the steerlens cache)")
    sp.add_argument("--out", help="write the table as CSV")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sp.set_defaults(func=cmd_grid)

    sp = parser("compare", "cosine similarity of two vector files per hook")
    sp.add_argument("a", metavar="A", help="first vector (.safetensors or .gguf)")
    sp.add_argument("b", metavar="B", help="second vector (.safetensors or .gguf)")
    sp.set_defaults(func=cmd_compare)

    sp = parser("project", "per-token projection of a text onto a vector")
    model_arg(sp)
    vector_arg(sp)
    sp.add_argument("--chat", action="store_true", help="wrap the text in the chat template")
    sp.add_argument("--html", help="also write a coloured-token HTML file")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --html file")
    sp.add_argument("text", help="the text to project")
    sp.set_defaults(func=cmd_project)

    sp = parser("export", "convert a vector to GGUF (llama.cpp) or safetensors")
    vector_arg(sp)
    sp.add_argument("vector_pos", nargs="?", metavar="VECTOR", help="(deprecated) use --vector")
    sp.add_argument("--format", choices=["gguf", "safetensors"], default="gguf")
    sp.add_argument("--out", help="output file (default: the vector's name, new suffix)")
    sp.add_argument("--arch", default=None, help="architecture name for GGUF (default: llama)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sp.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from steerlens.errors import SteerlensError

    argv_list = _join_list_values(list(argv) if argv is not None else sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv_list)
    args.model_given = "--model" in argv_list or any(a.startswith("--model=") for a in argv_list)
    args.argv = argv_list
    old = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="(?!steerlens)")
            return int(args.func(args))
    except (SteerlensError, CliError) as e:
        print(f"steerlens: error: {_cli_message(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
