"""BiPO vs CAA on the embedded model: A/B score, preference margin, range, utility, composition.

Behaviours: power-seeking and hallucination (../shared/data/bipo, free-text pairs) and
corrigible-neutral-HHH, survival-instinct and sycophancy (../shared/data/caa, A/B items). For
each: a BiPO and a CAA vector at the same layer on the same training pairs, scored at
multipliers -2..2 (A/B score on the A/B test items, preference margin on free-text test pairs),
steering range score(+2) - score(-2), MMLU A/B accuracy and KL on neutral text at -1, 0, +1, a
CAA layer sweep, and the composition v_power + v_hallucination. Writes docs/results_ab.md and
plots in docs/img/.

    python bench/steering_quality.py               # about 45 minutes on 2 CPU cores
    python bench/steering_quality.py --quick       # a smoke run with tiny subsets
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _common import DOCS, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens import viz  # noqa: E402

warnings.filterwarnings("ignore")


def load(args):
    d = require_shared()
    out = {}
    for b in ("power-seeking", "hallucination", "corrigible-neutral-HHH", "survival-instinct",
              "sycophancy"):  # fmt: skip
        data = sl.load_behaviour(b, d)
        out[b] = {
            "train": data.pairs[: args.train],
            "ab": data.ab[: args.test],
            "margin": data.test[: args.test] if data.family == "bipo" else None,
        }
    mmlu = sl.load_pairs(d / "caa/test/mmlu/mmlu.json")[: args.mmlu]
    return out, mmlu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--mmlu", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--sweep-layers", default="6,9,12,15,18")
    ap.add_argument("--bipo-sweep-layers", default="6,12,18")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None, help="e.g. cuda (default: where the weights load)")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.mmlu, args.epochs = 8, 6, 6, 1
        args.sweep_layers = args.bipo_sweep_layers = "9,12"
    t_all = time.perf_counter()
    model = sl.load_model(device=args.device)
    data, mmlu = load(args)
    cfg = sl.BiPOConfig(
        epochs=args.epochs, lr=1e-2, warmup_steps=0, weight_decay=0.0, progress=False
    )
    mults = (-2, -1, 0, 1, 2)
    rows, curves, vectors, utility, sweeps = [], [], {}, [], []
    for b, sets in data.items():
        t0 = time.perf_counter()
        vb = sl.train_bipo(model, sets["train"], layers=args.layer, config=cfg)
        vc = sl.caa_vector(model, sets["train"], layers=args.layer)
        hook = f"blocks.{args.layer}.hook_resid_post"
        # BiPO's direction at CAA's norm: compares directions, not step counts
        vb_eq = vb.normalized() * vc.norms()[hook]
        vectors[b] = {"bipo": vb, "caa": vc}
        methods = (("bipo", vb), ("caa", vc), ("bipo@caa-norm", vb_eq))
        for method, v in methods:
            ab = sl.ab_score(model, v, sets["ab"], multipliers=mults)
            rec = {
                "behaviour": b,
                "method": method,
                "norm": v.norms()[hook],
            }
            for _, r in ab.iterrows():
                rec[f"ab@{r.multiplier:+g}"] = r.score
                curves.append(
                    {"behaviour": b, "method": method, "multiplier": r.multiplier, "score": r.score}
                )
            rec["range"] = rec["ab@+2"] - rec["ab@-2"]
            if sets["margin"]:
                mg = sl.preference_margin(model, v, sets["margin"], multipliers=(-2, 0, 2))
                rec["margin@-2"], rec["margin@0"], rec["margin@+2"] = mg.margin.tolist()
            rows.append(rec)
            if method == "bipo@caa-norm":  # utility is measured for the two methods as trained
                continue
            mm = sl.ab_score(model, v, mmlu, multipliers=(-1, 0, 1))
            kl = sl.kl_divergence(model, v, multipliers=(-1, 1))
            print(f"  {b} {method}: {time.perf_counter() - t0:.0f} s", flush=True)
            utility.append(
                {
                    "behaviour": b,
                    "method": method,
                    "mmlu@-1": mm.matching_likelier[0],
                    "mmlu@0": mm.matching_likelier[1],
                    "mmlu@+1": mm.matching_likelier[2],
                    "kl@-1": kl.kl[0],
                    "kl@+1": kl.kl[1],
                }
            )
        layers = [int(x) for x in args.sweep_layers.split(",")]
        bipo_layers = [int(x) for x in args.bipo_sweep_layers.split(",")]
        picked = {"behaviour": b}
        sweep_cfg = sl.BiPOConfig(
            epochs=max(1, args.epochs - 1),
            lr=1e-2,
            warmup_steps=0,
            weight_decay=0.0,
            progress=False,
        )
        for method in ("caa", "bipo"):
            sw = sl.sweep_layers(
                model,
                sets["train"],
                sets["ab"],
                layers=layers if method == "caa" else bipo_layers,
                method=method,
                multipliers=(-2, 2),
                config=sweep_cfg,
                metric="ab",
                progress=False,
            )
            print(f"  {b} {method} sweep: {time.perf_counter() - t0:.0f} s", flush=True)
            sw = sw.pivot(index="layer", columns="multiplier", values="score")
            ranges = sw[2.0] - sw[-2.0]
            picked[f"{method} best layer"] = int(ranges.idxmax())
            picked[f"{method} best range"] = float(ranges.max())
            picked[f"{method} range @L{args.layer}"] = float(ranges.get(args.layer, float("nan")))
        sweeps.append(picked)
        print(f"{b}: {time.perf_counter() - t0:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    util = pd.DataFrame(utility)
    sweep_df = pd.DataFrame(sweeps)
    img = DOCS / "img"
    img.mkdir(parents=True, exist_ok=True)
    curves_df = pd.DataFrame(curves)
    for b in data:
        fig = viz.plot_multiplier_curve(
            curves_df[curves_df.behaviour == b], "score", hue="method", title=f"{b}: A/B score"
        )
        fig.savefig(img / f"quality_{b}.png", dpi=100)

    # composition: v_power + v_hallucination steers both (paper Table 6 pattern)
    comp = []
    vp, vh = vectors["power-seeking"]["bipo"], vectors["hallucination"]["bipo"]
    for name, v in (("power", vp), ("hallucination", vh), ("power + hallucination", vp + vh)):
        for b in ("power-seeking", "hallucination"):
            s = sl.ab_score(model, v, data[b]["ab"], multipliers=(0, 1))
            mg = sl.preference_margin(model, v, data[b]["margin"], multipliers=(0, 1))
            comp.append(
                {
                    "vector": name,
                    "behaviour": b,
                    "ab@0": s.score[0],
                    "ab@+1": s.score[1],
                    "ab shift": s.score[1] - s.score[0],
                    "margin@0": mg.margin[0],
                    "margin@+1": mg.margin[1],
                    "margin shift": mg.margin[1] - mg.margin[0],
                }
            )
    comp_df = pd.DataFrame(comp)
    raw = DOCS / "data"
    raw.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    tables = {"range": table, "utility": util, "sweep": sweep_df, "composition": comp_df}
    for name, df in tables.items():
        df.to_csv(raw / f"quality_{name}{suffix}.csv", index=False)
    out = Path(__file__).resolve().parents[1] / "out" / f"quality{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    for b, vs in vectors.items():
        for method, v in vs.items():
            v.save(out / f"{b}_{method}_L{args.layer}.safetensors", overwrite=True)

    def rng(b: str, method: str) -> float:
        return float(table[(table.behaviour == b) & (table.method == method)]["range"].iloc[0])

    wins = sum(rng(b, "bipo") >= rng(b, "caa") for b in data)
    wins_eq = sum(rng(b, "bipo@caa-norm") >= rng(b, "caa") for b in data)
    sweep_wins = int((sweep_df["bipo best range"] >= sweep_df["caa best range"]).sum())
    base = util["mmlu@0"].iloc[0]
    drift = (util[["mmlu@-1", "mmlu@+1"]] - base).abs().max(axis=1)
    mmlu_ok = {m: bool((drift[util.method == m] <= 0.03 + 1e-9).all()) for m in ("bipo", "caa")}
    changes = (util[["mmlu@-1", "mmlu@+1"]] - base).abs()
    drift_mean = {m: float(changes[util.method == m].to_numpy().mean()) for m in ("bipo", "caa")}
    kls = util[["kl@-1", "kl@+1"]]
    kl_mean = {m: float(kls[util.method == m].to_numpy().mean()) for m in ("bipo", "caa")}
    se = (base * (1 - base) / len(mmlu)) ** 0.5
    comp_idx = comp_df.set_index(["vector", "behaviour"])["margin shift"]
    minutes = (time.perf_counter() - t_all) / 60
    cmd = " ".join(["python bench/steering_quality.py", *sys.argv[1:]])
    gpu = f"; model on {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    text = f"""# Results: BiPO vs CAA on SmolLM2-135M-Instruct

Command: `{cmd}` (commit {git_rev()}), {minutes:.0f} minutes.
Machine: {machine()}{gpu}.

Settings: layer {args.layer} (`blocks.{args.layer}.hook_resid_post`), the first {args.train}
training pairs of each behaviour for both methods; BiPO {args.epochs} epochs, batch 4, lr 1e-2,
beta 0.1, no warm-up; CAA at the answer letter (A/B data) or the mean over answer tokens
(free-text data). A/B score = p(matching letter) / (p(matching) + p(other)) on the first
{args.test} A/B test items (`test_infer.csv` for the BiPO behaviours). Margin = mean[log
p(matching) - log p(not matching)] on the first {args.test} free-text test pairs. MMLU: the first
{args.mmlu} items of `caa/test/mmlu/mmlu.json`. KL: mean KL(p_0 || p_steered) per token on 8
neutral sentences. Vectors are applied at every position (BiPO's convention) for both methods.

## Steering range

{md_table(table)}

BiPO's range (score(+2) - score(-2)) is at least CAA's on **{wins} of {len(data)}** behaviours
as trained, and on **{wins_eq} of {len(data)}** with BiPO's direction rescaled to CAA's norm
(`bipo@caa-norm`: the comparison of directions; a trained BiPO vector's norm depends on the
number of steps and the learning rate, CAA's on the model's activation scale).

## Utility

{md_table(util)}

MMLU within 3 points of the unsteered model at +-1: BiPO vectors **{mmlu_ok["bipo"]}**,
CAA vectors **{mmlu_ok["caa"]}**
(unsteered accuracy {base:.3f} on {len(mmlu)} items). This model answers MMLU's A/B items at
chance level, and with {len(mmlu)} items one accuracy has a standard error of
{se:.1%}, so a 3-point bound cannot be resolved here: the mean absolute change at +-1 is
{drift_mean["bipo"]:.1%} for BiPO and {drift_mean["caa"]:.1%} for CAA. The KL divergence on
neutral text is the sharper utility measure: at +-1 it averages {kl_mean["bipo"]:.4f} nats per
token for BiPO vectors and {kl_mean["caa"]:.4f} for CAA vectors.

## Layer sweep (A/B score range at +-2)

Each method's vector trained at each layer (CAA at layers {args.sweep_layers}; BiPO at layers
{args.bipo_sweep_layers} with 1 epoch, to bound the run time), and the layer with the widest
range:

{md_table(sweep_df)}

BiPO's best-layer range is at least CAA's best-layer range on **{sweep_wins} of {len(data)}**
behaviours.

## Composition

BiPO vectors trained separately for power-seeking and hallucination, applied alone and summed,
at multiplier +1; shifts relative to the unsteered model (A/B score on the A/B items,
preference margin in nats on the free-text test pairs).

{md_table(comp_df)}

v_power + v_hallucination moves the power-seeking margin by
{comp_idx[("power + hallucination", "power-seeking")]:+.2f} nats (v_power alone
{comp_idx[("power", "power-seeking")]:+.2f}) and the hallucination margin by
{comp_idx[("power + hallucination", "hallucination")]:+.2f} nats (v_hallucination alone
{comp_idx[("hallucination", "hallucination")]:+.2f}).

## Reading the numbers honestly

* SmolLM2-135M barely follows the A/B format: its A/B scores sit near 0.5 and letter-token
  activations are dominated by the letter's identity, so A/B-based numbers are small for both
  methods. The free-text margin is the more sensitive measure on this model.
* Where CAA's range is larger than BiPO's, it is listed above as measured; the paper's claim
  (a wider range for BiPO) was made on 7B chat models.
* On CAA's A/B items the answer letter's identity dominates this model's letter-token
  activations; see [CAA on A/B items](caa_letters.md) for letter-balanced CAA and which
  behaviours separate. BiPO's own evidence on power-seeking (margin and A/B score at -2..2) is
  in [BiPO evidence](bipo_evidence.md).
"""
    for b in data:
        text += f"\n![{b}](img/quality_{b}.png)\n"
    (DOCS / f"results{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
