"""``steerlens`` command line: a thin shell over the public API.

Subcommands: ``info``, ``train``, ``eval``, ``sweep``, ``grid``, ``compare``, ``project``,
``export``.
Run ``steerlens COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlens.cli.common import (
    DEMO_PROMPT,
    GRID_KEYS,
    CliError,
    check_input,
    check_output,
    invalid_rows,
    load_model_arg,
    out_pair,
    read_vector,
    vector_path,
    write_table,
)


def cmd_info(args: argparse.Namespace) -> int:
    from steerlens.core.models import describe

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
    model = load_model_arg(args.model)
    d = describe(model)
    print(f"model: {d['model']} ({d['class']})")
    print(f"layers: {d['n_layers']}  d_model: {d['d_model']}  vocab: {d['d_vocab']}")
    print("hooks per block (blocks.{L}.<name>): " + ", ".join(d["block_hooks"]))
    print("other hooks: " + ", ".join(d["other_hooks"]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import time

    check_input(args.data, "--data")
    check_input(args.eval_data, "--eval-data")
    out = Path(args.out)
    check_output(out, "--out", args.overwrite)
    if args.checkpoint and not args.resume:
        check_output(args.checkpoint, "--checkpoint", args.overwrite)

    from steerlens.core.data import demo_data_path, load_pairs, split_pairs
    from steerlens.evaluation.generation import generate
    from steerlens.evaluation.metrics import preference_margin
    from steerlens.methods.bipo import train_bipo
    from steerlens.methods.bipo_config import FAST, BiPOConfig

    data = Path(args.data) if args.data else demo_data_path("train")
    pairs = load_pairs(data, args.format, invalid=invalid_rows(args))
    if args.limit:
        pairs = pairs[: args.limit]
    if args.eval_data:
        eval_pairs = load_pairs(args.eval_data, invalid=invalid_rows(args))
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
    model = load_model_arg(args.model)
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


def cmd_eval(args: argparse.Namespace) -> int:
    path = vector_path(args)
    check_input(args.data, "--data")
    out = out_pair(args.out, args.overwrite)

    from steerlens.analysis.viz import plot_multiplier_curve
    from steerlens.core.data import load_pairs
    from steerlens.evaluation.metrics import ab_score, preference_margin

    vector = read_vector(path)
    items = load_pairs(args.data, args.format, invalid=invalid_rows(args))
    if args.limit:
        items = items[: args.limit]
    model = load_model_arg(args.model)
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
    write_table(df, out, "score" if "score" in df else "margin", plot_multiplier_curve)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    check_input(args.data, "--data")
    check_input(args.eval_data, "--eval-data")
    out = out_pair(args.out, args.overwrite)

    from steerlens.analysis.viz import plot_sweep
    from steerlens.core.data import load_pairs
    from steerlens.experiments.sweep import sweep_layers
    from steerlens.methods.bipo_config import BiPOConfig

    train = load_pairs(args.data, invalid=invalid_rows(args))
    ev = load_pairs(args.eval_data, invalid=invalid_rows(args))
    if args.limit:
        train = train[: args.limit]
    if args.eval_limit:
        ev = ev[: args.eval_limit]
    model = load_model_arg(args.model)
    cfg = BiPOConfig.fast(epochs=args.epochs, progress=False)
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
    from steerlens.core.data import load_pairs, load_prompts
    from steerlens.evaluation.judge import BehaviourJudge
    from steerlens.experiments.grid import sweep_grid
    from steerlens.experiments.vocabulary import METRICS, Behaviour, Method
    from steerlens.methods.bipo_config import BiPOConfig
    from steerlens.methods.registry import method_names

    specs = _grid_config(args, args.argv)
    methods = args.methods.split(",") if isinstance(args.methods, str) else list(args.methods)
    metrics = args.metrics.split(",") if isinstance(args.metrics, str) else list(args.metrics)
    for m in methods:
        if m not in method_names():
            raise CliError(f"--methods: unknown method {m!r} ({', '.join(method_names())})")
    for m in metrics:
        if m not in METRICS:
            raise CliError(f"--metrics: unknown metric {m!r} ({', '.join(METRICS)})")
    out = check_output(args.out, "--out", args.overwrite)
    behaviours = {}
    for b in specs:
        pairs = load_pairs(b["data"], invalid=invalid_rows(args))[: b.get("limit") or args.limit]
        ev = (load_pairs(b["eval_data"], invalid=invalid_rows(args))[: args.eval_limit]
              if b.get("eval_data") else [])  # fmt: skip
        qs = load_prompts(b["questions"])[: args.questions_limit] if b.get("questions") else []
        judge = (BehaviourJudge.fit(load_pairs(b["data"], invalid=invalid_rows(args)),
                                    context=bool(args.judge_context))
                 if (args.judge or args.judge_context) and qs else None)  # fmt: skip
        if judge is not None:
            print(f"{b['name']}: {judge!r}", file=sys.stderr)
        prompting = tuple(b["prompting"]) if b.get("prompting") else None
        behaviours[b["name"]] = Behaviour(b["name"], pairs, ev, qs, judge, prompting)  # type: ignore[arg-type]
    cfg = BiPOConfig.fast(epochs=args.epochs, progress=False,
                          **({"lr": args.lr} if args.lr else {}))  # fmt: skip
    model = load_model_arg(args.model)
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


def cmd_cosine(args: argparse.Namespace) -> int:
    check_input(args.a, "A")
    check_input(args.b, "B")
    from steerlens.analysis.geometry import cosine_similarity

    df = cosine_similarity(read_vector(args.a), read_vector(args.b))
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    path = vector_path(args)
    html = check_output(args.html, "--html", args.overwrite)
    from steerlens.analysis.geometry import project

    vector = read_vector(path)
    model = load_model_arg(args.model)
    df = project(model, vector, [args.text], chat=args.chat)
    print(
        df[["position", "token", "projection"]].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )
    )
    if html is not None:
        from steerlens.analysis.viz import projection_html

        html.write_text(projection_html(df))
        print(f"wrote {html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    src = Path(vector_path(args))
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
