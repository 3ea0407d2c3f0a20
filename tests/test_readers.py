"""Readers' verdicts beside the judge's, single split and cross-fitted, by hand."""

import numpy as np
import pandas as pd
import pytest

from steerlens.experiments.readers import crossfit_reader_verdicts, reader_verdicts
from steerlens.experiments.verdicts import split_questions

N = 10
MULTS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def tables(effect):
    """Judge scores ``0.5 + effect[method] * m`` and reader stance ``2 * effect * m`` (so the
    readers' range, halved, equals the judge's), plus a per-question wobble."""
    rows = []
    for method, k in effect.items():
        for q in range(N):
            for m in MULTS:
                rows.append({"dataset": "d", "method": method, "item": q, "multiplier": m,
                             "behaviour": 0.5 + k * m + 0.01 * q * m})  # fmt: skip
    items = pd.DataFrame(rows)
    labels = items.rename(columns={"dataset": "behaviour_name"}).assign(
        behaviour="d", stance=2 * (items["behaviour"] - 0.5)
    )
    return items, labels


def test_single_split_verdicts_agree_when_readers_see_what_the_judge_sees():
    items, labels = tables({"a": 0.3, "b": 0.1})
    v = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": [1.0], "m_b": [0.5]})
    row = reader_verdicts(items, labels, v).iloc[0]
    # a at 1: range 0.6 + 0.02 q; b at 0.5: range 0.1 + 0.01 q
    want = np.mean([(0.6 + 0.02 * q) - (0.1 + 0.01 * q) for q in range(N)])
    assert row["judge"] == pytest.approx(want) and row["readers"] == pytest.approx(want)
    assert row["agree"] and row["questions"] == N


def test_cross_fitted_readers_read_each_question_at_the_other_halfs_choice():
    items, labels = tables({"a": 0.3, "b": 0.1})
    v = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": ["1 / 0.5"],
                      "m_b": ["0.5 / 0.5"], "m_a1": [1.0], "m_a2": [0.5], "m_b1": [0.5],
                      "m_b2": [0.5]})  # fmt: skip
    row = crossfit_reader_verdicts(items, labels, v).iloc[0]
    first, _ = split_questions(N)
    per_q = []
    for q in range(N):
        m_a = 0.5 if q in first else 1.0  # chosen on the half the question is not in
        per_q.append((2 * m_a * (0.3 + 0.01 * q)) - (2 * 0.5 * (0.1 + 0.01 * q)))
    assert row["judge"] == pytest.approx(np.mean(per_q))
    assert row["readers"] == pytest.approx(np.mean(per_q)) and row["agree"]


def test_unlabelled_multipliers_are_said():
    items, labels = tables({"a": 0.3, "b": 0.1})
    labels = labels[labels["multiplier"].abs() != 1.0]
    v = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": ["1 / 1"],
                      "m_b": ["1 / 1"], "m_a1": [1.0], "m_a2": [1.0], "m_b1": [1.0],
                      "m_b2": [1.0]})  # fmt: skip
    row = crossfit_reader_verdicts(items, labels, v).iloc[0]
    assert "too few" in row["note"]


def test_labels_of_answers_that_changed_are_not_used():
    """Labels join answers by (behaviour, method, item, multiplier); where a cell made again
    holds another text there, that label is not lent to the new answer."""
    items, labels = tables({"a": 0.3, "b": 0.1})
    items = items.assign(text=[f"answer {i}" for i in range(len(items))])
    labels = labels.assign(answer=items["text"])
    v = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": [1.0], "m_b": [0.5]})
    assert reader_verdicts(items, labels, v).iloc[0]["questions"] == N
    changed = (items["method"] == "a") & (items["item"] < 3) & (items["multiplier"] == 1.0)
    items.loc[changed, "text"] = "a new answer from a rebuilt vector"
    row = reader_verdicts(items, labels, v).iloc[0]
    assert row["questions"] == N - 3  # the judge and the readers both lose those questions
    want = np.mean([(0.6 + 0.02 * q) - (0.1 + 0.01 * q) for q in range(3, N)])
    assert row["readers"] == pytest.approx(want) and row["judge"] == pytest.approx(want)
    cf = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": ["1 / 1"],
                       "m_b": ["0.5 / 0.5"], "m_a1": [1.0], "m_a2": [1.0], "m_b1": [0.5],
                       "m_b2": [0.5]})  # fmt: skip
    assert crossfit_reader_verdicts(items, labels, cf).iloc[0]["questions"] == N - 3
