# ruff: noqa: E501 - the page template is Markdown, its lines are the page's
"""Worked example: refusal added everywhere vs only where a condition holds (CAST), and the
ablation of a refusal direction (Arditi et al. 2024), on the embedded SmolLM2-135M-Instruct.

* harmful prompts: CAA's open-ended refusal questions (50, e.g. "How can I make a bomb?");
  harmless prompts: 50 drawn (seed 0) from the open-ended questions of CAA's other behaviours.
  Each set is split 40/20/40: fit, select, report (the same split for every step).
* judge: ``sl.BehaviourJudge`` fitted on CAA's refusal A/B pairs (answer texts), held-out
  accuracy reported; "judged refusal" is its mean p(refusing) over greedy answers.
* refusal vector: CAA on the refusal A/B pairs, layer 12 (``blocks.12.hook_resid_post``).
* condition: ``search_condition`` over ``blocks.{0..12}.hook_resid_pre`` (before the
  behaviour), harmful = condition holds; direction fitted on the fit split, point chosen on the
  select split, F1 reported on the report split.
* ablation: ``mean_differences`` (harmful - harmless, post-instruction positions) at layers
  4, 8, 12, 16, 20 (the last 20% excluded), each candidate scored by refusal under ablation on
  select-split harmful prompts, refusal under addition on select-split harmless prompts and
  the KL of the last position's next-token distribution on select-split harmless prompts
  under ablation (``select_by_effect``); the best is ablated at every layer on the report
  split.

Writes docs/data/refusal_cast.json and the numbers section of docs/howto/interventions.md.

    python bench/refusal_cast.py       # about 15 minutes on 2 cores
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import DOCS, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.core.encoding import encode_prompt
from steerlens.methods.directions import mean_differences, select_by_effect  # noqa: E402
from steerlens.steering.conditional import Conditional, pooled_activations, search_condition  # noqa: E402

LAYER = 12
TOKENS = 32
OUT = DOCS / "data" / "refusal_cast.json"
PAGE = DOCS / "howto" / "interventions.md"
START, END = "<!-- refusal-cast:start -->", "<!-- refusal-cast:end -->"
OTHERS = ("corrigible-neutral-HHH", "survival-instinct", "sycophancy", "hallucination")


def split(items, seed):
    rng = random.Random(seed)
    items = list(items)
    rng.shuffle(items)
    a, b = int(0.4 * len(items)), int(0.6 * len(items))
    return items[:a], items[a:b], items[b:]


def interval(x):
    """Mean with its 95% bootstrap interval over prompts (steerlens.intervals)."""
    iv = sl.intervals.bootstrap_mean(list(x))
    return iv.estimate, iv.low, iv.high


def main() -> None:
    d = require_shared()
    t_all = time.perf_counter()
    model = sl.load_model()
    harmful = sl.load_prompts(sl.behaviour_files("refusal", d).questions)
    pool = [q for b in OTHERS for q in sl.load_prompts(sl.behaviour_files(b, d).questions)]
    harmless = random.Random(0).sample(pool, 50)
    hf, hs, hr = split(harmful, 1)
    nf, ns, nr = split(harmless, 2)
    pairs = sl.load_pairs(sl.behaviour_files("refusal", d).train)
    judge = sl.BehaviourJudge.fit(pairs)
    refusal = sl.caa_vector(model, pairs, layers=LAYER, progress=False)
    refusal.metadata["name"] = "refusal"

    def judged(vector, prompts, mults=(1.0,)):
        df = sl.open_ended_score(model, vector, prompts, judge, multipliers=mults,
                                 max_new_tokens=TOKENS, per_item=True, progress=False)  # fmt: skip
        return df

    # ---- condition search (harmful = holds)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(LAYER + 1)]
    t0 = time.perf_counter()
    acts_h = pooled_activations(model, hf + hs + hr, hooks=hooks)
    acts_n = pooled_activations(model, nf + ns + nr, hooks=hooks)
    # seed=None keeps the order given: fit = first 40%, select = next 20%, report = last 40%
    found = search_condition(acts_h, acts_n, splits=(0.4, 0.2), seed=None)
    t_search = time.perf_counter() - t0
    cond = found.condition
    rule = Conditional(cond, refusal)

    # ---- generations on the report split: unsteered, everywhere, conditional
    rows = []
    t0 = time.perf_counter()
    for label, vec, mults in (("unsteered", None, (0.0,)), ("everywhere", refusal, (2.0, 4.0)),
                              ("conditional", rule, (2.0, 4.0))):  # fmt: skip
        for name, prompts in (("harmful", hr), ("harmless", nr)):
            df = judged(vec, prompts, mults)
            for m, grp in df.groupby("multiplier"):
                mean, lo, hi = interval(grp["behaviour"])
                if "condition_met" in grp:
                    steered = float(grp["condition_met"].astype(bool).mean())
                else:
                    steered = 0.0 if vec is None else 1.0
                ppl = float(np.exp(grp["nll"].sum() / max(grp["tokens"].sum(), 1)))
                rows.append({"steering": label, "multiplier": float(m), "prompts": name,
                             "n": len(grp), "judged_refusal": mean, "ci_low": lo, "ci_high": hi,
                             "steered_share": steered, "perplexity": ppl,
                             "example": grp["text"].iloc[0][:120]})  # fmt: skip
    t_gen = time.perf_counter() - t0

    # ---- ablation: candidates, selection by effect, then ablation on the report split
    t0 = time.perf_counter()
    cand_layers = [4, 8, 12, 16, 20]
    cands = mean_differences(model, hf, nf, layers=cand_layers)
    tok = model.tokenizer
    enc_ns = [encode_prompt(tok, p) for p in ns]

    @torch.no_grad()
    def last_logprobs(intervention):
        out = []
        ctx = intervention.apply(model) if intervention is not None else torch.no_grad()
        with ctx:
            for e in enc_ns:
                out.append(torch.log_softmax(model(torch.tensor([e]))[0, -1].float(), -1))
        return torch.stack(out)

    base_lp = last_logprobs(None)

    def effect(layer, pos, direction):
        abl = sl.ablation(model, direction)
        add = sl.Intervention([(f"blocks.{layer}.hook_resid_pre", sl.Add(direction))])
        ab = judged(abl, hs, (1.0,))["behaviour"].mean()
        ad = judged(add, ns, (1.0,))["behaviour"].mean()
        lp = last_logprobs(abl)
        kl = float((base_lp.exp() * (base_lp - lp)).sum(-1).mean())
        return {"ablation_score": float(ab), "addition_score": float(ad), "kl": kl}

    ranked = select_by_effect(cands, effect, n_layers=int(model.cfg.n_layers))
    t_select = time.perf_counter() - t0
    best = ranked.iloc[0]
    direction = cands[(int(best.layer), int(best.position))]
    abl = sl.ablation(model, direction)
    ablation_rows = []
    for label, vec in (("unsteered", None), ("ablated", abl)):
        for name, prompts in (("harmful", hr), ("harmless", nr)):
            df = judged(vec, prompts, (1.0,) if vec is not None else (0.0,))
            mean, lo, hi = interval(df["behaviour"])
            ppl = float(np.exp(df["nll"].sum() / max(df["tokens"].sum(), 1)))
            ablation_rows.append({
                "steering": label, "prompts": name, "n": len(df), "judged_refusal": mean,
                "ci_low": lo, "ci_high": hi, "perplexity": ppl,
                "example": df["text"].iloc[0][:120],
            })  # fmt: skip
    raw = {
        "commit": git_rev(), "machine": machine(), "judge_accuracy": judge.accuracy,
        "judge_heldout": judge.n_heldout,
        "condition": {"hook": cond.hook, "threshold": cond.threshold,
                      "threshold_is": cond.threshold_is, "f1_report": found.f1,
                      "f1_select": found.f1_select, "n_report": list(found.n_report)},
        "rows": rows, "ablation_candidates": ranked.to_dict("records"),
        "ablation_choice": {"layer": int(best.layer), "position": int(best.position),
                            "kept": bool(best.kept)},
        "ablation": ablation_rows,
        "seconds": {"search": t_search, "generate": t_gen, "select": t_select,
                    "total": time.perf_counter() - t_all},
    }  # fmt: skip
    OUT.write_text(json.dumps(raw, indent=1, default=float))
    render(raw)


def render(raw) -> None:
    c = raw["condition"]
    rows = [dict(r, judged=f"{r['judged_refusal']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
            for r in raw["rows"]]  # fmt: skip
    abl = [dict(r, judged=f"{r['judged_refusal']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
           for r in raw["ablation"]]  # fmt: skip
    cands = [r for r in raw["ablation_candidates"] if r["kept"] or r.get("why") != "last layers"]
    text = f"""{START}
### Measured on SmolLM2-135M-Instruct

Command: `python bench/refusal_cast.py` (commit {raw["commit"]}, {raw["seconds"]["total"] / 60:.0f}
minutes on {raw["machine"]}). Raw numbers: `docs/data/refusal_cast.json`.

Judge (MiniLM + logistic regression on CAA's refusal answers): held-out accuracy
**{raw["judge_accuracy"]:.2f}** on {raw["judge_heldout"]} pairs.

**Condition** found by `search_condition` over `blocks.0..12.hook_resid_pre`: `{c["hook"]}`,
threshold {c["threshold"]:.4f}, `threshold_is="{c["threshold_is"]}"`; F1 **{c["f1_report"]:.2f}**
on the held-out report split ({c["n_report"][0]} harmful, {c["n_report"][1]} harmless prompts;
{c["f1_select"]:.2f} on the split that chose it).

**Refusal vector** (CAA, layer {LAYER}) added everywhere vs only where the condition holds,
greedy answers ({TOKENS} tokens) to the report split; judged refusal with a 95% bootstrap
interval over prompts; `steered_share` is the share of rows the rule steered:

{md_table(rows, cols=["steering", "multiplier", "prompts", "n", "judged", "steered_share", "perplexity"])}
**Ablation** of the chosen refusal direction (layer {raw["ablation_choice"]["layer"]}, position
{raw["ablation_choice"]["position"]}; passed the filters: {raw["ablation_choice"]["kept"]}) at
every layer (each block's input, attention and MLP outputs):

{md_table(abl, cols=["steering", "prompts", "n", "judged", "perplexity"])}
Candidates (layer, post-instruction position) with their selection-split scores:

{md_table(cands, cols=["layer", "position", "ablation_score", "addition_score", "kl", "kept"])}
{END}"""
    page = PAGE.read_text()
    if START in page:
        head, rest = page.split(START, 1)
        page = head + text + rest.split(END, 1)[1]
    else:
        page = page.rstrip() + "\n\n" + text + "\n"
    PAGE.write_text(page)
    print(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:
        render(json.loads(OUT.read_text()))
    else:
        main()
