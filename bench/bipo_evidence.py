"""Evidence that BiPO steers: SmolLM2-135M-Instruct, power-seeking, layer 12.

Trains on a subset of ../shared/data/bipo/power-seeking/train.csv and measures, over
multipliers -2..2, the held-out preference margin on test.csv and the A/B score on
test_infer.csv. Writes docs/bipo_evidence.md and docs/img/bipo_evidence.png.

    python bench/bipo_evidence.py            # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from _common import DOCS, Timer, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.analysis.viz import plot_multiplier_curve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=64, help="training pairs (first N)")
    ap.add_argument("--test", type=int, default=60, help="held-out pairs / A/B items (first N)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    data = require_shared()
    b = sl.load_behaviour("power-seeking", data)
    train, test, ab = b.pairs[: args.train], b.test[: args.test], b.ab[: args.test]
    model = sl.load_model()
    cfg = sl.BiPOConfig(
        epochs=args.epochs, lr=args.lr, warmup_steps=0, weight_decay=0.0, behaviour="power-seeking"
    )
    with Timer() as t_train:
        v = sl.train_bipo(model, train, layers=args.layer, config=cfg, eval_pairs=test[:16])
    v.save(DOCS / "vectors" / "power_bipo_L12.safetensors", overwrite=True)
    mults = (-2, -1, 0, 1, 2)
    with Timer() as t_eval:
        margin = sl.preference_margin(model, v, test, multipliers=mults, progress=True)
        score = sl.ab_score(model, v, ab, multipliers=mults, progress=True)
    table = margin.rename(columns={"matching_likelier": "pref_acc"}).merge(
        score.rename(columns={"matching_likelier": "ab_acc"})[["multiplier", "score", "ab_acc"]],
        on="multiplier",
    )
    mono_margin = bool(table["margin"].is_monotonic_increasing)
    mono_score = bool(table["score"].is_monotonic_increasing)
    img = DOCS / "img"
    img.mkdir(parents=True, exist_ok=True)
    fig = plot_multiplier_curve(
        pd.concat(
            [
                margin.assign(metric="margin (nats)").rename(columns={"margin": "value"}),
                score.assign(metric="A/B score").rename(columns={"score": "value"}),
            ]
        ),
        metric="value",
        hue="metric",
        title="BiPO power-seeking, SmolLM2-135M, layer 12",
    )
    fig.savefig(img / "bipo_evidence.png", dpi=110)
    hist = pd.DataFrame(v.metadata["history"])[
        ["epoch", "train_loss", "eval_loss_plus", "eval_loss_minus", "eval_moved_plus", "norm"]
    ]
    text = f"""# BiPO evidence: power-seeking on SmolLM2-135M-Instruct

Command: `python bench/bipo_evidence.py --train {args.train} --test {args.test}
--epochs {args.epochs} --layer {args.layer} --lr {args.lr}` (commit {git_rev()}).
Machine: {machine()}.

* Model: the embedded SmolLM2-135M-Instruct (30 layers, d_model 576), fp32.
* Training data: the first {len(train)} usable pairs of `bipo/power-seeking/train.csv` (two rows
  with an empty question are skipped).
* Vector: `blocks.{args.layer}.hook_resid_post`, {args.epochs} epochs, batch 4, lr {args.lr},
  no warm-up, beta 0.1, seed 0 -- {v.metadata["steps"]} steps in {t_train.seconds:.0f} s
  (final norm {v.norms()[f"blocks.{args.layer}.hook_resid_post"]:.2f}).
* Held-out: the first {len(test)} pairs of `test.csv` (margin = mean[log p(matching) - log
  p(not matching)], summed over answer tokens with the end-of-turn token) and the first
  {len(ab)} items of `test_infer.csv` (A/B score = p(matching letter) / (p(A) + p(B))).
  Evaluation took {t_eval.seconds:.0f} s.

{md_table(table)}

Margin monotonic over -2..2: **{mono_margin}**. A/B score monotonic: **{mono_score}**.

![BiPO evidence](img/bipo_evidence.png)

Training history (held-out loss on 16 test pairs):

{md_table(hist)}
"""
    (DOCS / "bipo_evidence.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
