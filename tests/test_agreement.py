"""Agreement of a judge with readers: every statistic against an independent computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import steerlens as sl
from steerlens.evaluation.agreement import (
    GOLD_RANGES,
    agreement_from_scores,
    export_for_labelling,
    judge_agreement,
    load_labels,
    read_labels,
)

CONDITIONS = [("bipo-full", m) for m in (-1, -0.5, 0.5, 1)] + [
    ("caa", m) for m in (-1, -0.5, 0, 0.5, 1)
] + [("prompt", -1), ("prompt", 1)]  # fmt: skip


def synthetic(n_questions=40, noise=0.5, seed=0):
    """Gold-shaped labels whose stance follows a latent score through a known link."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_questions):
        for method, m in CONDITIONS:
            latent = 0.8 * m + rng.normal(0, noise)
            stance = float(np.clip(np.round(latent), -1, 1))
            rows.append({"behaviour": "b", "question": f"q{q}", "answer": f"a{q}{method}{m}",
                         "method": method, "multiplier": float(m), "stance": stance,
                         "fluency": 2.0, "latent": latent})  # fmt: skip
    return pd.DataFrame(rows)


def test_statistics_match_an_independent_computation():
    labels = synthetic()
    scores = 1 / (1 + np.exp(-labels["latent"].to_numpy()))
    row = agreement_from_scores(labels, scores, n_boot=50).iloc[0]
    rho = stats.spearmanr(scores, labels["stance"]).statistic
    assert row["rank_corr"] == pytest.approx(rho, abs=1e-12)
    cond = labels.assign(s=scores).groupby(["method", "multiplier"])[["s", "stance"]].mean()
    assert row["cond_corr"] == pytest.approx(stats.pearsonr(cond["s"], cond["stance"])[0])
    signed = labels["stance"] != 0
    hit = (scores[signed] > 0.5) == (labels["stance"][signed] > 0)
    assert row["sign_acc"] == pytest.approx(hit.mean())
    errs = []
    for method, m in GOLD_RANGES:
        hi, lo = cond.loc[(method, m)], cond.loc[(method, -m)]
        errs.append(abs((hi["s"] - lo["s"]) - (hi["stance"] - lo["stance"]) / 2))
    assert row["range_error"] == pytest.approx(np.mean(errs))
    for stat in ("rank_corr", "cond_corr", "sign_acc", "range_error"):
        assert row[f"{stat}_low"] <= row[stat] <= row[f"{stat}_high"]


def test_a_known_correlation_is_recovered_with_an_interval_that_covers_it():
    """Scores built to have a population rank correlation of about 0.6 with the latent stance
    (plus label rounding): the estimate lands near the large-sample value and its interval
    covers that value."""
    big = synthetic(n_questions=400, seed=1)
    rng = np.random.default_rng(2)
    scores = big["latent"].to_numpy() + rng.normal(0, 1.2, len(big))
    truth = stats.spearmanr(scores, big["stance"]).statistic  # large-sample value
    small = synthetic(n_questions=40, seed=3)
    s_small = small["latent"].to_numpy() + np.random.default_rng(4).normal(0, 1.2, len(small))
    row = agreement_from_scores(small, s_small, n_boot=300).iloc[0]
    assert abs(row["rank_corr"] - truth) < 0.15
    assert row["rank_corr_low"] <= truth <= row["rank_corr_high"]


def test_a_judge_at_chance_has_an_interval_around_zero():
    labels = synthetic(seed=5)
    noise = np.random.default_rng(6).random(len(labels))
    row = agreement_from_scores(labels, noise, n_boot=200).iloc[0]
    assert row["rank_corr_low"] < 0 < row["rank_corr_high"]
    assert row["range_error"] > 0.15  # the real ranges are large, a random judge's are ~0


def test_judge_agreement_scores_with_questions_for_a_context_judge():
    labels = synthetic(n_questions=6)
    seen = []

    def judge(texts):
        seen.extend(texts)
        return [0.5] * len(texts)

    judge.context = True
    out = judge_agreement(judge, labels, n_boot=10)
    assert seen[0].startswith("q0\n") and len(out) == 1 and out["n"].iloc[0] == len(labels)


def test_gold_files_load(shared_data):
    labels = load_labels(shared_data / "gold")
    assert len(labels) == 1078 and labels["behaviour"].nunique() == 7
    assert labels["stance"].between(-1, 1).all() and labels["fluency"].between(0, 2).all()


def test_labelling_round_trip(tmp_path):
    items = pd.DataFrame({"behaviour": "b", "prompt": ["Q1?", "Q2?", "Q3?"],
                          "text": ["yes", "no", "maybe"], "method": "caa",
                          "multiplier": [1.0, -1.0, 0.0]})  # fmt: skip
    sheet, key = export_for_labelling(items, tmp_path / "sheet.csv", seed=0)
    blind = pd.read_csv(sheet)
    assert list(blind.columns) == ["id", "question", "answer", "stance", "fluency"]
    assert "multiplier" not in blind and "method" not in blind  # readers see no condition
    with pytest.raises(sl.DataError, match="exists"):
        export_for_labelling(items, tmp_path / "sheet.csv")
    a = blind.assign(stance=[1, -1, 0], fluency=2)
    b = blind.assign(stance=[1, 0, 0], fluency=1)
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    labels = read_labels([tmp_path / "a.csv", tmp_path / "b.csv"], key)
    got = labels.set_index("answer")
    truth = dict(zip(blind["answer"], (a["stance"] + b["stance"]) / 2, strict=True))
    assert {k: got.loc[k, "stance"] for k in truth} == truth
    assert set(got["multiplier"]) == {1.0, -1.0, 0.0} and (got["fluency"] == 1.5).all()
    a.assign(stance=[3, 0, 0]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(sl.DataError, match=r"bad.csv: line 2: field 'stance'"):
        read_labels(tmp_path / "bad.csv", key)
