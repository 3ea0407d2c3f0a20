"""Steered generation: the previous release's path, the batched path, and the Hugging Face floor.

SmolLM2-135M-Instruct (fp32), the power-seeking BiPO vector of docs/vectors (layer 12),
questions from bipo/power-seeking/test_infer.csv, greedy, at most 32 new tokens (stopping at
the end-of-turn token), at 1, 5 and 9 multipliers for 16 and 80 prompts:

* previous: ``sl.generate`` of commit 22d5e52, run from a ``git archive`` of that commit in a
  subprocess: one multiplier at a time, batches of 8 in prompt order, TransformerBridge
  ``generate`` with ``vector.apply``;
* batched: today's ``sl.generate``: every (multiplier, prompt) a row, rows sorted by length in
  batches of up to 64, steered per row, decoded by the model's own ``generate`` on the module
  tree under the bridge;
* floor: a separately loaded plain Hugging Face model (no bridge anywhere), the SAME batches as
  the batched path, ``generate`` with a plain forward hook on block 12 adding each row's
  ``m * v``.

Also ``open_ended_score`` at 5 multipliers on 16 questions, previous vs today, with the same
answers checked. Writes a section of docs/performance.md (between gen-speed markers) and the
raw numbers to docs/data/gen_speed.json (``--render`` rewrites the section from them).

    python bench/gen_speed.py            # about 25 minutes on 2 cores
    python bench/gen_speed.py --quick    # 16 prompts only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import DOCS, ROOT, git_rev, machine, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.core.batching import plan_batches
from steerlens.core.encoding import encode_prompt, end_of_turn_id
from steerlens.core.models import load_hf_from_gguf, smollm2_gguf_path  # noqa: E402

PREVIOUS = "22d5e52"
LAYER = 12
TOKENS = 32
MULTS = {
    1: (2.0,),
    5: (-2.0, -1.0, 0.0, 1.0, 2.0),
    9: (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0),
}
VECTOR = ROOT / "docs" / "vectors" / "power_bipo_L12.safetensors"
START, END = "<!-- gen-speed:start -->", "<!-- gen-speed:end -->"
RAW = DOCS / "data" / "gen_speed.json"

OLD_SCRIPT = r"""
import json, sys, time, torch
import steerlens as sl
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
model = sl.load_model()
v = sl.SteeringVector.load(args["vector"])
prompts = sl.load_prompts(args["prompts"])
out = {}
for n, k in args["cells"]:
    t = time.perf_counter()
    df = sl.generate(model, v, prompts[:n], multipliers=args["mults"][str(k)],
                     max_new_tokens=args["tokens"], progress=False)
    dt = time.perf_counter() - t
    out[f"{n}x{k}"] = {"seconds": dt, "tokens": df["tokens"].map(list).tolist()}
if args["open_ended"]:
    train = sl.load_pairs(args["train"], invalid="skip")
    judge = sl.BehaviourJudge.fit(train)
    t = time.perf_counter()
    df = sl.open_ended_score(model, v, prompts[:16], judge, multipliers=args["mults"]["5"],
                             max_new_tokens=args["tokens"], per_item=True, progress=False)
    out["open_ended"] = {"seconds": time.perf_counter() - t, "text": df["text"].tolist(),
                         "behaviour": df["behaviour"].tolist()}
print("RESULT" + json.dumps(out))
"""


def previous(cells, prompts_csv, train_csv, open_ended: bool) -> dict:
    """Run commit PREVIOUS's sl.generate in a subprocess, from a git archive of that commit."""
    with tempfile.TemporaryDirectory() as tmp:
        arch = subprocess.run(["git", "archive", PREVIOUS, "steerlens"], cwd=ROOT,
                              capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=arch, check=True)
        args = {"threads": torch.get_num_threads(), "vector": str(VECTOR),
                "prompts": str(prompts_csv), "train": str(train_csv), "cells": cells,
                "mults": {str(k): list(v) for k, v in MULTS.items()}, "tokens": TOKENS,
                "open_ended": open_ended}  # fmt: skip
        env = dict(os.environ, PYTHONPATH=tmp)
        res = subprocess.run([sys.executable, "-c", OLD_SCRIPT, json.dumps(args)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def floor(hf, tok, v, prompts, mults) -> tuple[float, list[list[int]]]:
    """Plain HF generate, same batches as sl.generate, a forward hook adding m_b * v."""
    from transformers import GenerationConfig

    eot = end_of_turn_id(tok)
    enc = [encode_prompt(tok, p) for p in prompts]
    jobs = [(m, i) for m in mults for i in range(len(prompts))]
    plan = plan_batches([len(enc[i]) for _, i in jobs], TOKENS)
    out: list[list[int]] = [[] for _ in jobs]
    vec = v.vectors[f"blocks.{LAYER}.hook_resid_post"]
    cfg = GenerationConfig(max_new_tokens=TOKENS, do_sample=False, eos_token_id=eot,
                           pad_token_id=tok.pad_token_id)  # fmt: skip
    t0 = time.perf_counter()
    for idx in plan:
        rows = [enc[jobs[k][1]] for k in idx]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, width - len(r) :] = torch.tensor(r)
            att[j, width - len(r) :] = 1
        delta = torch.tensor([jobs[k][0] for k in idx])[:, None, None] * vec

        def hook(module, args, output, delta=delta):
            if isinstance(output, tuple):
                return (output[0] + delta, *output[1:])
            return output + delta

        h = hf.model.layers[LAYER].register_forward_hook(hook)
        try:
            with torch.no_grad():
                res = hf.generate(input_ids=ids, attention_mask=att, generation_config=cfg)
        finally:
            h.remove()
        for j, k in enumerate(idx):
            new = res[j, width:].tolist()
            out[k] = new[: new.index(eot)] if eot in new else new
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="16 prompts only")
    ap.add_argument("--render", action="store_true", help="rewrite the page from the saved JSON")
    ap.add_argument(
        "--open-ended",
        action="store_true",
        help="measure open_ended_score again (previous and today) into the saved JSON",
    )
    args = ap.parse_args()
    if args.render:
        write(**json.loads(RAW.read_text()))
        return
    if args.open_ended:
        remeasure_open_ended()
        return
    d = require_shared()
    files = sl.behaviour_files("power-seeking", d)
    prompts_csv, train_csv = files.questions, files.train
    sizes = (16,) if args.quick else (16, 80)
    model = sl.load_model()
    v = sl.SteeringVector.load(VECTOR)
    prompts = sl.load_prompts(prompts_csv)
    hf, tok = load_hf_from_gguf(smollm2_gguf_path(), torch.float32)
    hf.eval()
    # previous release: every cell except 80 prompts x 9 multipliers (about 8 minutes alone)
    old_cells = [(n, k) for n in sizes for k in MULTS if not (n == 80 and k == 9)]
    print("previous release ...", flush=True)
    old = previous(old_cells, prompts_csv, train_csv, open_ended=True)
    # warm both paths (the first sl.generate unwraps the module tree and checks it against the
    # bridge once per model; reported separately)
    t0 = time.perf_counter()
    sl.generate(model, v, prompts[:2], multipliers=(1.0,), max_new_tokens=2, progress=False)
    first_call = time.perf_counter() - t0
    floor(hf, tok, v, prompts[:2], (1.0,))
    rows = []
    for n in sizes:
        for k, mults in MULTS.items():
            print(f"{n} prompts x {k} multipliers ...", flush=True)
            t0 = time.perf_counter()
            df = sl.generate(model, v, prompts[:n], multipliers=mults, max_new_tokens=TOKENS,
                             progress=False)  # fmt: skip
            t_new = time.perf_counter() - t0
            new_tokens = df["tokens"].map(list).tolist()
            t_floor, floor_tokens = floor(hf, tok, v, prompts[:n], mults)
            generated = sum(len(t) for t in new_tokens)
            prev = old.get(f"{n}x{k}")
            rows.append({
                "prompts": n, "multipliers": k, "answers": n * k, "new tokens": generated,
                "previous s": prev["seconds"] if prev else None,
                "batched s": t_new, "floor s": t_floor,
                "batched ms/token": 1000 * t_new / generated,
                "floor ms/token": 1000 * t_floor / generated,
                "same as floor": new_tokens == floor_tokens,
                "same as previous": (prev["tokens"] == new_tokens) if prev else None,
            })  # fmt: skip
            print(rows[-1], flush=True)
    t_oe, oe_text = open_ended_today(model, v, prompts, train_csv)
    lens = [len(encode_prompt(model.tokenizer, p)) for p in prompts[: max(sizes)]]
    raw = {"rows": rows, "old": old, "t_oe": t_oe, "oe_text": oe_text,
           "sizes": list(sizes), "lens": lens, "first_call": first_call}  # fmt: skip
    RAW.write_text(json.dumps(raw))
    write(**raw)


def open_ended_today(model, v, prompts, train_csv):
    judge = sl.BehaviourJudge.fit(sl.load_pairs(train_csv, invalid="skip"))
    t0 = time.perf_counter()
    oe = sl.open_ended_score(model, v, prompts[:16], judge, multipliers=MULTS[5],
                             max_new_tokens=TOKENS, per_item=True, progress=False)  # fmt: skip
    return time.perf_counter() - t0, oe["text"].tolist()


def remeasure_open_ended() -> None:
    d = require_shared()
    files = sl.behaviour_files("power-seeking", d)
    prompts_csv, train_csv = files.questions, files.train
    raw = json.loads(RAW.read_text())
    old = previous([], prompts_csv, train_csv, open_ended=True)
    model = sl.load_model()
    v = sl.SteeringVector.load(VECTOR)
    prompts = sl.load_prompts(prompts_csv)
    sl.generate(model, v, prompts[:2], multipliers=(1.0,), max_new_tokens=2, progress=False)
    raw["t_oe"], raw["oe_text"] = open_ended_today(model, v, prompts, train_csv)
    raw["old"]["open_ended"] = old["open_ended"]
    RAW.write_text(json.dumps(raw))
    write(**raw)


def write(rows, old, t_oe, oe_text, sizes, lens, first_call) -> None:
    def f(x, fmt=".1f"):
        return "-" if x is None else format(x, fmt)

    lines = [
        "| prompts | multipliers | answers | previous s | batched s | floor s | "
        "previous / batched | batched / floor | batched ms/token | floor ms/token | "
        "same tokens as floor | same as previous |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        speed = r["previous s"] / r["batched s"] if r["previous s"] else None
        lines.append(
            f"| {r['prompts']} | {r['multipliers']} | {r['answers']} | {f(r['previous s'])} | "
            f"{r['batched s']:.1f} | {r['floor s']:.1f} | {f(speed, '.2f')}x | "
            f"{r['batched s'] / r['floor s']:.2f}x | {r['batched ms/token']:.1f} | "
            f"{r['floor ms/token']:.1f} | {r['same as floor']} | {f(r['same as previous'], '')} |"
        )
    by = {(r["prompts"], r["multipliers"]): r for r in rows}
    worst = max(r["batched s"] / r["floor s"] for r in rows)
    scale = ""
    if 80 in sizes:
        s16, s80 = by[(16, 1)]["batched s"], by[(80, 1)]["batched s"]
        p16 = old.get("16x1", {}).get("seconds")
        p80 = old.get("80x1", {}).get("seconds")
        scale = (
            f"80 prompts cost **{s80 / s16:.2f}x** what 16 cost on the batched path "
            f"(target <= 5.5x; previous release {f(p80 / p16 if p16 and p80 else None, '.2f')}x)."
        )
    same_oe = oe_text == old["open_ended"]["text"]
    text = f"""{START}
## Steered generation: batched grids and the model's own speed

Command: `python bench/gen_speed.py` (commit {git_rev()}).
Machine: {machine()}.

SmolLM2-135M-Instruct (fp32), the power-seeking BiPO vector
`docs/vectors/power_bipo_L12.safetensors`, questions from `bipo/power-seeking/test_infer.csv`,
greedy, at most {TOKENS} new tokens (each answer stops at the end-of-turn token). Multipliers:
1 = (+2), 5 = (-2..+2), 9 = (-4..+4).
*previous*: `sl.generate` of commit {PREVIOUS} (one multiplier at a time, batches of 8 in prompt
order, TransformerBridge `generate` with `apply`), run from a `git archive` of that commit.
*batched*: today's `sl.generate` (every multiplier x prompt a row, rows sorted by length, up to
64 rows a batch, steered per row, the model's own `generate` on the module tree under the
bridge). *floor*: a separately loaded plain Hugging Face model, the same batches, `generate`
with a plain forward hook on block {LAYER} adding each row's m * v. The previous release's
80 x 9 cell was not run (about 8 minutes).

{chr(10).join(lines)}

Batched over floor: at most **{worst:.2f}x** (target <= 1.2x). {scale}
ms/token is wall time over all generated answer tokens. Both paths were warmed up first; the
first `sl.generate` on a model also unwraps its module tree and checks it against the bridge
once (2 prompts x 2 tokens with that check: {first_call:.1f} s).

The native tree runs the model's own attention kernel (SDPA); the bridge switches the wrapped
model to eager attention, which alone cost 6-22% per token in a first run of this bench.

Why a batch of 80 cost 2.7x five batches of 16 before: padding, not rows. These
{len(lens)} questions range from {min(lens)} to {max(lens)} prompt tokens (chat template
included); in prompt order every batch is padded to its longest member. Sorted by length
(what `steerlens.core.batching.plan_batches` does), the 128 shortest questions x 32 tokens took
107 s in batches of 4, 61 s of 8, 41 s of 16, 35 s of 32, 29.7 s of 64 and 29.9 s of 128
on this machine (HF generate, measured while choosing the rule), so the CPU rule is: sort,
then up to 64 rows and 8192 padded tokens per batch. With answers stopping at the end-of-turn
token (`sl.generate`, batch_size 8 / 16 / 32 / 64): 16 questions x 5 multipliers took 37.5 /
25.0 / 23.7 / 24.3 s, 80 questions x 1 multiplier 40.7 / 35.3 / 29.8 / 26.2 s.

What batching buys on 2 CPU cores is small: compute grows with rows, so a 5-multiplier grid in
one batch costs about what five batches cost (the previous release's column), and its batches
of 8 in prompt order through TransformerLens' own `generate` loop were as fast as the HF floor
on the larger grids (0.91x on 80 x 5). What the CPU rule fixes is padding; what the native
tree fixes is the bridge's eager attention and hook overhead. The GPU case the batching is for
(a batch of 80 costing what 16 cost) could not be measured here.

`open_ended_score` at 5 multipliers on 16 questions (generation, unsteered perplexity, judge;
`python bench/gen_speed.py --open-ended` measures this line alone):
previous {old["open_ended"]["seconds"]:.1f} s, today {t_oe:.1f} s
(**{old["open_ended"]["seconds"] / t_oe:.2f}x**); same answers: **{same_oe}**.

No GPU was lent to the session that wrote this section, so the 7B-shape GPU rows
(`bench/gpu_scale.py`) were not measured.
{END}
"""
    perf = DOCS / "performance.md"
    old_text = perf.read_text()
    if START in old_text:
        head, rest = old_text.split(START, 1)
        perf.write_text(head + text.strip() + rest.split(END, 1)[1])
    elif "## Sweeps on Dask" in old_text:
        head, rest = old_text.split("## Sweeps on Dask", 1)
        perf.write_text(head + text.strip() + "\n\n## Sweeps on Dask" + rest)
    else:
        perf.write_text(old_text.rstrip() + "\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
