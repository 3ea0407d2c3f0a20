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
from steerlens.analysis.geometry import projection_gap  # noqa: E402

warnings.filterwarnings("ignore")
DATA = DOCS / "data"

BEHAVIOURS = (
    "corrigible-neutral-HHH",
    "survival-instinct",
    "sycophancy",
    "refusal",
    "hallucination-caa",
)
LAYERS = (6, 12, 18, 24)
N_TRAIN = 200


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default=None, help="e.g. cuda (default: where the weights load)")
    ap.add_argument("--render", metavar="HEADER", help="only re-render docs/data/caa_letters.csv")
    args = ap.parse_args()
    if args.render:
        command, where = args.render.split("|", 1)
        (DOCS / "caa_letters.md").write_text(
            render(pd.read_csv(DATA / "caa_letters.csv"), command, where)
        )
        return
    t0 = time.perf_counter()
    data = require_shared()
    model = sl.load_model(device=args.device)
    rows = []
    for b in BEHAVIOURS:
        behaviour = sl.load_behaviour(b, data)
        train, test = behaviour.pairs[:N_TRAIN], behaviour.ab
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
    DATA.mkdir(parents=True, exist_ok=True)
    df.to_csv(DATA / "caa_letters.csv", index=False)
    cmd = "python bench/caa_letters.py" + (f" --device {args.device}" if args.device else "")
    minutes = (time.perf_counter() - t0) / 60
    text = render(df, f"`{cmd}` (commit {git_rev()}), {minutes:.0f} minutes", machine())
    (DOCS / "caa_letters.md").write_text(text)
    print(text)


def render(df: pd.DataFrame, command: str, where: str) -> str:
    """The Markdown page for a table of rows as ``main`` collects them."""
    balanced = df[df.vector == "balanced"].sort_values(
        ["balanced separated", "balanced gap"], ascending=False
    )
    best = balanced.groupby("behaviour", sort=False).head(1)
    plain = df[df.vector == "plain"].groupby("behaviour")["separated"]
    constant = bool((plain.max() - plain.min()).max() < 1e-9)
    cols = ["behaviour", "layer", "balanced separated", "balanced gap", "separated", "gap"]
    same = "the same at every layer" if constant else "nearly the same at every layer"
    ok = (best["balanced gap"] > 0) & (best["balanced separated"] > 0.5)
    yes, no = ", ".join(best[ok].behaviour), ", ".join(best[~ok].behaviour) or "none"
    return f"""# CAA on A/B items: the answer letter's identity

Command: {command}.
Machine: {where}.

CAA vectors from the first {N_TRAIN} items of each `caa/generate/<behaviour>` set at layers
{", ".join(map(str, sorted(df.layer.unique())))} of SmolLM2-135M-Instruct, read at the answer
letter; held-out projection gaps on the 50 items of
`caa/test/<behaviour>/test_dataset_ab.json` (`analysis.projection_gap`): mean projection of
matching minus non-matching activations onto the unit direction, and the fraction of items
whose matching side projects higher. "Balanced" vectors and gaps weight the (A)-matching and
(B)-matching items equally (`balance_letters=True`).

With the plain mean the fraction "separated" is {same} for each
behaviour: it follows the share of test items whose matching letter is the training set's
majority letter, because the direction mostly encodes which letter was written. A balanced
vector scored with the balanced gap removes that identity; the gap grows with the residual
stream's scale in later layers, so the best layer below is chosen by the balanced fraction
separated (then the gap). Balanced vector, best layer per behaviour:

{md_table(best[cols])}

Held-out A/B items separate (balanced gap > 0 and more than half of the items) for {yes};
not for {no}.
The test `tests/test_baselines.py::test_letter_balanced_caa_separates_heldout_ab_items`
asserts this at layer 18 for corrigible-neutral-HHH and hallucination.

All rows:

{md_table(df)}
"""


if __name__ == "__main__":
    main()
