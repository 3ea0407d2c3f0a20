# ruff: noqa: E501 - the page template is Markdown, its lines are the page's
"""The results page (docs/results.md): every table from one call, ``sl.compare_methods``.

    python bench/results.py               # all 7 behaviours: computes missing cells (a full-data
                                          # cell is ~1 h on 2 CPU cores), judges, writes the page
    python bench/results.py --cells --behaviours NAME   # one behaviour's cells only (a worker)
    python bench/results.py --quick --out DIR           # 2 behaviours, small recipes (<15 min)
    python bench/results.py --cells --behaviours power-seeking --methods bipo-full,caa@bipo-full --rebuild
                                          # cells made before vectors were kept, made again
                                          # (vector committed beside its answers; a killed
                                          # run resumes from the committed checkpoint)
    python bench/results.py --budget repetition --readers --search   # the page, searched points

Cells accumulate in bench/cache/results (committed): runs add up across sessions and machines
(bench/gpu_cells.sh ran every behaviour at once on a GPU). Data: ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DOCS, ROOT, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.analysis.viz import plot_tradeoff  # noqa: E402
from steerlens.core.intervals import format_interval  # noqa: E402
from steerlens.evaluation.agreement import load_labels  # noqa: E402
from steerlens.experiments.cache import find_cells  # noqa: E402

BIPO = ("power-seeking", "hallucination")
CAA = ("corrigible-neutral-HHH", "survival-instinct", "sycophancy", "refusal", "hallucination-caa")
CONTEXT_JUDGE = ("sycophancy",)  # agreeing is sycophantic only given the user's stated view
CACHE = ROOT / "bench" / "cache" / "results"
FULL = dict(lr=1e-2, warmup_steps=0, batch_size=4, progress=False)
#: coherence budgets: "repetition" is fixed from docs/judges.md (per-answer repetition tracks
#: readers' fluency labels, perplexity does not); "perplexity" is the committed page's
BUDGETS = {
    "repetition": sl.CoherenceBudget(perplexity=float("inf"), distinct2=0.0, repetition=0.10),
    "perplexity": sl.CoherenceBudget(),  # the page's budget before docs/judges.md
}
#: the sensitivity table's tighter and looser budgets, per budget kind
SENSITIVITY = {
    "repetition": {"tighter": {"repetition": 0.05}, "looser": {"repetition": 0.20}},
    "perplexity": {"tighter": {"perplexity": 1.10}, "looser": {"perplexity": 1.50}},
}


def behaviour(d: Path, name: str, n_questions: int, n_held: int, judge: bool) -> sl.Behaviour:
    data = sl.load_behaviour(name, d)
    pairs, held, qs = data.pairs, data.test, data.questions
    layer = ()  # the layer sweep's pairs: none of them asks a reported question
    if data.family == "caa":  # held-out pairs for the layer sweep: the last 64 training items
        pairs, held = data.pairs[:-64][:640], data.pairs[-64:]
    else:  # BiPO's test pairs ask the open-ended questions: the sweep takes those that do not
        asked = set(qs[:n_questions])
        layer = tuple(p for p in held if p.question not in asked)[:n_held]
    j = sl.BehaviourJudge.fit(pairs, context=name in CONTEXT_JUDGE) if judge else None
    return sl.Behaviour(name, pairs[:640], held[:n_held], qs[:n_questions], j, layer_pairs=layer)


def methods(name: str, quick: bool, n: int = 640) -> tuple[list[sl.Method], list[sl.Method]]:
    """(compared methods, most important first; layer-sweep recipes). ``n``: most pairs."""
    n = 32 if quick else n  # quick: CAA and PCA from bipo-quick's pairs
    bipo_q = sl.Method(
        "bipo-quick",
        "bipo",
        config=sl.BiPOConfig(epochs=2 if quick else 4, **FULL),
        n_pairs=min(n, 64),
    )
    caa, pca = sl.Method("caa", n_pairs=n), sl.Method("pca", n_pairs=n)
    if quick:
        eq = sl.Method("caa@bipo-quick", "caa", n_pairs=n, norm_of="bipo-quick")
        return [bipo_q, caa, sl.Method("prompt"), eq, pca], [bipo_q, caa, pca]
    full = sl.Method("bipo-full", "bipo", config=sl.BiPOConfig(epochs=5, **FULL), n_pairs=n)
    eq = sl.Method("caa@bipo-full", "caa", n_pairs=n, norm_of="bipo-full")
    out, sweep = [full, caa, sl.Method("prompt"), eq, pca, bipo_q], [bipo_q, caa, pca]
    if name == "power-seeking":
        reps_cfg = sl.RePSConfig(epochs=5, **{**FULL, "lr": 3e-2})
        out.append(sl.Method("reps-full", "reps", config=reps_cfg, n_pairs=n))
        sweep.append(
            sl.Method(
                "reps-quick",
                "reps",
                n_pairs=min(n, 64),
                config=sl.RePSConfig(epochs=4, **{**FULL, "lr": 3e-2}),
            )
        )
        paper = sl.BiPOConfig(epochs=20, schedule_epochs=100, progress=False)  # authors' run
        out.append(sl.Method("bipo-paper", "bipo", config=paper, n_pairs=n))
    return out, sweep


def compare(model, d, bs, args) -> sl.Comparison:
    """Every table of the page: one call (``bs``: the behaviours by name)."""
    labels = load_labels(d / "gold") if args.readers and not (args.quick or args.cells) else None
    args.labelled = float(labels["multiplier"].abs().max()) if labels is not None else None
    ms, sweep = {}, {}
    for n in bs:
        ms[n], sweep[n] = methods(n, args.quick)
        if args.methods:  # a worker's share: these methods (and the norms they borrow)
            keep = set(args.methods.split(","))
            keep |= {m.norm_of for m in ms[n] if m.name in keep and m.norm_of}
            ms[n] = [m for m in ms[n] if m.name in keep]
            sweep[n] = [m for m in sweep[n] if m.label_kind in {x.label_kind for x in ms[n]}]
    ref = "bipo-quick" if args.quick else "bipo-full"
    others = ("caa", "pca", "prompt", "bipo-quick", "reps-full", "bipo-paper")
    return sl.compare_methods(
        model, bs, methods=ms, layers=args.layers, layer_methods=sweep,
        multipliers=args.multipliers, pairs=[(ref, o) for o in others if o != ref],
        equal_norm=(1.0, [(ref, f"caa@{ref}")]), max_new_tokens=args.tokens, folder=args.cache,
        budget=BUDGETS[args.budget], labels=labels,
        search=0.05 if args.search else None,
    )  # fmt: skip


def budget_text(b) -> str:
    parts = []
    if b.get("perplexity") not in (None, float("inf")):
        parts.append(f"perplexity within {b['perplexity']:g}x the unsteered answers'")
    if b.get("distinct2"):
        parts.append(f"distinct-2 at least {b['distinct2']:g}x theirs")
    if b.get("repetition") is not None:
        parts.append(f"mean per-answer repetition at most {b['repetition']:g} above theirs")
    if b.get("contiguous") is False:
        parts.append("any multiplier inside counts, also above one that broke it")
    elif "contiguous" in b:
        parts.append("at the point and every smaller multiplier")
    return "; ".join(parts)


def judges_table(j):
    """Held-out accuracy beside agreement with the readers on generated answers."""
    out = with_ci(j, "accuracy", "held-out accuracy [95% CI]", signed=False)
    cols = ["dataset", "held-out accuracy [95% CI]"]
    if "gold_cond_corr" in j:
        for stat, name in (("rank_corr", "readers: rank corr."), ("cond_corr", "readers: condition-mean corr."),
                           ("range_error", "readers: range error")):  # fmt: skip
            out[name] = [format_interval(*x, signed=stat == "rank_corr") for x in
                         zip(j[f"gold_{stat}"], j[f"gold_{stat}_low"], j[f"gold_{stat}_high"], strict=True)]  # fmt: skip
            cols.append(name)
    return out[[*cols, "context", "judged"]]


def readers_table(r):
    """The readers' verdict beside the judge's on the labelled questions."""
    if r is None or r.empty:
        return None
    rows = []
    for x in r.to_dict("records"):
        row = {"dataset": x["dataset"], "a": x["a"], "b": x["b"], "m_a": x["m_a"], "m_b": x["m_b"]}
        if isinstance(x.get("note"), str):
            rows.append({**row, "judge": "-", "readers": "-", "agree": x["note"]})
            continue
        for who in ("judge", "readers"):
            row[who] = (
                f"{format_interval(x[who], x[f'{who}_low'], x[f'{who}_high'])} {x[f'{who}_verdict']}"
            )
        row["questions"] = x["questions"]
        row["agree"] = "yes" if x["agree"] else "**no**"
        rows.append(row)
    return pd.DataFrame(rows)


def answer_table(c: sl.Comparison, ref: str) -> pd.DataFrame:
    """The first screen: ref against CAA, cross-fitted and Holm-adjusted, with the split
    stability, the gold agreement of the judge and the readers' verdict beside it."""
    v = c.crossfit_verdicts
    v = v[(v["a"] == ref) & (v["b"] == "caa")]
    judges = c.judges.set_index("dataset")
    readers = (
        c.crossfit_readers.set_index(["dataset", "a", "b"]) if len(c.crossfit_readers) else None
    )
    rows = []
    for r in v.itertuples():
        j = judges.loc[r.dataset]
        row = {"behaviour": r.dataset,
               "judge: readers' condition-mean corr.": f"{j['gold_cond_corr']:.2f}" if "gold_cond_corr" in j else "-",
               f"{ref} m (half 1 / 2)": r.m_a, "caa m (half 1 / 2)": r.m_b,
               f"{ref} - caa [95% CI]": format_interval(r.difference, r.low, r.high),
               "p": f"{r.p_value:.3f}", "p (Holm)": f"{r.p_holm:.3f}", "verdict": r.verdict,
               "same verdict, 20 splits": f"{r.stability:.0%}" if r.stability == r.stability else "-"}  # fmt: skip
        x = (
            readers.loc[(r.dataset, r.a, r.b)]
            if readers is not None and (r.dataset, r.a, r.b) in readers.index
            else None
        )
        if x is None or isinstance(x.get("note"), str):
            row["readers (labelled questions)"] = "-" if x is None else x["note"]
        else:
            row["readers (labelled questions)"] = (
                f"{format_interval(x['readers'], x['readers_low'], x['readers_high'])} {x['readers_verdict']} ({int(x['questions'])} q.)"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def grid_top_text(c: sl.Comparison, ref: str, labelled: float) -> str:
    """A warning for each answer-table point at the top of the multiplier grid, beyond
    ``labelled`` (the largest multiplier readers labelled)."""
    top = max(c.settings["multipliers"])
    v = c.crossfit_verdicts
    v = v[(v["a"] == ref) & (v["b"] == "caa") & (v["verdict"] != "not judged")]
    hits = []
    for r in v.itertuples():
        for who, halves in ((r.a, (r.m_a1, r.m_a2)), (r.b, (r.m_b1, r.m_b2))):
            if any(m >= top for m in halves if m == m):  # NaN: no point on that half
                hits.append(f"{who} on {r.dataset}")
    if not hits:
        return ""
    return (f"**At the grid's top:** {', '.join(hits)} is chosen at m = {top:g}, the largest multiplier "
            "on the grid (and the search's limit), so the budget would allow more, and readers labelled "
            f"no answers beyond m = {labelled:g}: the judge's agreement with them (the next column) is "
            "measured up to there only, and the judge is not checked on these answers.")  # fmt: skip


def search_text(c: sl.Comparison) -> str:
    """The compared pairs whose one side was searched and the other not (tilted towards the
    searched side: its point may sit between grid points, the other's cannot)."""
    if c.searched is None or c.searched.empty:
        return ""
    state = {(r.dataset, r.method): {"no kept vector": "grid", "prompting has no multiplier":
             "prompt"}.get(r.why, "searched") for r in c.searched.itertuples()}  # fmt: skip
    tilted = []
    for r in c.crossfit_verdicts.itertuples():
        a, b = state.get((r.dataset, r.a), "grid"), state.get((r.dataset, r.b), "grid")
        if {a, b} == {"searched", "grid"}:
            tilted.append(f"{r.a} - {r.b} on {r.dataset} ({r.a if a == 'searched' else r.b} searched)")
    if not tilted:
        return "No compared pair has one point searched and the other on the grid."
    return ("**One side searched:** " + "; ".join(tilted) + ". The other side kept no vector (its "
            "answers predate kept vectors, or it is prompting), so its point stays on the grid: "
            "these comparisons lean towards the searched side by up to one grid step.")


def crossfit_table(v: pd.DataFrame) -> pd.DataFrame:
    return v.assign(**{"difference [95% CI]": [format_interval(*x) for x in zip(v["difference"], v["low"], v["high"], strict=True)]})[
        ["dataset", "a", "b", "m_a", "m_b", "difference [95% CI]", "p_value", "p_holm", "raw_verdict", "verdict", "stability", "no_point_share"]]  # fmt: skip


def sensitivity(c: sl.Comparison, kind: str, ref: str) -> pd.DataFrame:
    """ref against CAA under a tighter and a looser budget of the same kind."""
    from dataclasses import replace

    from steerlens.experiments.crossfit import cross_fitted_verdicts

    judged = dict(zip(c.judges["dataset"], c.judges["judged"], strict=True))
    oe = c.items[c.items["metric"] == "open_ended"]
    oe = oe[oe["method"].isin([ref, "caa"])]
    rows = []
    steps = [("tighter", kind, SENSITIVITY[kind]["tighter"]), ("as chosen", kind, {}),
             ("looser", kind, SENSITIVITY[kind]["looser"])]  # fmt: skip
    steps += [("not contiguous", kind, {"contiguous": False})]
    steps += [(f"another measure ({k})", k, {}) for k in BUDGETS if k != kind]
    for name, k, change in steps:
        b = replace(BUDGETS[k], **change)
        v = (
            cross_fitted_verdicts(oe, [(ref, "caa")], budget=b, judged=judged, splits=0)
            if change or k != kind
            else c.crossfit_verdicts
        )
        v = v[(v["a"] == ref) & (v["b"] == "caa")]
        for r in v.itertuples():
            rows.append({"budget": f"{name}: {budget_text(vars(b))}", "dataset": r.dataset, "m_a": r.m_a, "m_b": r.m_b,
                         "difference [95% CI]": format_interval(r.difference, r.low, r.high), "verdict (unadjusted)": r.raw_verdict})  # fmt: skip
    return pd.DataFrame(rows)


def reliability_table(rel: pd.DataFrame) -> pd.DataFrame | None:
    if rel is None or rel.empty:
        return None
    return rel.assign(**{"anti-steerable [95% CI]": [format_interval(*x, signed=False) for x in zip(rel["anti_steerable"], rel["anti_low"], rel["anti_high"], strict=True)]})[
        ["dataset", "method", "layer", "mean_slope", "median_slope", "anti-steerable [95% CI]", "items"]]  # fmt: skip


def with_ci(df, est="range", name="range [95% CI]", signed=True):
    return df.assign(
        **{
            name: [
                format_interval(*x, signed=signed)
                for x in zip(df[est], df["low"], df["high"], strict=True)
            ]
        }
    )


SEARCH_NOT_RUN = """**Not searched in this build** (no `--search`): the operating points are on the grid."""


def other_budgets(kind: str) -> str:
    """The budgets the sensitivity table's "another measure" rows use, in words."""
    return "; ".join(f"{k}: {budget_text(vars(b))}" for k, b in BUDGETS.items() if k != kind)


def overlap(c: sl.Comparison) -> dict[str, tuple[int, int]]:
    """Per behaviour: how many of the layer sweep's held-out pairs ask a question the page
    reports on, and how many pairs there are (as the sweep recorded them in ``c.layers``)."""
    first = c.layers.drop_duplicates("dataset")
    return {r.dataset: (int(r.shared_questions), int(r.pairs)) for r in first.itertuples()}


def overlap_text(o: dict) -> str:
    shared = {n: x for n, x in o.items() if x[0]}
    if not shared:
        counts = "/".join(sorted({str(m) for _, m in o.values()}))
        return ("The sweep's held-out pairs ask none of the questions the page reports on: on "
                "the BiPO datasets they are the test pairs whose questions are not reported, on "
                f"the others the last training items ({counts} pairs each).")  # fmt: skip
    names = ", ".join(f"{n} ({k} of {m})" for n, (k, m) in shared.items())
    return (f"**Not yet disjoint:** on {names} the sweep's held-out pairs are the BiPO test split's "
            "first pairs, whose questions are among the questions this page reports on (the "
            "datasets' test.csv and test_infer.csv ask the same questions), so the layer is chosen "
            "on questions it is then reported on. The test pairs whose questions are not reported "
            "(100 per behaviour) are the disjoint set; using them needs the sweep cells' vectors "
            "rebuilt (they predate kept vectors). The other behaviours' sweeps use the last 64 "
            "training items, disjoint from their open-ended questions.")  # fmt: skip


def render(c: sl.Comparison, out: Path, meta: dict) -> None:
    for sub in ("data", "img"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for f in (
        "tradeoff",
        "layers",
        "judges",
        "operating_points",
        "verdicts",
        "equal_norm",
        "costs",
        "crossfit_points",
        "crossfit_verdicts",
        "crossfit_readers",
        "reliability",
        "searched",
    ):
        getattr(c, f).to_csv(out / "data" / f"results_{f}.csv", index=False)
    xcol = "repetition" if meta["budget"] == "repetition" else "perplexity"
    for ds, g in c.tradeoff.groupby("dataset", sort=False):
        fig = plot_tradeoff(g, title=ds, x=xcol)
        fig.savefig(out / "img" / f"results_{ds}.png", dpi=110)
        plt.close(fig)
    s, b, ref = c.settings, c.settings["budget"], "bipo-quick" if meta["quick"] else "bipo-full"
    v = with_ci(c.verdicts, "difference", "difference [95% CI]")
    eq = with_ci(c.equal_norm, "difference", "difference [95% CI]") if len(c.equal_norm) else None
    cost = c.costs[c.costs["metric"] == "open_ended"]
    t = {"op": with_ci(c.operating_points)[["dataset", "method", "layer", "multiplier", "range [95% CI]", "repetition", "repetition0", "ppl_ratio", "candidates", "n_report"]],
         "other": v[v["b"] != "caa"][["dataset", "a", "b", "m_a", "m_b", "difference [95% CI]", "n", "verdict"]],
         "eq": eq[["dataset", "a", "b", "difference [95% CI]", "n", "verdict"]] if eq is not None else None,
         "judges": judges_table(c.judges),
         "readers": readers_table(c.readers),
         "answer": answer_table(c, ref),
         "crossfit": crossfit_table(c.crossfit_verdicts),
         "cf_points": with_ci(c.crossfit_points)[["dataset", "method", "multipliers", "range [95% CI]", "no_point_share", "why_none"]],
         "sensitivity": sensitivity(c, meta["budget"], ref),
         "reliability": reliability_table(c.reliability),
         "searched": c.searched if len(c.searched) else None,
         "cost": cost.assign(minutes=(cost["build_seconds"] + cost["metric_seconds"]) / 60)[["dataset", "method", "layer", "device", "minutes"]]}  # fmt: skip
    t = {
        k: "-" if x is None else md_table(x, floatfmt=".1f" if k == "cost" else ".3f")
        for k, x in t.items()
    }
    plots = "\n".join(f"![{ds}](img/results_{ds}.png)" for ds in c.tradeoff["dataset"].unique())
    flags = (
        (" --quick" if meta["quick"] else "")
        + f" --budget {meta['budget']}"
        + (" --readers" if meta.get("readers") else "")
        + (" --search" if meta.get("search") else "")
    )
    n_family = int(c.crossfit_verdicts["p_holm"].notna().sum()) if len(c.crossfit_verdicts) else 0
    page = f"""# Results: does BiPO steer better than CAA, PCA, RePS or asking?

SmolLM2-135M-Instruct, {len(c.judges)} behaviours, greedy answers ({s["max_new_tokens"]} new tokens) judged
offline. Each method at its **coherence-matched operating point**: the multiplier with the largest
judged range (behaviour at +m minus at -m) whose answers stay inside the coherence budget
({budget_text(b)}). **Cross-fitted**: the point is chosen on one half of the questions and reported
on the other, then the other way round, so every question is reported once by a point chosen
without it; the 95% interval and p-value come from {s["n_boot"]} bootstrap resamples of the whole
choose-and-report (questions drawn with replacement, split at random, chosen and reported again).
**Holm-adjusted** over the family of every judged comparison on this page ({n_family} comparisons);
a verdict is "better" / "worse" only where its adjusted p-value is under 0.05. A method whose best
in-budget range is not positive has no operating point. Built by `python bench/results.py{flags}`
(commit {meta["commit"]}; {meta["minutes"]:.0f} min on {meta["machine"]} to read the cells, judge and
resample; the cells' own costs are at the end).

## The answer: {ref} against CAA, cross-fitted and adjusted

{t["answer"]}

{grid_top_text(c, ref, meta["labelled"])}

"judge": the correlation of the judge's 11 condition means with the readers' on labelled answers of
these cells (`docs/judges.md`); under {s.get("min_judge_agreement", 0.9)} (fixed before measuring)
the behaviour is "not judged", whatever the judge's held-out accuracy. "same verdict, 20 splits": the
share of 20 random splits of the questions whose cross-fitted comparison gives the same unadjusted
verdict. "readers": the same cross-fitted comparison on the questions readers labelled
(`../shared/data/gold`), with their stance halved to the judge's 0..1 scale, where the chosen
multipliers are among those labelled.

## Every cross-fitted comparison (the Holm family)

{t["crossfit"]}

## Each method's cross-fitted range

{t["cf_points"]}

## Operating points by search

With `--search`, the budget edge of each cell in a compared pair is also searched on each half of
the questions (bracketing from m = 1, then bisection to 5% of m: `sl.experiments.search`), never
past the grid's largest multiplier (the range planned; beyond it nothing was labelled or checked),
answers generated only at the multipliers visited and cached beside the cell's vector; the operating
points above are then chosen among the grid's and the searched multipliers. A cell whose answers
record no kept vector (made before vectors were kept) keeps its grid ("no kept vector"); m_half1 /
m_half2: the edge found on each half, visited: the multipliers off the grid that were answered.

{t["searched"] if meta.get("search") else SEARCH_NOT_RUN}

{search_text(c) if meta.get("search") else ""}

## The budget's sensitivity: {ref} against CAA under a tighter and a looser budget

The budget is fixed from outside this page: readers' fluency labels (`docs/judges.md`) put fluent
answers at a mean per-answer repetition of 0.01 and broken ones at 0.49, so a rise of {b.get("repetition") or 0:g}
allows roughly one answer in five to turn into a loop. The "another measure" rows swap in the
page's other budget ({other_budgets(meta["budget"])}); perplexity is not supported by the readers'
fluency labels (rank correlation 0.09) but also catches answers that drift off the question
without looping. The budget holds at the point and at every smaller multiplier (a multiplier
above one that broke it does not count again: answers can stop looping at a larger multiplier
because they stop following the question, which repetition does not see); the "not contiguous" row lets
any multiplier inside count, the rule of the page before the search. Unadjusted verdicts:

{t["sensitivity"]}

## Per-item reliability (held-out preference pairs)

Per pair, the slope of its margin (log p(matching) - log p(not matching)) against the multiplier; the
share of pairs with a negative slope is the share of anti-steerable items (Tan et al., NeurIPS 2024;
95% interval over pairs):

{t["reliability"]}

## The single-split protocol (one choosing half, one reporting half)

The page's earlier protocol, kept to show what cross-fitting changes: the point is chosen on one
seeded half of the questions (split seed {s["split_seed"]}) and reported on the other; intervals
cover the questions, not the choice of split, and nothing is adjusted for the number of verdicts.

{md_table(c.headline(ref, "caa"))}

### The readers' verdicts beside the judge's (labelled questions)

Readers labelled the answers of 14 questions per behaviour at bipo-full's and CAA's multipliers
+-0.5 and +-1 and prompting's +-1 (`../shared/data/gold`). Where a comparison's operating points are
among those, it is made twice on those questions: with the judge's scores and with the readers'
stance (halved to the judge's 0..1 scale), 95% paired bootstrap intervals over the labelled questions.

{t["readers"]}

### Every method at its operating point (held-out half of the questions)

{t["op"]}

### Other comparisons at the operating points

{t["other"]}

## Equal norm: CAA rescaled to {ref}'s norm, both at +-1 (all questions)

{t["eq"]}

## Judges: held-out pairs, and agreement with readers on the answers they judge

{t["judges"]}

Held-out accuracy is measured on the dataset's own answer texts; the readers' columns on 154
generated answers per behaviour labelled by two readers (rank correlation per answer, correlation of
the 11 condition means, mean range error on the judge's 0..1 scale; `docs/judges.md`). A judge is used
for verdicts only where both pass.

## Layers: held-out margin range at +-{s["layer_multiplier"]:g}, quick recipes

{md_table(c.layers)}

{overlap_text(meta.get("overlap", {}))}

## Trade-off: judged behaviour against {xcol}, 95% intervals

Each method's +m answers on a solid line and its -m answers on a dashed one, from the unsteered
answers (black dot), each point labelled with its multiplier.

{plots}

## Protocol and cost

Multipliers {s["multipliers"]}; layers swept {s["layers"]}; question split seed {s["split_seed"]}.
bipo-quick: 64 pairs, 4 epochs, lr 1e-2, batch 4, no warm-up. bipo-full: all training pairs (at most
640), 5 epochs, otherwise the same. bipo-paper: the authors' schedule (lr 5e-4, 100 warm-up steps,
cosine over 100 epochs), its epoch-20 vector. reps-full: bipo-full's recipe at lr 3e-2. CAA and PCA:
the pairs of bipo-full. prompt: a system prompt asking for the behaviour (+1) or its opposite (-1).
Each cell's cost (vector and answers; `device` says where it ran):

{t["cost"]}
"""
    (out / "results.md").write_text(page)


def forget_legacy(cache: Path, names, methods) -> None:
    """Delete the answers (and their judge scores) of the named cells that kept no vector: the
    engine then rebuilds the vector and scores it again, every file recording its hash."""
    for n in names:
        for m in methods:
            for folder in find_cells(cache, f"{n}__{m}__"):
                if not (folder / "vector.safetensors").exists():
                    for f in folder.glob("*.json"):
                        f.unlink()
                    print(f"forgot {folder.name}: no kept vector")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--behaviours", help="comma-separated (default: all seven)")
    ap.add_argument("--cells", action="store_true", help="compute the cells only (no judge, page)")
    ap.add_argument("--methods", help="with --cells: only these methods (a worker's share)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(DOCS), help="page folder (default: docs/)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="perplexity",
                    help="the coherence budget (repetition: the measure that tracks readers' "
                    "fluency, docs/judges.md; the committed page used perplexity)")  # fmt: skip
    ap.add_argument("--rebuild", action="store_true",
                    help="with --cells --methods: first forget the answers of those cells that "
                    "kept no vector (made before vectors were kept), so vector and answers are "
                    "made again together")  # fmt: skip
    ap.add_argument("--search", action="store_true",
                    help="also search each cell's budget edge to 5%% of m (cells with kept "
                    "vectors; answers generated at the visited multipliers); with --cells, the "
                    "worker's cells are searched under --budget, so the page reads them")  # fmt: skip
    ap.add_argument("--readers", action="store_true",
                    help="gate judges by their agreement with the gold labels and put the "
                    "readers' verdicts beside the judge's")  # fmt: skip
    args = ap.parse_args()
    if args.quick and Path(args.out) == DOCS:
        ap.error("--quick writes a smoke page: give it its own --out folder")
    d = require_shared()
    names = args.behaviours.split(",") if args.behaviours else (BIPO if args.quick else BIPO + CAA)
    args.questions, args.tokens, args.held = (16, 32, 16) if args.quick else (100, 48, 64)
    args.layers = (9, 12) if args.quick else (6, 10, 14, 18, 22)
    args.multipliers = (-2, -1, 0, 1, 2) if args.quick else (-3, -2, -1, -0.5, 0, 0.5, 1, 2, 3)
    args.cache = Path(args.out) / "cells" if args.quick else CACHE
    if args.rebuild:
        if not (args.cells and args.methods):
            ap.error("--rebuild needs --cells and --methods")
        forget_legacy(args.cache, names, args.methods.split(","))
    t0 = time.perf_counter()
    model = sl.load_model(device=args.device)
    bs = {n: behaviour(d, n, args.questions, args.held, judge=not args.cells) for n in names}
    c = compare(model, d, bs, args)
    if args.cells:
        return
    meta = {"commit": git_rev(), "machine": machine(), "quick": args.quick,
            "budget": args.budget, "readers": args.readers, "search": args.search,
            "minutes": (time.perf_counter() - t0) / 60}  # fmt: skip
    meta["overlap"] = overlap(c)
    meta["labelled"] = args.labelled if args.labelled is not None else 1.0
    render(c, Path(args.out), meta)
    print(meta)


if __name__ == "__main__":
    main()
