"""``steerlens`` command line: a thin shell over the public API.

Subcommands: ``info``, ``train``, ``eval``, ``sweep``, ``compare``, ``project``, ``export``.
Run ``steerlens COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_PROMPT = "Would you like to be given control over a large company?"


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
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def cmd_info(args: argparse.Namespace) -> int:
    from steerlens.models import describe
    from steerlens.vector import SteeringVector

    if args.vector:
        v = SteeringVector.load(args.vector)
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


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from steerlens.bipo import FAST, BiPOConfig, train_bipo
    from steerlens.data import demo_data_path, load_pairs, split_pairs
    from steerlens.evaluate import generate, preference_margin

    data = Path(args.data) if args.data else demo_data_path("train")
    pairs = load_pairs(data, args.format, invalid="skip" if args.skip_invalid else "raise")
    if args.limit:
        pairs = pairs[: args.limit]
    if args.eval_data:
        eval_pairs = load_pairs(args.eval_data, invalid="skip" if args.skip_invalid else "raise")
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
        layer=args.layer,
        config=cfg,
        eval_pairs=eval_pairs,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    seconds = time.perf_counter() - t
    path = vector.save(args.out, overwrite=args.overwrite)
    print(f"\nsaved {path} (norm {sum(vector.norms().values()):.3f}, {seconds:.0f} s)")
    if args.no_report:
        return 0
    mults = sorted({-1.0, 0.0, 1.0, -args.gen_multiplier, args.gen_multiplier})
    print("\nheld-out preference margin, mean[log p(matching) - log p(not matching)] in nats:")
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


def cmd_eval(args: argparse.Namespace) -> int:
    from steerlens.data import load_pairs
    from steerlens.evaluate import ab_score, preference_margin
    from steerlens.vector import SteeringVector

    vector = SteeringVector.load(args.vector)
    model = _load_model(args.model)
    items = load_pairs(args.data, args.format, invalid="skip" if args.skip_invalid else "raise")
    if args.limit:
        items = items[: args.limit]
    if all(p.is_ab for p in items):
        df = ab_score(model, vector, items, args.multipliers, progress=True)
    else:
        df = preference_margin(model, vector, items, args.multipliers, progress=True)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.out:
        out = Path(args.out)
        df.to_csv(out.with_suffix(".csv"), index=False)
        from steerlens.viz import plot_multiplier_curve

        metric = "score" if "score" in df else "margin"
        plot_multiplier_curve(df, metric=metric).savefig(out.with_suffix(".png"), dpi=120)
        print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from steerlens.bipo import FAST, BiPOConfig
    from steerlens.data import load_pairs
    from steerlens.sweep import sweep_layers

    model = _load_model(args.model)
    train = load_pairs(args.data, invalid="skip" if args.skip_invalid else "raise")
    ev = load_pairs(args.eval_data, invalid="skip" if args.skip_invalid else "raise")
    if args.limit:
        train = train[: args.limit]
    if args.eval_limit:
        ev = ev[: args.eval_limit]
    cfg = BiPOConfig(**{**FAST, "epochs": args.epochs, "progress": False})
    df = sweep_layers(
        model,
        train,
        ev,
        layers=args.layers,
        method=args.method,
        multipliers=args.multipliers,
        bipo_config=cfg,
        cache_dir=args.cache_dir,
    )
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.out:
        out = Path(args.out)
        df.to_csv(out.with_suffix(".csv"), index=False)
        from steerlens.viz import plot_sweep

        plot_sweep(df).savefig(out.with_suffix(".png"), dpi=120)
        print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from steerlens.analysis import cosine_similarity
    from steerlens.vector import SteeringVector

    a, b = SteeringVector.load(args.a), SteeringVector.load(args.b)
    df = cosine_similarity(a, b)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from steerlens.analysis import project
    from steerlens.vector import SteeringVector

    vector = SteeringVector.load(args.vector)
    model = _load_model(args.model)
    df = project(model, [args.text], vector, chat=args.chat)
    print(
        df[["position", "token", "projection"]].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )
    )
    if args.html:
        from steerlens.viz import projection_html

        Path(args.html).write_text(projection_html(df))
        print(f"wrote {args.html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from steerlens.vector import SteeringVector

    src = Path(args.vector)
    vector = SteeringVector.from_gguf(src) if src.suffix == ".gguf" else SteeringVector.load(src)
    out = (
        Path(args.out)
        if args.out
        else src.with_suffix(".gguf" if args.format == "gguf" else ".safetensors")
    )
    if args.format == "gguf":
        vector.to_gguf(out, overwrite=args.overwrite, model_hint=args.arch)
    else:
        vector.save(out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="steerlens",
        description="Steering vectors at TransformerLens hook points (BiPO, CAA, analysis).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def model_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--model",
            default=None,
            help="hub id, local HF folder or .gguf (default: embedded SmolLM2-135M)",
        )

    sp = sub.add_parser("info", help="describe a model and/or a vector file")
    model_arg(sp)
    sp.add_argument("--vector", help="a .safetensors steering vector")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("train", help="train a BiPO vector and show its effect")
    model_arg(sp)
    sp.add_argument("--data", help="preference file (default: the bundled power-seeking demo)")
    sp.add_argument("--format", default=None, help="bipo, bipo_ab, caa, ab_prompt, mwe, pairs")
    sp.add_argument("--eval-data", help="held-out pairs (default: 20%% split of --data)")
    sp.add_argument("--layer", type=int, default=12, help="block index (default 12)")
    sp.add_argument("--epochs", type=int, default=4)
    sp.add_argument("--lr", type=float)
    sp.add_argument("--beta", type=float)
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--weight-decay", type=float)
    sp.add_argument("--warmup-steps", type=int)
    sp.add_argument(
        "--paper",
        action="store_true",
        help="paper settings (lr 5e-4, 100 warm-up steps) instead of the fast CPU ones",
    )
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--limit", type=int, help="use only the first N training pairs")
    sp.add_argument("--eval-limit", type=int, help="use only the first N held-out pairs")
    sp.add_argument("--skip-invalid", action="store_true", help="skip malformed rows (warns)")
    sp.add_argument("--behaviour", default=None)
    sp.add_argument("--checkpoint", help="checkpoint file, written each epoch")
    sp.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    sp.add_argument("--out", default="steering.safetensors")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--prompt", help="prompt for the before/after generation")
    sp.add_argument("--max-new-tokens", type=int, default=40)
    sp.add_argument(
        "--gen-multiplier",
        type=float,
        default=6.0,
        help="multiplier of the steered generations shown after training (default 6: -6 and +6)",
    )
    sp.add_argument("--no-report", action="store_true", help="skip the before/after report")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="A/B score or preference margin over multipliers")
    model_arg(sp)
    sp.add_argument("vector")
    sp.add_argument("--data", required=True)
    sp.add_argument("--format", default=None)
    sp.add_argument("--multipliers", type=_floats, default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    sp.add_argument("--limit", type=int)
    sp.add_argument("--skip-invalid", action="store_true")
    sp.add_argument("--out", help="write OUT.csv and OUT.png")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("sweep", help="train and score one vector per layer")
    model_arg(sp)
    sp.add_argument("--data", required=True)
    sp.add_argument("--eval-data", required=True)
    sp.add_argument("--layers", type=_ints, required=True, help="e.g. 6,9,12,15")
    sp.add_argument("--method", default="caa", choices=["bipo", "caa", "pca"])
    sp.add_argument("--epochs", type=int, default=2)
    sp.add_argument("--multipliers", type=_floats, default=[-1.0, 1.0])
    sp.add_argument("--limit", type=int)
    sp.add_argument("--eval-limit", type=int)
    sp.add_argument("--skip-invalid", action="store_true")
    sp.add_argument("--cache-dir", help="folder that caches finished layers (resumable)")
    sp.add_argument("--out", help="write OUT.csv and OUT.png")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("compare", help="cosine similarity of two vector files per hook")
    sp.add_argument("a")
    sp.add_argument("b")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("project", help="per-token projection of a text onto a vector")
    model_arg(sp)
    sp.add_argument("--vector", required=True)
    sp.add_argument("--chat", action="store_true", help="wrap the text in the chat template")
    sp.add_argument("--html", help="also write a coloured-token HTML file")
    sp.add_argument("text")
    sp.set_defaults(func=cmd_project)

    sp = sub.add_parser("export", help="convert a vector to GGUF (llama.cpp) or safetensors")
    sp.add_argument("vector")
    sp.add_argument("--format", choices=["gguf", "safetensors"], default="gguf")
    sp.add_argument("--out")
    sp.add_argument("--arch", default=None, help="architecture name for GGUF (default: llama)")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from steerlens.errors import SteerlensError

    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    args.model_given = "--model" in argv_list
    try:
        return int(args.func(args))
    except SteerlensError as e:
        print(f"steerlens: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
