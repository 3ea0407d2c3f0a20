"""CAA speed: steerlens vs the ``steering-vectors`` library, on the same Hugging Face weights.

200 A/B pairs of ../shared/data/caa/generate/sycophancy, vectors at layers 6, 9, 12 and 15 of
the embedded SmolLM2-135M-Instruct (fp32, eager attention in both), read at the answer letter
as CAA does, batch 8 in both.

(a) ``steering_vectors.train_steering_vector`` on the plain Hugging Face model: it tokenizes the
    strings, runs the whole model with a hook on each requested decoder layer and reads the last
    token. It is given exactly the text steerlens reads (chat-formatted prompt + answer up to the
    letter), and the script checks that both see the same token ids.
(b) ``sl.caa_vector(..., read="letter")`` through TransformerLens: length-bucketed batches and a
    forward pass that stops after the last layer needed (``stop_at_layer``).

Writes the CAA section of docs/performance.md (between markers). ``steering-vectors`` is a
benchmark-only dependency: ``pip install --no-deps steering-vectors==0.12.2``.

    python bench/caa_speed.py          # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import DOCS, git_rev, machine, md_table, require_shared  # noqa: E402

N_PAIRS, LAYERS, BATCH = 200, (6, 9, 12, 15), 8
START, END = "<!-- caa-speed:start -->", "<!-- caa-speed:end -->"


def texts_for_peer(tok, pairs) -> tuple[list[tuple[str, str]], int]:
    """The exact strings steerlens reads, and how many re-tokenize to other ids."""
    import steerlens as sl
    from steerlens.core.encoding import encode_prompt, encode_text
    from steerlens.methods.baselines import letter_token_index

    samples, mismatched = [], 0
    for p in pairs:
        prompt = encode_prompt(tok, p.question, sl.DEFAULT_SYSTEM_PROMPT)
        both = []
        for answer in (p.matching, p.not_matching):
            ans = encode_text(tok, answer)
            k = letter_token_index(tok, ans, answer.strip().strip("()")[:1])
            ids = prompt + ans[: k + 1]
            text = tok.decode(ids)
            if tok(text, add_special_tokens=False).input_ids != ids:
                mismatched += 1
            both.append(text)
        samples.append((both[0], both[1]))
    return samples, mismatched


def best_of(n: int, fn):
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import steering_vectors as svlib

    import steerlens as sl
    from steerlens.core.models import load_hf_from_gguf, smollm2_gguf_path

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = sl.load_pairs(sl.behaviour_files("sycophancy", require_shared()).train)[:N_PAIRS]
    hf, tok = load_hf_from_gguf(smollm2_gguf_path(), torch.float32)
    hf.config._attn_implementation = "eager"
    hf.eval()
    peer_model = copy.deepcopy(hf)  # the bridge wraps its model's modules in place
    model = sl.load_model()
    samples, mismatched = texts_for_peer(model.tokenizer, pairs)
    peer_tok = copy.deepcopy(tok)
    peer_tok.padding_side = "right"

    def peer():
        return svlib.train_steering_vector(
            peer_model, peer_tok, samples, layers=list(LAYERS), batch_size=BATCH
        )

    def ours():
        return sl.caa_vector(model, pairs, layers=list(LAYERS), read="letter", batch_size=BATCH)

    t_peer, v_peer = best_of(args.repeats, peer)
    t_ours, v_ours = best_of(args.repeats, ours)
    rows = []
    for layer in LAYERS:
        a = v_ours.vectors[f"blocks.{layer}.hook_resid_post"]
        b = v_peer.layer_activations[layer].float().cpu()
        rows.append(
            {
                "layer": layer,
                "norm": float(a.norm()),
                "max abs diff": float((a - b).abs().max()),
                "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            }
        )
    import pandas as pd

    diff = pd.DataFrame(rows)
    worst = float(diff["max abs diff"].max())
    speedup = t_peer / t_ours
    section = f"""{START}
## CAA: steerlens vs steering-vectors

Command: `python bench/caa_speed.py` (commit {git_rev()}). Machine: {machine()}.
{N_PAIRS} A/B pairs of `caa/generate/sycophancy`, layers {", ".join(map(str, LAYERS))}, read at
the answer letter, batch {BATCH}, fp32, eager attention, best of {args.repeats} runs each. Both
see the same token ids ({mismatched} of {2 * N_PAIRS} strings re-tokenized differently).

| implementation | seconds | vs steering-vectors |
|---|---|---|
| steering-vectors 0.12.2 (`train_steering_vector`, plain HF model) | {t_peer:.1f} | 1.00x |
| steerlens (`sl.caa_vector`, TransformerBridge) | {t_ours:.1f} | {speedup:.2f}x |

Target: at least 1.5x faster: **{"met" if speedup >= 1.5 else "not met"}** ({speedup:.2f}x).
Same vector to 1e-5: **{"met" if worst <= 1e-5 else "not met"}** (largest difference
{worst:.2e}).

{md_table(diff, ".3g")}

Where the time goes: steering-vectors runs every layer of the model and pads each batch to its
longest string in input order; steerlens stops after block {max(LAYERS)} of
{model.cfg.n_layers} (`stop_at_layer`) and groups rows of similar length, so it computes about
{(max(LAYERS) + 1) / model.cfg.n_layers:.0%} of the layers on less padding.
{END}"""
    perf = DOCS / "performance.md"
    text = perf.read_text() if perf.exists() else "# Performance\n"
    if START in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    perf.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
