"""CAA on A/B items: does the letter-token direction separate held-out items, plain vs balanced?

For each CAA behaviour in ../shared/data/caa: a CAA vector from the first 200 items of
generate_dataset.json at several layers of the embedded SmolLM2-135M-Instruct, plain (the paper's
mean) and letter-balanced (``balance_letters=True``), scored on all 50 items of
test_dataset_ab.json with ``projection_gap`` (plain and letter-balanced). Writes
docs/caa_letters.md.

    python bench/caa_letters.py        # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402
from _common import DOCS, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.analysis import projection_gap  # noqa: E402

warnings.filterwarnings("ignore")

BEHAVIOURS = (
    "corrigible-neutral-HHH",
    "survival-instinct",
    "sycophancy",
    "refusal",
    "hallucination",
)
LAYERS = (6, 12, 18, 24)
N_TRAIN = 200


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default=None, help="e.g. cuda (default: where the weights load)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = require_shared() / "caa"
    model = sl.load_model(device=args.device)
    rows = []
    for b in BEHAVIOURS:
        train = sl.load_pairs(data / f"generate/{b}/generate_dataset.json")[:N_TRAIN]
        test = sl.load_pairs(data / f"test/{b}/test_dataset_ab.json")
        share = lambda items: sum(p.matching_letter == "A" for p in items) / len(items)  # noqa: E731
        for balanced in (False, True):
            v = sl.caa_vector(model, train, layers=list(LAYERS), balance_letters=balanced)
            plain = projection_gap(model, v, test)
            bal = projection_gap(model, v, test, balance_letters=True)
            for (_, p), (_, q) in zip(plain.iterrows(), bal.iterrows(), strict=True):
                rows.append(
                    {
                        "behaviour": b,
                        "layer": int(p.layer),
                        "vector": "balanced" if balanced else "plain",
                        "train A-share": share(train),
                        "test A-share": share(test),
                        "gap": p.gap,
                        "separated": p.separated,
                        "balanced gap": q.gap,
                        "balanced separated": q.separated,
                    }
                )
        print(f"{b}: {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    best = (
        df[df.vector == "balanced"]
        .sort_values("balanced gap", ascending=False)
        .groupby("behaviour", sort=False)
        .head(1)
    )
    cmd = "python bench/caa_letters.py" + (f" --device {args.device}" if args.device else "")
    text = f"""# CAA on A/B items: the answer letter's identity

Command: `{cmd}` (commit {git_rev()}), {(time.perf_counter() - t0) / 60:.0f} minutes.
Machine: {machine()}.

CAA vectors from the first {N_TRAIN} items of each `caa/generate/<behaviour>` set at layers
{", ".join(map(str, LAYERS))} of SmolLM2-135M-Instruct, read at the answer letter; held-out
projection gaps on the 50 items of `caa/test/<behaviour>/test_dataset_ab.json`
(`analysis.projection_gap`): mean projection of matching minus non-matching activations onto the
unit direction, and the fraction of items whose matching side projects higher. "Balanced"
vectors and gaps weight the (A)-matching and (B)-matching items equally
(`balance_letters=True`).

With the plain mean, the fraction "separated" is the same at every layer and equals the share of
test items whose matching letter is the training set's majority letter: the direction mostly
encodes which letter was written. Balanced vectors scored with balanced gaps remove that
identity. Best layer per behaviour (balanced vector, balanced gap):

{md_table(best[["behaviour", "layer", "balanced gap", "balanced separated", "gap", "separated"]])}

All rows:

{md_table(df)}
"""
    (DOCS / "caa_letters.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
