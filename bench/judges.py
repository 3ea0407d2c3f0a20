# ruff: noqa: E501 - the page template is Markdown, its lines are the page's
"""Judges and coherence measures checked against readers (docs/judges.md).

    python bench/judges.py                 # every judge design, coherence measures, the page
    python bench/judges.py --rubric        # also the LLM rubric judge on SmolLM2 (~10 min)

Every judge design is fit on the behaviour's training pairs only (the results page's pairs) and
scored against the gold labels in ../shared/data/gold (1,078 steered answers, two readers
each): per-answer rank correlation, sign accuracy, condition-mean correlation and range error,
each with a 95% bootstrap interval over questions (sl.evaluation.agreement). The labels are
used to measure and choose, never to fit. Coherence measures (perplexity under the unsteered
model, distinct-2, per-answer repetition) are compared with the readers' fluency labels by
rank correlation; perplexities come from the committed cells (bench/cache/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DOCS, ROOT, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.evaluation.agreement import agreement_from_scores, load_labels  # noqa: E402
from steerlens.evaluation.answers import score_answers
from steerlens.evaluation.openended import distinct_n, repetition  # noqa: E402

CACHE = ROOT / "bench" / "cache" / "results"
OUT = DOCS / "data" / "judges.json"
#: the results page's judge for each behaviour before this page (context for sycophancy only)
OLD_CONTEXT = ("sycophancy",)


def fit_pairs(d: Path, name: str) -> list:
    """The results page's training pairs for ``name`` (what its judge is fit on)."""
    data = sl.load_behaviour(name, d)
    return data.pairs[:640] if data.family == "bipo" else data.pairs[:-64][:640]


def cached_nll(labels: pd.DataFrame) -> pd.DataFrame:
    """Each labelled answer's nll and token count, from its cell's committed metric file."""
    out = []
    for cell, g in labels.groupby("cell", sort=False):
        rows = []
        for f in sorted((CACHE / cell).glob("open_ended-*.json")):
            rows += json.loads(f.read_text())["rows"]
        table = (
            pd.DataFrame(rows)
            .drop_duplicates(["item", "multiplier"])
            .set_index(["item", "multiplier"])
        )
        for i, r in g.iterrows():
            hit = table.loc[(r["item"], r["multiplier"])]
            assert hit["text"] == r["answer"], (
                f"{cell}: item {r['item']} is not the labelled answer"
            )
            out.append((i, float(hit["nll"]), int(hit["tokens"])))
    idx, nll, tok = zip(*out, strict=True)
    return pd.DataFrame({"nll": nll, "tokens": tok}, index=idx).sort_index()


def coherence_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Rank correlation of each per-answer coherence measure with the fluency labels."""
    x = labels.join(cached_nll(labels))
    x["perplexity"] = np.exp(x["nll"] / x["tokens"].clip(lower=1))
    x["distinct2"] = [distinct_n([t]) for t in x["answer"]]
    x["repetition"] = [repetition(t) for t in x["answer"]]
    rows = []
    signs = {"perplexity": -1, "distinct2": 1, "repetition": -1}
    rng = np.random.default_rng(0)
    for measure, sign in signs.items():
        v = sign * x[measure].fillna(x[measure].median())
        rho = v.rank().corr(x["fluency"].rank())
        boots = []
        qs = x["question"].unique()
        for _ in range(500):
            pick = rng.choice(qs, len(qs))
            b = pd.concat([x[x["question"] == q] for q in pick])
            bv = sign * b[measure].fillna(x[measure].median())
            boots.append(bv.rank().corr(b["fluency"].rank()))
        lo, hi = np.quantile(boots, [0.025, 0.975])
        loops = x[x["fluency"] <= 0.5]
        rows.append({"measure": measure, "direction": "lower is more fluent" if sign < 0 else "higher is more fluent",
                     "rank corr. with fluency": rho, "low": lo, "high": hi,
                     "mean on broken answers (fluency <= 0.5)": loops[measure].mean(),
                     "mean on fluent answers (fluency 2)": x[x["fluency"] == 2][measure].mean()})  # fmt: skip
    return pd.DataFrame(rows)


def agreement(judges: dict, labels: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    frames = []
    for name, g in labels.groupby("behaviour", sort=False):
        s = score_answers(judges[name], g["answer"].tolist(), g["question"].tolist())
        frames.append(agreement_from_scores(g, s, n_boot=n_boot))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rubric", action="store_true", help="also the LLM rubric judge on SmolLM2")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument(
        "--render", action="store_true", help="only re-render from docs/data/judges.json"
    )
    args = ap.parse_args()
    if args.render:
        render(json.loads(OUT.read_text()))
        return
    warnings.filterwarnings("ignore")
    d = require_shared()
    labels = load_labels(d / "gold")
    t0 = time.perf_counter()
    raw: dict = {"commit": git_rev(), "machine": machine(), "designs": {}, "seconds": {}}
    designs = {
        "answer alone (the results page's judge; sycophancy reads its question)": dict(
            context=False
        ),
        "question + answer (context)": dict(context=True),
    }
    for design, kw in designs.items():
        t = time.perf_counter()
        judges = {}
        for name in labels["behaviour"].unique():
            ctx = kw["context"] or (design.startswith("answer alone") and name in OLD_CONTEXT)
            judges[name] = sl.BehaviourJudge.fit(fit_pairs(d, name), context=ctx)
        raw["designs"][design] = agreement(judges, labels, args.n_boot).to_dict("records")
        raw["seconds"][design] = time.perf_counter() - t
        print(design, f"{time.perf_counter() - t:.0f} s", flush=True)
    raw["coherence"] = coherence_table(labels).to_dict("records")
    if args.rubric:
        from steerlens.evaluation.rubric import RubricJudge

        model = sl.load_model()
        t = time.perf_counter()
        judges = {
            n: RubricJudge(model, rubric=n, name="SmolLM2-135M-Instruct")
            for n in labels["behaviour"].unique()
        }
        raw["designs"]["LLM rubric, SmolLM2-135M (AxBench 0-2)"] = agreement(
            judges, labels, args.n_boot
        ).to_dict("records")
        raw["seconds"]["LLM rubric, SmolLM2-135M (AxBench 0-2)"] = time.perf_counter() - t
    raw["minutes"] = (time.perf_counter() - t0) / 60
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(raw, indent=1, default=float))
    render(raw)


def fmt(r: dict, stat: str) -> str:
    return sl.intervals.format_interval(
        r[stat], r[f"{stat}_low"], r[f"{stat}_high"], signed=stat == "rank_corr"
    )


def render(raw: dict) -> None:
    parts = []
    for design, rows in raw["designs"].items():
        table = [{"behaviour": r["behaviour"], "answers": r["n"], "rank corr.": fmt(r, "rank_corr"),
                  "sign acc.": fmt(r, "sign_acc"), "condition-mean corr.": fmt(r, "cond_corr"),
                  "range error": fmt(r, "range_error"),
                  "meets 0.9 / 0.10": "yes" if r["cond_corr"] >= 0.9 and r["range_error"] <= 0.10 else "no"}
                 for r in rows]  # fmt: skip
        met = sum(t["meets 0.9 / 0.10"] == "yes" for t in table)
        parts.append(
            f"### {design}\n\n{md_table(table)}\n\nBehaviours meeting both targets: {met} of {len(table)}.\n"
        )
    coh = md_table(pd.DataFrame(raw["coherence"]))
    tried = []
    for name, what in (
        ("minilm", "MiniLM feature designs"),
        ("lm", "probes on SmolLM2's residual stream"),
    ):
        f = DOCS / "data" / f"judge_designs_{name}.csv"
        if f.exists():
            df = pd.read_csv(f).rename(
                columns={
                    "rank": "rank corr.",
                    "sign": "sign acc.",
                    "cond": "condition-mean corr.",
                    "rerr": "range error",
                }
            )
            tried.append(
                f"### {what}\n\n{md_table(df.drop(columns=[c for c in ('C',) if c in df]), floatfmt='.2f')}\n"
            )
    page = f"""# Judges checked against readers

Command: `python bench/judges.py{" --rubric" if any(k.startswith("LLM rubric") for k in raw["designs"]) else ""}` (commit {raw["commit"]}, {raw["minutes"]:.0f} minutes on {raw["machine"]}).
Raw numbers: `docs/data/judges.json`.

What a verdict on the results page stands on is the judge that reads the steered answers. Here
every judge design is compared with two readers' labels on 1,078 answers the results cells
produced (`../shared/data/gold`: 7 behaviours x 14 questions x 11 conditions; the readers saw no
condition). Each judge is fit on the behaviour's training pairs only; the labels measure, they
never fit. Per behaviour: rank correlation of score and stance per answer, sign accuracy on the
answers the readers gave a stance, correlation of the 11 condition means, and the range error
(mean over bipo-full and caa at m = 0.5 and 1 and prompting at 1 of |judge's range - readers'
range / 2|), each with a 95% bootstrap interval over the 14 questions. The targets fixed before
measuring: condition-mean correlation >= 0.9 and range error <= 0.10.

{"".join(parts)}
The LLM rubric judge (`sl.RubricJudge`, AxBench's 0-2 concept rating read from the next-token
probabilities of "0", "1", "2") with SmolLM2-135M-Instruct rating the answers reads them at chance
or worse on every behaviour: a 135M-parameter rater cannot tell stance in its own answers. A larger
local rater (Qwen2.5-Coder-1.5B-Instruct as a GGUF, about 2.3 s an answer on 2 cores, ~40 minutes
for these 1,078 answers) was not run here; with a GPU or an API, pass that model or a callable.

## Designs tried (point estimates, 200 training pairs, four behaviours)

`NPAIRS=200 python bench/judge_designs.py 20 minilm hallucination,corrigible-neutral-HHH,survival-instinct,power-seeking`
and `... 20 lm 8,15,22 ...` (raw: `docs/data/judge_designs_*.csv`). MiniLM designs: the answer
alone; answer and question embeddings side by side (`concat`); question-answer interaction
features (`interact`: a*q, |a-q|); each with hard negatives (`+aug`: a polite opener before the
opposite answer labelled 0, a blunt opener before the matching answer labelled 1). None helps:
the interaction and augmented designs lose agreement. Probes on SmolLM2-135M's own residual
stream (mean over the answer tokens, read after the question; a logistic regression on the
training pairs) read stance better where the effect is large (hallucination: rank correlation
0.65 against MiniLM's 0.33, condition means 0.97 against 0.71; power-seeking 0.66 against 0.61)
but are overconfident: their ranges overshoot the readers' (range error 0.12-0.25), so no design
meets both targets on a behaviour it did not already meet. Calibrating them needs labels a user
of a new behaviour does not have; scoring the results page's 40,000 answers with a 135M-parameter
probe on 2 CPU cores was not done this session.

{"".join(tried)}
## Coherence against the fluency labels

Rank correlation of each per-answer measure (signed so that higher means more fluent) with the
readers' fluency label (0 broken, 1 flawed, 2 fluent), 95% bootstrap interval over questions:

{coh}
"""
    (DOCS / "judges.md").write_text(page)


if __name__ == "__main__":
    main()
