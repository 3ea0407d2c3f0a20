"""BiPO speed and memory: steerlens vs a faithful re-implementation of the authors' approach.

Same model (embedded SmolLM2-135M-Instruct, fp32), same 64 pairs of
../shared/data/bipo/power-seeking/train.csv, batch 4, layer 12, same seed, batch order and d
sequence.

(a) authors' approach: a Hugging Face model with the vector added to block L's output by a
    forward hook, a second frozen model copy for the reference, reference log-probs recomputed
    every step, full forward passes over chosen+rejected rows (DPO's concatenated forward).
(b) ``sl.train_bipo``: one model copy through TransformerLens, reference log-probs computed once,
    both answers of a pair scored in one packed row that shares the prompt, only answer
    positions unembedded, and the residual stream below the steered layer computed once per
    pair (``steerlens.methods.prefix``): each step runs blocks L+1..29 only.
(c) ``sl.train_bipo`` with ``cache_mb=0``: the previous release's path, every step a full
    forward (blocks 0..L without gradient).
(floor) the physical floor, measured separately: for the same batches, plain Hugging Face
    blocks L+1..29, the final norm and the unembedding of the answer positions, forward and
    backward to v, from block L's output computed beforehand; nothing else (no hooks, no
    bookkeeping, no optimiser).

Both use AdamW with the cosine schedule of a Hugging Face trainer (0 warm-up steps). Each runs in
its own process (peak RSS is per process). Writes docs/performance.md.

    python bench/bipo_speed.py                # about 7 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    DOCS,
    AuthorsBiPO,
    bipo_schedule,
    git_rev,
    machine,
    md_table,
    peak_rss_mb,
    require_shared,
)

N_PAIRS, BATCH, LAYER, SEED, BETA, LR = 64, 4, 12, 0, 0.1, 1e-2


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _data(n: int = N_PAIRS):
    import steerlens as sl

    path = sl.behaviour_files("power-seeking", require_shared()).train
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sl.load_pairs(path, invalid="skip", duplicates="ignore")[:n]


def run_authors(epochs: int, n_pairs: int = N_PAIRS, dtype: str = "float32") -> dict:
    """(a): HF model + hook on block L, second frozen copy as reference, recomputed per step."""
    from transformers import AutoModelForCausalLM

    import steerlens as sl
    from steerlens.core.encoding import encode_pairs
    from steerlens.core.models import load_hf_from_gguf, smollm2_gguf_path

    pairs = _data(n_pairs)
    policy, tok = load_hf_from_gguf(smollm2_gguf_path(), DTYPES[dtype])
    del AutoModelForCausalLM
    # eager attention, as the TransformerBridge uses, so that both run the same arithmetic
    policy.config._attn_implementation = "eager"
    policy.eval()
    authors = AuthorsBiPO(policy, LAYER, lr=LR, beta=BETA, dtype=DTYPES[dtype],
                          total_steps=math.ceil(len(pairs) / BATCH) * epochs)  # fmt: skip
    enc = encode_pairs(tok, pairs, sl.DEFAULT_SYSTEM_PROMPT)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    losses, epoch_seconds = [], []
    for epoch in bipo_schedule(len(enc), BATCH, epochs, SEED):
        t0 = time.perf_counter()
        for idx, d in epoch:
            losses.append(authors.step(enc, idx, d, pad))
        epoch_seconds.append(time.perf_counter() - t0)
    v = authors.v
    return {
        "impl": "authors",
        "epoch_seconds": epoch_seconds,
        "setup_seconds": 0.0,
        "losses": losses[:5],
        "peak_rss_mb": peak_rss_mb(),
        "norm": float(v.norm()),
    }


def run_steerlens(
    epochs: int, n_pairs: int = N_PAIRS, dtype: str = "float32", cache_mb: float = 1024.0
) -> dict:
    import steerlens as sl

    pairs = _data(n_pairs)
    model = sl.load_model(dtype=DTYPES[dtype])
    losses, stamps = [], []
    cfg = sl.BiPOConfig(
        epochs=epochs,
        batch_size=BATCH,
        lr=LR,
        beta=BETA,
        warmup_steps=0,
        weight_decay=0.0,
        seed=SEED,
        progress=False,
        cache_mb=cache_mb,
    )
    t_start = time.perf_counter()

    def cb(info):
        losses.append(info["loss"])
        stamps.append((info["step"], time.perf_counter()))

    v = sl.train_bipo(model, pairs, layers=LAYER, config=cfg, callback=cb)
    steps = math.ceil(len(pairs) / BATCH)
    # the reference pass runs before the first step: time from start to the end of step 1,
    # minus one typical step time, is the one-time setup
    step_times = [b - a for (_, a), (_, b) in zip(stamps, stamps[1:], strict=False)]
    typical = sorted(step_times)[len(step_times) // 2]
    setup = stamps[0][1] - t_start - typical
    bounds = [t_start + setup] + [stamps[(e + 1) * steps - 1][1] for e in range(epochs)]
    epoch_seconds = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    return {
        "impl": "steerlens" if cache_mb else "steerlens-full",
        "epoch_seconds": epoch_seconds,
        "setup_seconds": setup,
        "losses": losses[:5],
        "peak_rss_mb": peak_rss_mb(),
        "norm": float(v.vectors[f"blocks.{LAYER}.hook_resid_post"].norm()),
    }


def run_floor(epochs: int, n_pairs: int = N_PAIRS, dtype: str = "float32") -> dict:
    """(floor): plain HF blocks L+1.., final norm, unembedding of the answer positions,
    forward + backward to v, per step of the same batches; block L's output precomputed."""
    import steerlens as sl
    from steerlens.core.encoding import encode_pairs
    from steerlens.core.logprobs import pack_pairs, sum_answer_logprobs
    from steerlens.core.models import load_hf_from_gguf, smollm2_gguf_path

    pairs = _data(n_pairs)
    hf, tok = load_hf_from_gguf(smollm2_gguf_path(), DTYPES[dtype])
    hf.config._attn_implementation = "eager"
    hf.eval()
    hf.requires_grad_(False)
    enc = encode_pairs(tok, pairs, sl.DEFAULT_SYSTEM_PROMPT)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    layers = hf.model.layers
    v = torch.zeros(hf.config.hidden_size, dtype=DTYPES[dtype], requires_grad=True)
    prepared = []
    with torch.no_grad():  # block L's output and the rotary tables: outside the timing
        for epoch in bipo_schedule(len(enc), BATCH, epochs, SEED):
            for idx, d in epoch:
                packed = pack_pairs([enc[i] for i in idx], pad, "cpu", DTYPES[dtype])
                h = hf.model.embed_tokens(packed.input_ids)
                pos = hf.model.rotary_emb(h, packed.position_ids)
                kw = {
                    "attention_mask": packed.attention_mask,
                    "position_ids": packed.position_ids,
                    "position_embeddings": pos,
                }
                for layer in layers[: LAYER + 1]:
                    out = layer(h, **kw)
                    h = out[0] if isinstance(out, tuple) else out
                prepared.append((packed, h, kw, d))
    steps = math.ceil(len(enc) / BATCH)
    epoch_seconds = []
    for e in range(-1, epochs):  # e = -1: one untimed warm-up step
        t0 = time.perf_counter()
        for packed, h0, kw, d in prepared[max(e, 0) * steps : (e + 1) * steps or 1]:
            h = h0 + d * v
            for layer in layers[LAYER + 1 :]:
                out = layer(h, **kw)
                h = out[0] if isinstance(out, tuple) else out
            final = hf.model.norm(h)
            width = packed.input_ids.shape[1]
            sel = final[packed.source // width, packed.source % width]
            lp = sum_answer_logprobs(hf.lm_head(sel), packed)
            (d * lp.sum()).backward()
        if e >= 0:
            epoch_seconds.append(time.perf_counter() - t0)
    return {
        "impl": "floor",
        "epoch_seconds": epoch_seconds,
        "setup_seconds": 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }


def overheads() -> dict:
    """Bridge vs plain HF forward+backward (4 x 128 tokens, steered), and warm load time."""
    import transformer_lens.model_bridge  # noqa: F401  (import cost measured separately)

    import steerlens as sl
    from steerlens.core.models import load_hf_from_gguf, smollm2_gguf_path
    from steerlens.steering.hookpoints import SteerHook

    t = time.perf_counter()
    bridge = sl.load_model()
    load = time.perf_counter() - t
    hf, _ = load_hf_from_gguf(smollm2_gguf_path(), torch.float32)
    hf.requires_grad_(False)
    x = torch.randint(100, 40000, (4, 128), generator=torch.Generator().manual_seed(0))
    v = torch.zeros(576, requires_grad=True)
    hf.model.layers[LAYER].register_forward_hook(
        lambda m, a, o: (o[0] + v,) + tuple(o[1:]) if isinstance(o, tuple) else o + v
    )

    def time_it(fn, reps=3):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    def hf_step():
        hf(input_ids=x).logits.float().logsumexp(-1).mean().backward()

    def bridge_step():
        hooks = [(f"blocks.{LAYER}.hook_resid_post", SteerHook(v, 1.0, "all"))]
        bridge.run_with_hooks(x, fwd_hooks=hooks).float().logsumexp(-1).mean().backward()

    def hf_fwd():
        with torch.no_grad():
            hf(input_ids=x)

    def bridge_fwd():
        with torch.no_grad():
            bridge(x)

    return {
        "load_seconds": load,
        "hf_fwd_bwd": time_it(hf_step),
        "bridge_fwd_bwd": time_it(bridge_step),
        "hf_fwd": time_it(hf_fwd),
        "bridge_fwd": time_it(bridge_fwd),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--impl", choices=["authors", "steerlens", "steerlens-full", "floor", "overheads"]
    )
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=N_PAIRS)
    ap.add_argument("--dtype", choices=list(DTYPES), default="float32")
    args = ap.parse_args()
    if args.impl:
        if args.impl == "steerlens-full":
            out = run_steerlens(args.epochs, args.pairs, args.dtype, cache_mb=0.0)
        else:
            fn = {"authors": run_authors, "steerlens": run_steerlens, "floor": run_floor}.get(
                args.impl
            )
            out = fn(args.epochs, args.pairs, args.dtype) if fn else overheads()
        print("RESULT " + json.dumps(out))
        return
    runs = {
        "authors": ["--impl", "authors", "--epochs", str(args.epochs)],
        "steerlens": ["--impl", "steerlens", "--epochs", str(args.epochs)],
        "steerlens-full": ["--impl", "steerlens-full", "--epochs", str(args.epochs)],
        "floor": ["--impl", "floor", "--epochs", str(args.epochs)],
        "overheads": ["--impl", "overheads"],
    }
    results = {}
    for name, argv in runs.items():
        proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[0][7:])
        print(name, results[name])
    write_report(results, args.epochs)


def write_report(r: dict, epochs: int) -> None:
    import pandas as pd

    a, b, o = r["authors"], r["steerlens"], r["overheads"]
    c, f = r["steerlens-full"], r["floor"]
    ea, eb = sum(a["epoch_seconds"]) / epochs, sum(b["epoch_seconds"]) / epochs
    ec, ef = sum(c["epoch_seconds"]) / epochs, sum(f["epoch_seconds"]) / epochs
    diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)]
    diffs_c = [abs(x - y) for x, y in zip(c["losses"], b["losses"], strict=True)]
    rows = [
        ("(a) authors' approach", ea, 0.0, a["peak_rss_mb"]),
        ("(b) sl.train_bipo (cache below layer 12)", eb, b["setup_seconds"], b["peak_rss_mb"]),
        ("(c) sl.train_bipo, cache_mb=0 (full forward)", ec, c["setup_seconds"], c["peak_rss_mb"]),
        ("floor: HF blocks 13-29 + unembed, fwd + bwd", ef, 0.0, f["peak_rss_mb"]),
    ]
    table = pd.DataFrame(
        [
            {
                "implementation": name,
                "s/epoch": sec,
                "vs (a)": ea / sec,
                "one-time setup s": setup,
                "peak RSS MiB": rss,
            }
            for name, sec, setup, rss in rows
        ]
    )
    losses = pd.DataFrame(
        {
            "step": range(1, 6),
            "authors": a["losses"],
            "(b) cached": b["losses"],
            "(c) full forward": c["losses"],
            "abs diff (a)-(b)": diffs,
        }
    )
    summary = (
        f"Speed-up per epoch of (b) over (a): **{ea / eb:.2f}x** (target >= 4x: "
        f"**{'met' if ea / eb >= 4 else 'not met'}**); (c), the previous release's path: "
        f"{ea / ec:.2f}x, so the cache gains {ec / eb:.2f}x. Ratio of (b) to the floor: "
        f"**{eb / ef:.2f}x** the floor's time per epoch. Peak memory ratio (b)/(a): "
        f"**{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}** (target <= 0.6). The one-time setup of "
        "(b) fills the cache and computes the reference log-probs from it (one no-gradient "
        "forward over the training pairs in all); that of (c) is the reference pass."
    )
    over = pd.DataFrame(
        [
            {
                "measurement": "forward+backward, 4 x 128 tokens, steered",
                "plain HF s": o["hf_fwd_bwd"],
                "TransformerBridge s": o["bridge_fwd_bwd"],
                "ratio": o["bridge_fwd_bwd"] / o["hf_fwd_bwd"],
            },
            {
                "measurement": "forward (no grad), 4 x 128 tokens",
                "plain HF s": o["hf_fwd"],
                "TransformerBridge s": o["bridge_fwd"],
                "ratio": o["bridge_fwd"] / o["hf_fwd"],
            },
        ]
    )
    text = f"""# Performance

Command: `python bench/bipo_speed.py --epochs {epochs}` (commit {git_rev()}).
Machine: {machine()}.

## BiPO training: steerlens vs the authors' approach

SmolLM2-135M-Instruct (fp32), the first 64 usable pairs of `bipo/power-seeking/train.csv`,
batch 4, layer 12, lr 1e-2, beta 0.1, seed 0, the same batch order and d sequence in all.
Each implementation runs in its own process, one after the other.

{md_table(table, ".2f")}

{summary}

Losses of the first 5 steps of the timed runs (max abs difference (a)-(b) **{max(diffs):.2e}**,
(b)-(c) **{max(diffs_c):.2e}**; check < 1e-4: **{max(diffs + diffs_c) < 1e-4}**). Step 1 is
log 2 up to rounding: steerlens computes the reference once, in other batches, so z is ~1e-5
instead of exactly 0 there.

{md_table(losses, ".7f")}

## TransformerBridge overhead

{md_table(over, ".3f")}

Warm `sl.load_model()` (dequantised weights cached on disk): {o["load_seconds"]:.2f} s, after
`import transformer_lens.model_bridge` (the import itself takes about 5-7 s in a fresh
interpreter on this machine).
"""
    DOCS.mkdir(exist_ok=True)
    perf = DOCS / "performance.md"
    # keep the CAA section that bench/caa_speed.py writes between its markers
    start, end = "<!-- caa-speed:start -->", "<!-- caa-speed:end -->"
    old = perf.read_text() if perf.exists() else ""
    caa = start + old.split(start, 1)[1].split(end, 1)[0] + end + "\n" if start in old else ""
    # and what other benches appended after it (bench/sweep_scale.py's section)
    later = old.split(end, 1)[1].strip() if end in old else ""
    perf.write_text(
        text
        + WHERE
        + SCALING
        + ("\n" + caa if caa else "")
        + ("\n" + later + "\n" if later else "")
    )
    print(text)


WHERE = """
## Where the time goes, and what is left

Per step, (a) runs the policy forward over 2 x batch rows (chosen and rejected, each with its
own copy of the prompt) with full-vocabulary logits at every position, the same forward again
on the frozen reference copy, and a backward through blocks 13-29 and the unembedding.
(b) removes, in order of the time saved:

* **The reference forward**: computed once before training (the "one-time setup" column),
  from the same model with no hook; no second copy of the weights.
* **The duplicated prompt**: both answers of a pair are scored in ONE packed row
  `[prompt, matching, not_matching]` with a block attention mask (each answer sees the prompt
  and itself, never the other answer) and position ids that restart after the prompt
  (`steerlens.core.logprobs.pack_pairs`). Prompts (system turn + question) are most of the tokens,
  so a step processes about 40% fewer tokens. Whether a model honours the 4-D mask is probed
  once per model; where it does not, steerlens scores separate rows.
* **Full-vocabulary logits**: the final residual is taken at the unembedding's hook point and
  only the positions that score answer tokens are multiplied by `W_U` (49k x 576, about eight
  blocks' worth of work per position), in the forward and the backward pass.
* **The blocks below the steered layer** (`steerlens/prefix.py`): v enters at block 12's
  output, so blocks 0..12 give the same result in every step for a given pair. Their output
  is computed once per pair (no gradient) and kept within `BiPOConfig.cache_mb` (default
  1024 MiB; 64 pairs of SmolLM2 take about 15 MiB in fp32; pairs beyond the budget are
  recomputed in the steps that need them). Each step then runs blocks 13..29 through the
  bridge's block list with the arguments the model's own loop passes (read by a pre-hook on
  `blocks[0]`: only the embedding runs), the final norm and the answer positions'
  unembedding. The bridge's `start_at_layer` could not be used: it still runs the blocks
  below. Whether the short cut reproduces the full forward is probed once per model and
  layer (logits and gradients on a short pair); where it does not, training takes the full
  forward. The reference log-probs are computed from the same cache, so the one-time setup
  is one no-gradient forward over the training pairs.

All are tested against the plain computation (values and gradients, `tests/test_logprobs.py`,
`tests/test_prefix.py`: losses and gradients within 1e-5 in fp32 on the tiny model for one and
several layers, resid_pre/mid/post, the last block, partial caches and resume; on SmolLM2 at
layers 12 and 8+12). The floor row is what no implementation on this model can beat: the
forward and backward of blocks 13..29 and the unembedding alone, in plain Hugging Face code;
the distance from (b) to it is the bridge's hooks and block wrappers, the 4-D mask and rotary
arguments read per step, the AdamW step and the bookkeeping. The TransformerBridge's own
overhead over the plain Hugging Face model is the ratio in the table above (TL 4.3,
transformers 5.23, eager attention in both).
"""

SCALING = """
## Scaling

Measured at 7B on an H100 (random weights of Llama-2-7b-chat's shape):
[Performance at 7B on a GPU](performance_gpu.md).

How the cost of `sl.train_bipo` grows (reasoning from the implementation, checked against the
small-model numbers above):

* **Sequence length T**: each step is one forward and one backward pass over `batch` packed
  rows of length P + A_T + A_O (the prompt once, then both answers). Attention is O(T^2) but at
  these lengths (100-250 tokens) the MLPs dominate, so time is close to linear in T; the
  unembedding grows with the answer tokens only. Activation memory of the backward pass grows
  linearly with T x (n_layers - L), plus the [batch, T, T] block mask.
* **Dataset size N**: time per epoch is linear in N; the one-time reference pass is about one
  third of an epoch (a forward without backward), so it is amortised over the epochs (20 in
  the paper). Memory does not grow with N (only 2 floats of reference log-prob per pair).
* **Layer index L**: each step runs blocks L+1..n forward and backward, so a step costs
  about (n - L - 1) / n of a full step; a later layer trains faster. Blocks 0..L run once per
  pair (the cache) and the cache costs T x d_model activations per pair (7B, bf16, 200
  tokens: 1.6 MiB per pair, 1 GiB for 640 pairs).
* **Model size**: time and memory scale with parameter count. For a 7B model (Llama-2-7b-chat,
  the paper's setting) in bf16 on one 80 GB GPU: weights 13.5 GB, one model copy instead of two
  saves another 13.5 GB, and activations for batch 4 x 2 rows x ~200 tokens with gradient
  checkpoint-free backward through 17 of 32 layers fit in a few GB. Measured on an H100 with a
  7B-shaped model: 0.09 s per step and 15 GiB peak (the authors' way: 0.12 s, 30 GiB), i.e.
  about 15 s per epoch for ~640 pairs.
* **Sharded models** (`device_map="auto"` across GPUs): steerlens keeps the vector on the device
  of the hook's activation (it is cast to that dtype/device inside the hook), so no code
  changes are needed; the pipeline-style execution makes each step about as slow as the sum of
  the shards' work.
"""


if __name__ == "__main__":
    main()
