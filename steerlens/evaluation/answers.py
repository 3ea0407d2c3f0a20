"""How a judge reads answers: the one scoring call (:func:`score_answers`, each answer with its
question, whatever the judge reads), the checks on what a judge returns, and the text helpers
(an A/B question's stem and choices, an answer in context).

Examples:
    >>> score_answers(lambda ts: [len(t) for t in ts], ["ab", "abc"], ["Q?", "Q?"]).tolist()
    [2.0, 3.0]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from steerlens.core.errors import ConfigError

Judge = Callable[[Sequence[str]], Any]


CHOICE = re.compile(r"^\s*\(([A-Z])\)\s*(.*\S)\s*$")


def choice_text(question: str, letter: str) -> str | None:
    """The text of choice ``(letter)`` in an A/B question (``"... (A) yes\\n (B) no"``).

    Examples:
        >>> choice_text("Do it?\\n\\nChoices:\\n (A) Yes, gladly.\\n (B) No.", "A")
        'Yes, gladly.'
    """
    for line in question.splitlines():
        m = CHOICE.match(line)
        if m and m.group(1) == letter:
            return m.group(2)
    return None


def question_stem(question: str) -> str:
    """A question without its A/B choice lines (and the ``Choices:`` line before them): what
    an open-ended question looks like, so a judge that reads questions sees the same kind of
    text when fit on A/B items and when scoring free answers.

    Examples:
        >>> question_stem("Do it?\\n\\nChoices:\\n (A) Yes.\\n (B) No.")
        'Do it?'
    """
    keep = [ln for ln in question.splitlines() if not CHOICE.match(ln)]
    while keep and (not keep[-1].strip() or keep[-1].strip().lower() == "choices:"):
        keep.pop()
    return "\n".join(keep).strip()


def in_context(question: str, answer: str) -> str:
    """The text a context judge scores: the question's stem, a newline, the answer."""
    return f"{question_stem(question)}\n{answer}"


def judged_texts(judge: Any, items: Any) -> list[str]:
    """What ``judge`` reads for each row of a per-answer table (``prompt`` and ``text``
    columns): the answer alone, or ``question + "\\n" + answer`` for a judge with
    ``context=True``.

    Examples:
        >>> import pandas as pd
        >>> items = pd.DataFrame({"prompt": ["Q?"], "text": ["A."]})
        >>> class ContextJudge:
        ...     context = True
        >>> judged_texts(lambda ts: ts, items), judged_texts(ContextJudge(), items)
        (['A.'], ['Q?\\nA.'])
    """
    texts = [str(t) for t in items["text"]]
    if getattr(judge, "context", False):
        return [in_context(str(q), t) for q, t in zip(items["prompt"], texts, strict=True)]
    return texts


def judge_scores(judge: Judge, texts: Sequence[str]) -> np.ndarray:
    """Call any judge (a :class:`BehaviourJudge` or a callable ``texts -> scores``) and check
    that it returned one finite number per text.

    Examples:
        >>> judge_scores(lambda ts: [len(t) for t in ts], ["ab", "abc"]).tolist()
        [2.0, 3.0]
    """
    if not callable(judge):
        raise ConfigError(f"a judge must be callable (texts -> scores), got {type(judge).__name__}")
    scores = np.asarray(judge(list(texts)), dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(texts):
        raise ConfigError(f"the judge returned {scores.shape[0]} scores for {len(texts)} texts")
    if not np.isfinite(scores).all():
        raise ConfigError("the judge returned NaN or inf scores")
    return scores


def score_answers(
    judge: Judge, answers: Sequence[str], questions: Sequence[str] | None = None
) -> np.ndarray:
    """The one call that scores answers, whatever the judge reads: a judge with
    ``reads_questions = True`` and its own ``score_answers(answers, questions)`` (an LLM rubric
    judge) is asked directly; a judge with
    ``context=True`` reads each answer after its question; any other callable reads the answers
    alone. One finite score per answer, checked (:func:`judge_scores`).

    Examples:
        >>> score_answers(lambda ts: [len(t) for t in ts], ["ab", "abc"], ["Q?", "Q?"]).tolist()
        [2.0, 3.0]
    """
    answers = [str(a) for a in answers]
    if questions is not None and len(questions) != len(answers):
        raise ConfigError(f"{len(questions)} questions for {len(answers)} answers")
    own = getattr(judge, "score_answers", None)
    if own is not None and getattr(judge, "reads_questions", False):
        scores = np.asarray(own(answers, questions), dtype=np.float64).reshape(-1)
        return judge_scores(lambda _: scores, answers)
    if getattr(judge, "context", False):
        if questions is None:
            raise ConfigError("this judge reads each answer after its question: pass questions")
        texts = [in_context(str(q), a) for q, a in zip(questions, answers, strict=True)]
        return judge_scores(judge, texts)
    return judge_scores(judge, answers)
