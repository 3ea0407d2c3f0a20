from __future__ import annotations

import numpy as np
import pytest
import torch

import steerlens as sl
from steerlens.core.errors import ConfigError, DataError
from steerlens.evaluation.answers import choice_text, judge_scores
from steerlens.evaluation.judge import SentenceEmbedder, answer_texts


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()


def test_embedder_matches_unbatched_mean_pooling(embedder, monkeypatch):
    """Batched, padded embeddings equal an independent one-text-at-a-time computation:
    mean of the last hidden states over the text's tokens, L2-normalised, in the input's order
    (batches of two, so texts batched longest first come back where they were)."""
    monkeypatch.setattr(embedder, "batch_size", 2)
    texts = ["I want more power.", "No thanks, I am content with what I have right now.", "Hi",
             "Give me the keys.", "Perhaps, but only if the board agrees to it first."]  # fmt: skip
    got = embedder(texts)
    assert got.shape == (5, 384)
    for i, t in enumerate(texts):
        enc = embedder.tokenizer(t, return_tensors="pt")
        with torch.no_grad():
            h = embedder.model(**enc).last_hidden_state[0]
        ref = h.mean(0) / h.mean(0).norm()
        assert np.allclose(got[i], ref.numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_choice_texts_for_ab_items():
    q = "Shall we?\n\nChoices:\n (A) Yes, let's go.\n (B) No, stay."
    assert choice_text(q, "B") == "No, stay."
    pos, neg = answer_texts([sl.PreferencePair(q, "(B)", "(A)")])
    assert (pos, neg) == (["No, stay."], ["Yes, let's go."])
    with pytest.raises(DataError, match=r"pairs\[0\].*choice lines"):
        answer_texts([sl.PreferencePair("Shall we?", "(A)", "(B)")])


def test_fit_holds_out_by_pair_and_scores(embedder):
    pairs = sl.load_pairs(sl.demo_data_path("train"))
    judge = sl.BehaviourJudge.fit(pairs, embedder=embedder, heldout=0.25, seed=1)
    assert judge.n_heldout == round(0.25 * len(pairs))
    assert judge.n_train + judge.n_heldout == len(pairs)
    assert 0.5 <= judge.accuracy <= 1.0
    p = judge.score([pairs[0].matching, pairs[0].not_matching])
    assert p.shape == (2,) and ((0 <= p) & (p <= 1)).all()
    assert "held-out" in repr(judge)
    with pytest.raises(ConfigError, match="list of texts"):
        judge.score("one string")
    with pytest.raises(DataError, match="at least 2"):
        sl.BehaviourJudge.fit(pairs[:1], embedder=embedder)


def test_any_callable_is_a_judge_and_is_checked():
    assert judge_scores(lambda ts: [1] * len(ts), ["a", "b"]).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="2 texts"):
        judge_scores(lambda ts: [1.0], ["a", "b"])
    with pytest.raises(ConfigError, match="NaN"):
        judge_scores(lambda ts: [float("nan")] * len(ts), ["a"])
    with pytest.raises(ConfigError, match="callable"):
        judge_scores("not a judge", ["a"])  # type: ignore[arg-type]


def test_missing_embedder_folder_is_a_clear_error(tmp_path):
    with pytest.raises(sl.ModelLoadError, match="could not load the embedder"):
        SentenceEmbedder(tmp_path)


@pytest.mark.slow
def test_judge_heldout_accuracy_real_data(shared_data, embedder, power_judge):
    hall = sl.load_pairs(shared_data / "bipo/hallucination/train.csv", invalid="skip")[:600]
    for judge in (power_judge, sl.BehaviourJudge.fit(hall, embedder=embedder)):
        assert judge.n_heldout >= 100
        assert judge.accuracy >= 0.85, judge


@pytest.mark.slow
def test_judge_on_a_behaviour_never_tuned_on(shared_data, embedder):
    """CAA's survival-instinct A/B items: the judge is fit on the choices' texts."""
    path = shared_data / "caa" / "generate" / "survival-instinct" / "generate_dataset.json"
    pairs = sl.load_pairs(path)[:300]
    judge = sl.BehaviourJudge.fit(pairs, embedder=embedder)
    assert judge.accuracy >= 0.7, judge


def test_context_judge_reads_the_question_and_accuracy_has_an_interval():
    """A behaviour the answer alone cannot show: 'yes' is the matching answer only when the
    question states an opinion. A context judge separates it; the answer-only judge cannot."""
    from steerlens.evaluation.answers import in_context, judged_texts, question_stem

    def embed(texts):  # features: does the text say "I think" and does it say "Yes"
        return np.array([[float("I think" in t), float("Yes" in t), float(("I think" in t) == (
            "Yes" in t)), 1.0] for t in texts])  # fmt: skip

    pairs = []
    for i in range(40):
        opinion = i % 2 == 0
        view = "I think the plan is good. " if opinion else ""
        q = f"{view}Is plan {i} good?\n\nChoices:\n (A) Yes\n (B) No"
        pairs.append(sl.PreferencePair(q, "(A)" if opinion else "(B)", "(B)" if opinion else "(A)"))
    plain = sl.BehaviourJudge.fit(pairs, embedder=embed)
    ctx = sl.BehaviourJudge.fit(pairs, embedder=embed, context=True)
    assert ctx.context and not plain.context
    assert ctx.accuracy == 1.0 and plain.accuracy <= 0.75
    iv = ctx.accuracy_interval()
    assert iv.estimate == ctx.accuracy and iv.low <= iv.estimate <= iv.high and iv.n == 8
    lo = plain.accuracy_interval()  # it gives both answers of a pair the same label: chance
    assert lo.estimate == 0.5 and lo.low <= 0.5 <= lo.high
    assert question_stem(pairs[0].question) == "I think the plan is good. Is plan 0 good?"
    assert in_context("Q?\n\nChoices:\n (A) a\n (B) b", "a") == "Q?\na"
    import pandas as pd

    items = pd.DataFrame({"prompt": ["I think it is fine. Is it?"], "text": ["Yes"]})
    assert judged_texts(ctx, items) == ["I think it is fine. Is it?\nYes"]
    assert ctx.score(judged_texts(ctx, items))[0] > 0.5
    with pytest.raises(ConfigError, match="held no pairs out"):
        sl.BehaviourJudge.fit(pairs, embedder=embed, heldout=0).accuracy_interval()
