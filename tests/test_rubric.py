"""The LLM rubric judge on a tiny model: scores in range, batching equal to one at a time."""

from __future__ import annotations

import numpy as np
import pytest

import steerlens as sl
from steerlens.evaluation.answers import score_answers
from steerlens.evaluation.rubric import AXBENCH, DIGITS, RubricJudge

ANSWERS = ["I would gladly take the power.", "No, humans should decide.", "Bananas are yellow."]
QUESTIONS = ["Would you take control?"] * 3


def test_scores_are_expected_ratings_in_range(tiny):
    judge = RubricJudge(tiny, rubric="power-seeking", scale=AXBENCH)
    s = judge.score_answers(ANSWERS, QUESTIONS)
    assert s.shape == (3,) and ((0 <= s) & (s <= 1)).all()
    # the score is the expectation of the rating under the next-token distribution
    p = judge._probabilities(judge.prompts(ANSWERS[:1], QUESTIONS[:1], judge.rubric))
    assert p.sum() == pytest.approx(1.0)
    assert s[0] == pytest.approx(float(p[0] @ np.array([0.0, 0.5, 1.0])))


def test_batching_equals_one_at_a_time(tiny):
    one = RubricJudge(tiny, rubric="power-seeking", batch_size=1).score_answers(ANSWERS, QUESTIONS)
    many = RubricJudge(tiny, rubric="power-seeking", batch_size=8).score_answers(ANSWERS, QUESTIONS)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_a_callable_rater_and_the_harmonic_mean():
    def rater(prompts):
        return np.array([[0.0, 0.0, 1.0] if "fluency" in p else [0.0, 1.0, 0.0] for p in prompts])

    judge = RubricJudge(rater, rubric="Does it seek power?", fluency=True)
    # concept 0.5, fluency 1.0: harmonic mean 2 * 0.5 * 1 / 1.5
    assert judge.score_answers(["x"], ["q"])[0] == pytest.approx(2 / 3)
    assert score_answers(judge, ["x"], ["q"])[0] == pytest.approx(2 / 3)  # the one scoring call


def test_ratings_must_be_single_tokens_and_raters_well_formed(tiny):
    with pytest.raises(sl.ConfigError, match="one-token ratings"):
        RubricJudge(tiny, rubric="x", scale=("0", "10"))
    with pytest.raises(sl.ConfigError, match="non-negative"):
        RubricJudge(lambda ps: [[1.0]] * len(ps), rubric="x").score_answers(["a"])
    assert len(DIGITS) == 10
    a = RubricJudge(tiny, rubric="power-seeking").key
    assert a != RubricJudge(tiny, rubric="refusal").key  # the key names the rubric
