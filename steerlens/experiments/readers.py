"""Readers' verdicts beside the judge's: the same comparisons made on labelled answers.

Where readers labelled some of the answers a comparison is made of (the gold files label the
results cells' answers to 14 questions per behaviour at a few multipliers), the comparison can
be made twice on those questions: once with the judge's scores and once with the readers'
stance (mean label, halved to the judge's 0..1 scale). :func:`reader_verdicts` does both, each
with a paired bootstrap interval over the labelled questions, and says where they disagree.

Examples:
    >>> import pandas as pd
    >>> cond = pd.DataFrame({"method": ["a", "a", "b", "b"] * 2, "item": [0] * 4 + [1] * 4,
    ...                      "multiplier": [-1.0, 1.0] * 4})
    >>> items = cond.assign(dataset="d", behaviour=[0.2, 0.8, 0.4, 0.6] * 2)
    >>> labels = cond.assign(behaviour="d", stance=[-1.0, 1.0, 0.0, 0.0] * 2)
    >>> verdicts = pd.DataFrame({"dataset": ["d"], "a": ["a"], "b": ["b"], "m_a": [1.0],
    ...                          "m_b": [1.0]})
    >>> row = reader_verdicts(items, labels, verdicts).iloc[0]
    >>> round(float(row["judge"]), 2), round(float(row["readers"]), 2), int(row["questions"])
    (0.4, 1.0, 2)
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from steerlens.core.intervals import SEED, paired_difference
from steerlens.experiments.verdicts import split_questions


def same_answers(items: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The labels whose ``answer`` is the text the items hold at the same (``behaviour`` =
    ``dataset``, ``method``, ``item``, ``multiplier``): labels are joined to answers by that
    key, so a cell made again whose answers changed would otherwise lend its old answers'
    labels to new texts. Without ``text`` in the items or ``answer`` in the labels: the labels
    as they are.

    Examples:
        >>> items = pd.DataFrame({"dataset": ["d", "d"], "method": ["a", "a"], "item": [0, 1],
        ...                       "multiplier": [1.0, 1.0], "text": ["yes", "no"]})
        >>> labels = items.rename(columns={"dataset": "behaviour", "text": "answer"})
        >>> len(same_answers(items, labels.assign(answer=["yes", "changed"])))
        1
    """
    if "text" not in items or "answer" not in labels:
        return labels
    key = ["behaviour", "method", "item", "multiplier"]
    texts = items[["dataset", *key[1:], "text"]].rename(columns={"dataset": "behaviour"})
    texts = texts.drop_duplicates(key)
    joined = labels.merge(texts, on=key, how="left")
    keep = (joined["answer"] == joined["text"]).to_numpy()
    return labels[keep]


def _ranges(table: pd.DataFrame, method: str, m: float, value: str) -> pd.Series:
    """Per labelled question (``item``): ``value`` at +m minus at -m for ``method``."""
    sel = table[table["method"] == method]
    hi = sel[sel["multiplier"] == m].groupby("item")[value].mean()
    lo = sel[sel["multiplier"] == -m].groupby("item")[value].mean()
    return (hi - lo).dropna()


def reader_verdicts(
    items: pd.DataFrame, labels: pd.DataFrame, verdicts: pd.DataFrame, *, seed: int = SEED
) -> pd.DataFrame:
    """Each verdict's comparison (``a`` at ``m_a`` minus ``b`` at ``m_b``) on the labelled
    questions, by the judge (``items``' ``behaviour`` scores) and by the readers (``labels``'
    ``stance`` / 2), with intervals and verdicts; ``agree`` says whether the two verdicts are
    the same. A comparison whose multipliers the readers did not label says so. Only labels
    of the very texts judged are used (:func:`same_answers`).

    Args:
        items: judged open-ended answers (``dataset``, ``method``, ``item``, ``multiplier``,
            ``behaviour``).
        labels: labelled answers (``behaviour`` = dataset, ``method``, ``item``,
            ``multiplier``, ``stance``), e.g. :func:`~steerlens.evaluation.agreement.load_labels`.
        verdicts: rows with ``dataset``, ``a``, ``b``, ``m_a``, ``m_b``.
    """
    rows = []
    labels = same_answers(items, labels)
    lab = labels.assign(readers=labels["stance"] / 2)
    for v in verdicts.itertuples(index=False):
        row = _head(v)
        mine = lab[lab["behaviour"] == v.dataset]
        judged = items[items["dataset"] == v.dataset]
        if not (math.isfinite(v.m_a) and math.isfinite(v.m_b)):
            rows.append({**row, "note": "no operating point"})
            continue
        per = {}
        for who, table, value in (("readers", mine, "readers"), ("judge", judged, "behaviour")):
            ra = _ranges(table, v.a, float(v.m_a), value)
            rb = _ranges(table, v.b, float(v.m_b), value)
            per[who] = pd.concat([ra.rename("a"), rb.rename("b")], axis=1, join="inner")
        rows.append(_both(row, per, seed, "the readers labelled no answers at these multipliers"))
    return pd.DataFrame.from_records(rows)


def _head(v: Any) -> dict[str, Any]:
    return {"dataset": v.dataset, "a": v.a, "b": v.b, "m_a": v.m_a, "m_b": v.m_b}


def _both(row: dict[str, Any], per: dict[str, pd.DataFrame], seed: int, note: str
          ) -> dict[str, Any]:  # fmt: skip
    """``row`` with the judge's and the readers' paired difference, interval and verdict on
    the questions both scored (``per``: per who, ranges of ``a`` and ``b`` by question), or
    with ``note`` when fewer than two."""
    qs = per["readers"].index.intersection(per["judge"].index)
    if len(qs) < 2:
        return {**row, "note": note}
    for who in ("judge", "readers"):
        both = per[who].loc[qs]
        iv = paired_difference(both["a"].to_numpy(), both["b"].to_numpy(), seed=seed)
        row.update({who: iv.estimate, f"{who}_low": iv.low, f"{who}_high": iv.high,
                    f"{who}_verdict": iv.verdict})  # fmt: skip
    row["questions"] = len(qs)
    row["agree"] = row["judge_verdict"] == row["readers_verdict"]
    return row


def _ranges_at(table: pd.DataFrame, method: str, m_of: dict[int, float], value: str) -> pd.Series:
    """Per labelled question: ``value`` at +m minus at -m, ``m`` the question's own."""
    sel = table[table["method"] == method]
    mean = sel.groupby(["item", "multiplier"])[value].mean()
    out = {}
    for q, m in m_of.items():
        if math.isfinite(m) and (q, m) in mean.index and (q, -m) in mean.index:
            out[q] = mean[(q, m)] - mean[(q, -m)]
    return pd.Series(out, dtype=float)


def crossfit_reader_verdicts(
    items: pd.DataFrame,
    labels: pd.DataFrame,
    verdicts: pd.DataFrame,
    *,
    split_seed: int = SEED,
    seed: int = SEED,
) -> pd.DataFrame:
    """:func:`reader_verdicts` for cross-fitted verdicts
    (:func:`~steerlens.experiments.crossfit.cross_fitted_verdicts`): each labelled question is
    read at the multiplier chosen on the half it is not in (``m_a1`` / ``m_a2``, ``m_b1`` /
    ``m_b2``), by the judge and by the readers (labels of the very texts judged only)."""
    rows = []
    labels = same_answers(items, labels)
    lab = labels.assign(readers=labels["stance"] / 2)
    for v in verdicts.itertuples(index=False):
        row = _head(v)
        judged = items[items["dataset"] == v.dataset]
        first, second = split_questions(int(judged["item"].max()) + 1, split_seed)
        per = {}
        for who, table, value in (("readers", lab[lab["behaviour"] == v.dataset], "readers"),
                                  ("judge", judged, "behaviour")):  # fmt: skip
            r = [_ranges_at(table, x, {**{int(q): float(m2) for q in first},
                                       **{int(q): float(m1) for q in second}}, value)
                 for x, m1, m2 in ((v.a, v.m_a1, v.m_a2), (v.b, v.m_b1, v.m_b2))]  # fmt: skip
            per[who] = pd.concat([r[0].rename("a"), r[1].rename("b")], axis=1, join="inner")
        note = "the readers labelled too few answers at these multipliers"
        rows.append(_both(row, per, seed, note))
    return pd.DataFrame.from_records(rows)


__all__ = ["crossfit_reader_verdicts", "reader_verdicts", "same_answers"]
