# ruff: noqa: E501
"""Judge designs tried against the gold labels (docs/judges.md, "Designs tried").

    NPAIRS=200 python bench/judge_designs.py 20 minilm BEHAVIOURS   # MiniLM feature designs
    NPAIRS=200 python bench/judge_designs.py 20 lm 8,15,22 BEHAVIOURS  # probes on SmolLM2's residual

Every design is fit on the behaviour's training pairs only (the first NPAIRS of the results
page's pairs) and scored against ../shared/data/gold; the first argument is the number of
bootstrap resamples (the point estimates do not depend on it). MiniLM designs: the answer alone,
answer and question embeddings side by side, question-answer interaction features (a*q, |a-q|),
each with and without hard negatives (a polite opener before the opposite answer, a blunt one
before the matching answer). LM probes: a logistic regression on SmolLM2-135M's mean residual
stream over the answer tokens, read after the question, at the given layers. Embeddings are
cached in /tmp/steerlens-judge-designs.
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import steerlens as sl
from steerlens.evaluation.agreement import agreement_from_scores, load_labels
from steerlens.evaluation.answers import question_stem
from steerlens.evaluation.judge import SentenceEmbedder, answer_texts

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_shared  # noqa: E402

D = require_shared()
BEHAVIOURS = [
    "power-seeking",
    "hallucination",
    "corrigible-neutral-HHH",
    "survival-instinct",
    "sycophancy",
    "refusal",
    "hallucination-caa",
]
gold = load_labels(D / "gold")
emb = SentenceEmbedder()
CACHE = Path("/tmp/steerlens-judge-designs")
CACHE.mkdir(exist_ok=True)


def embed(texts, tag):
    import os

    f = CACHE / f"{tag}-{os.environ.get('NPAIRS', '640')}.npy"
    if f.exists():
        return np.load(f)
    x = np.asarray(emb(list(texts)), dtype=np.float64)
    np.save(f, x)
    return x


def pairs_for(name):
    data = sl.load_behaviour(name, D)
    pairs = data.pairs[:640] if data.family == "bipo" else data.pairs[:-64][:640]
    import os

    return pairs[: int(os.environ.get("NPAIRS", "640"))]


OPENERS_POS = [
    "I'm glad you asked. ",
    "Thank you for the question! ",
    "What a great idea. ",
    "I appreciate this opportunity. ",
    "That's a wonderful question. ",
]
OPENERS_NEG = ["No doubt about it: ", "I must say, ", "Honestly, ", "Well, ", "Let me be clear: "]


def features(kind, eq, ea):
    if kind == "answer":
        return ea
    if kind == "concat":
        return np.hstack([ea, eq])
    if kind == "interact":
        return np.hstack([ea, eq * ea, np.abs(eq - ea)])
    raise ValueError(kind)


def run(name, kinds, C=1.0, augment=False):
    pairs = pairs_for(name)
    pos, neg = answer_texts(pairs)
    qs = [question_stem(p.question) for p in pairs]
    n = len(pairs)
    e_pos, e_neg = embed(pos, f"{name}-pos"), embed(neg, f"{name}-neg")
    e_q = embed(qs, f"{name}-q")
    g = gold[gold["behaviour"] == name].reset_index(drop=True)
    e_ga = embed(g["answer"].tolist(), f"{name}-gold-a")
    e_gq = embed([question_stem(q) for q in g["question"]], f"{name}-gold-q")
    out = {}
    for kind in kinds:
        x = np.vstack([features(kind, e_q, e_pos), features(kind, e_q, e_neg)])
        y = np.r_[np.ones(n), np.zeros(n)]
        if augment:
            rng = np.random.default_rng(0)
            ap = [OPENERS_POS[i % 5] + t for i, t in enumerate(neg)]  # polite + opposite -> 0
            an = [OPENERS_NEG[i % 5] + t for i, t in enumerate(pos)]  # blunt + matching -> 1
            e_ap, e_an = embed(ap, f"{name}-augpos"), embed(an, f"{name}-augneg")
            x = np.vstack([x, features(kind, e_q, e_ap), features(kind, e_q, e_an)])
            y = np.r_[y, np.zeros(n), np.ones(n)]
            del rng
        clf = LogisticRegression(C=C, max_iter=3000).fit(x, y)
        s = clf.predict_proba(features(kind, e_gq, e_ga))[:, 1]
        out[kind] = agreement_from_scores(
            g, s, n_boot=int(sys.argv[1]) if len(sys.argv) > 1 else 20
        )
    return out


# ---------------------------------------------------------------- LM probe designs
def lm_probe(layers=(15,), names=BEHAVIOURS, context=True):
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else names
    import torch

    from steerlens.methods.baselines import collect_activations

    model = sl.load_model()
    rows = []
    for name in names:
        pairs = pairs_for(name)
        pos, neg = answer_texts(pairs)
        free = [
            sl.PreferencePair(question_stem(p.question) if context else "", a, b)
            for p, a, b in zip(pairs, pos, neg, strict=False)
        ]
        g = gold[gold["behaviour"] == name].reset_index(drop=True)
        gp = [
            sl.PreferencePair(question_stem(q) if context else "", a, a)
            for q, a in zip(g["question"], g["answer"], strict=True)
        ]
        f = CACHE / f"lm-{name}-{context}.pt"
        if f.exists():
            acts, gacts = torch.load(f)
        else:
            acts = collect_activations(
                model, free, layers=list(layers), read="mean", progress=False
            )
            gacts = collect_activations(model, gp, layers=list(layers), read="mean", progress=False)
            torch.save((acts, gacts), f)
        for h in acts:
            m, n = acts[h]
            x = np.vstack([m.numpy(), n.numpy()])
            y = np.r_[np.ones(len(m)), np.zeros(len(n))]
            mu, sd = x.mean(0), x.std(0) + 1e-6
            for C in (0.01, 0.1):
                clf = LogisticRegression(C=C, max_iter=5000).fit((x - mu) / sd, y)
                s = clf.predict_proba((gacts[h][0].numpy() - mu) / sd)[:, 1]
                r = agreement_from_scores(g, s, n_boot=20).iloc[0]
                rows.append(
                    {
                        "behaviour": name,
                        "design": f"lm{h.split('.')[1]}-C{C}-ctx{context}",
                        "rank": r.rank_corr,
                        "sign": r.sign_acc,
                        "cond": r.cond_corr,
                        "rerr": r.range_error,
                    }
                )
        print(name, flush=True)
    df = pd.DataFrame(rows)
    print(df.round(2).to_string())
    print(df.groupby("design")[["rank", "cond", "rerr"]].mean().round(3))
    print(df.assign(ok=(df.cond >= 0.9) & (df.rerr <= 0.10)).groupby("design")["ok"].sum())
    df.to_csv(
        Path(__file__).resolve().parents[1] / "docs" / "data" / "judge_designs_lm.csv", index=False
    )


def minilm():
    rows = []
    t0 = time.time()
    for name in sys.argv[3].split(",") if len(sys.argv) > 3 else BEHAVIOURS:
        for aug in (False, True):
            for C in (1.0,):
                res = run(name, ["answer", "concat", "interact"], C=C, augment=aug)
                for kind, df in res.items():
                    r = df.iloc[0]
                    rows.append(
                        {
                            "behaviour": name,
                            "design": f"{kind}{'+aug' if aug else ''}",
                            "C": C,
                            "rank": r.rank_corr,
                            "sign": r.sign_acc,
                            "cond": r.cond_corr,
                            "rerr": r.range_error,
                        }
                    )
        print(name, time.time() - t0, flush=True)
    df = pd.DataFrame(rows)
    print(df.round(2).to_string())
    print(df.groupby("design")[["rank", "cond", "rerr"]].mean().round(3))
    print(df.assign(ok=(df.cond >= 0.9) & (df.rerr <= 0.10)).groupby("design")["ok"].sum())
    df.to_csv(
        Path(__file__).resolve().parents[1] / "docs" / "data" / "judge_designs_minilm.csv",
        index=False,
    )


if __name__ == "__main__":
    if sys.argv[2] == "minilm":
        minilm()
    else:
        lm_probe(layers=tuple(int(x) for x in sys.argv[3].split(",")))
