"""Batched scoring kernels under steering: A/B probabilities and preference margins for many
vectors and multipliers in one pass, and the labels every results table shares.

Examples:
    >>> positions_label("all"), vector_labels([None])
    ('all', ['none'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.batching import plan_batches
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT, PreferencePair
from steerlens.core.encoding import EncodedPair, encode_prompt, encode_text, pad_rows
from steerlens.core.errors import ConfigError, DataError
from steerlens.core.hooks import model_device, pad_token_id
from steerlens.core.logprobs import (
    batch_logprobs,
    logits_at,
    set_prompt_ends,
    supports_shared_prompt,
)
from steerlens.steering.conditional import Conditional
from steerlens.steering.hookpoints import Positions, check_multiplier
from steerlens.steering.interventions import Intervention
from steerlens.steering.protocol import Steering
from steerlens.steering.rows import RowSteering
from steerlens.steering.vector import SteeringVector

Multipliers = Sequence[float]


#: The multipliers every evaluator uses unless told otherwise.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)


Vectors = SteeringVector | None | Sequence[SteeringVector | None]
#: What ``generate`` and ``open_ended_score`` steer with: vectors, interventions, conditionals.
AnySteering = Steering | None | Sequence[Steering | None]


def positions_label(positions: Positions) -> str:
    """How a results table names the steered positions (``"all"``, ``"after_prompt"``, ...).

    ``"all"`` is BiPO's protocol (every position, as it trains); ``"after_prompt"`` is CAA's
    (from the instruction's last token on).

    Examples:
        >>> positions_label("after_prompt"), positions_label(3)
        ('after_prompt', 'from_3')
    """
    if isinstance(positions, str):
        return positions
    if isinstance(positions, int):
        return f"from_{positions}"
    return "mask"


def summary_row(
    multiplier: float, metric: str, value: float, likelier: float, n: int, positions: str
) -> dict[str, Any]:
    """One row of an evaluator's summary table."""
    return {
        "multiplier": multiplier,
        metric: value,
        "matching_likelier": likelier,
        "n": n,
        "positions": positions,
    }


def check_vector(model: Any, vector: SteeringVector | None) -> None:
    if vector is not None:
        vector.check_model(model)


def ab_choice_tokens(tokenizer: Any, a: str = "(A)", b: str = "(B)") -> tuple[list[int], int, int]:
    """Common token prefix of two A/B answers and the first token where they differ.

    Examples:
        >>> import steerlens as sl
        >>> tok = sl.tiny_model(n_layers=1).tokenizer
        >>> prefix, ta, tb = ab_choice_tokens(tok)
        >>> tok.decode(prefix), tok.decode([ta]), tok.decode([tb])
        ('(', 'A', 'B')
    """
    ia, ib = encode_text(tokenizer, a), encode_text(tokenizer, b)
    k = 0
    while k < min(len(ia), len(ib)) and ia[k] == ib[k]:
        k += 1
    if k >= min(len(ia), len(ib)):
        raise DataError(f"answers {a!r} and {b!r} tokenise identically")
    return ia[:k], ia[k], ib[k]


@dataclass(frozen=True)
class BatchJob:
    """One cell of an evaluation grid: vector ``v`` (index into the vector list, -1 for
    none), multiplier ``m`` and item ``i``. Every cell with no steering (no vector or
    multiplier 0) is the same unsteered job, computed once per item."""

    v: int
    m: float
    i: int


def batch_jobs(
    vectors: Sequence[SteeringVector | None], mults: Sequence[float], n: int
) -> tuple[list[BatchJob], dict[tuple[int, int, int], int]]:
    """The distinct jobs of a vectors x multipliers x items grid, and where each cell's
    result is (``cell[(vi, mi, i)] -> job index``)."""
    jobs: list[BatchJob] = []
    where: dict[tuple[int, int, int], int] = {}
    seen: dict[BatchJob, int] = {}
    for vi, v in enumerate(vectors):
        for mi, m in enumerate(mults):
            for i in range(n):
                job = BatchJob(-1, 0.0, i) if v is None or m == 0 else BatchJob(vi, m, i)
                if job not in seen:
                    seen[job] = len(jobs)
                    jobs.append(job)
                where[(vi, mi, i)] = seen[job]
    return jobs, where


def row_steering(
    vectors: Sequence[SteeringVector | None], jobs: Sequence[BatchJob], repeat: int = 1
) -> RowSteering:
    """The :class:`RowSteering` of a batch of jobs (each row ``repeat`` times in a row block:
    ``[job_1..B] * repeat``)."""
    vs = [None if j.v < 0 else vectors[j.v] for j in jobs] * repeat
    return RowSteering(vs, [j.m for j in jobs] * repeat)


def scoring_plan(lengths: Sequence[int], batch_size: int | None, model: Any) -> list[list[int]]:
    """Batches for forward-only scoring (:func:`steerlens.core.batching.plan_batches`)."""
    return plan_batches(lengths, 0, batch_size=batch_size, device=model_device(model))


@torch.no_grad()
def ab_batch(
    model: Any,
    vectors: Sequence[SteeringVector | None],
    pairs: Sequence[PreferencePair],
    mults: Sequence[float],
    *,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
) -> Float[Tensor, "vectors multipliers n"]:
    """:func:`ab_probabilities` for every vector and multiplier, all cells in shared batches
    (each row steered by its own vector and multiplier)."""
    tok = model.tokenizer
    device = model_device(model)
    for v in vectors:
        check_vector(model, v)
    rows, letters = [], []
    for i, it in enumerate(pairs):
        if not it.is_ab:
            raise DataError(
                f"pairs[{i}] is not an A/B item (answers {it.matching!r}, {it.not_matching!r})"
            )
        prefix, t_match, t_other = ab_choice_tokens(
            tok, f"({it.matching_letter})", f"({it.not_matching_letter})"
        )
        rows.append((encode_prompt(tok, it.question, system_prompt), prefix))
        letters.append((t_match, t_other))
    jobs, where = batch_jobs(vectors, mults, len(pairs))
    res = torch.zeros(len(jobs))
    pad = pad_token_id(model)
    lengths = [len(rows[j.i][0]) + len(rows[j.i][1]) for j in jobs]
    for idx in scoring_plan(lengths, batch_size, model):
        batch = [jobs[k] for k in idx]
        ids, _ = pad_rows([rows[j.i] for j in batch], pad, device)
        hooks = row_steering(vectors, batch).fwd_hooks(positions)
        # CAA's protocol: steer from the instruction's last token on (the answer's "(" onward)
        set_prompt_ends(hooks, torch.tensor([len(rows[j.i][0]) - 1 for j in batch]))
        last = torch.tensor([len(rows[j.i][0]) + len(rows[j.i][1]) - 1 for j in batch])
        logits = logits_at(model, ids, torch.arange(len(idx), device=device), last.to(device),
                           hooks)  # fmt: skip
        pick = torch.tensor([letters[j.i] for j in batch], device=device)
        pair = logits.float().gather(-1, pick)
        res[idx] = torch.softmax(pair, -1)[:, 0].cpu()
    out = torch.zeros(len(vectors), len(mults), len(pairs))
    for (vi, mi, i), k in where.items():
        out[vi, mi, i] = res[k]
    return out


def ab_probabilities(
    model: Any,
    vector: SteeringVector | None,
    pairs: Sequence[PreferencePair],
    multiplier: float = 1.0,
    *,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
) -> Float[Tensor, " n"]:
    """p(matching letter) / (p(matching letter) + p(other letter)) at the answer position.

    For A/B items that is CAA's p(matching) / (p(A) + p(B)); items with more letters (e.g. "(C)"
    vs "(A)") use their own two letters.
    """
    m = check_multiplier(multiplier)
    return ab_batch(model, [vector], pairs, [m], positions=positions,
                   system_prompt=system_prompt, batch_size=batch_size)[0, 0]  # fmt: skip


@torch.no_grad()
def margin_batch(
    model: Any, vectors: Sequence[SteeringVector | None], encoded: Sequence[EncodedPair],
    mults: Sequence[float], *, positions: Positions = "all", batch_size: int | None = None,
    share_prompt: bool = True,
) -> Float[Tensor, "vectors multipliers n 2"]:  # fmt: skip
    """``[log p(matching|x), log p(not_matching|x)]`` for every vector, multiplier and pair,
    all cells in shared batches (each row steered by its own vector and multiplier).
    ``share_prompt``: see :func:`steerlens.core.logprobs.batch_logprobs`."""
    for v in vectors:
        check_vector(model, v)
    jobs, where = batch_jobs(vectors, mults, len(encoded))
    res = torch.zeros(len(jobs), 2)
    packed = share_prompt and supports_shared_prompt(model)
    lengths = [encoded[j.i].packed_length if packed else encoded[j.i].length for j in jobs]
    for idx in scoring_plan(lengths, batch_size, model):
        batch = [jobs[k] for k in idx]
        hooks = row_steering(vectors, batch, 1 if packed else 2).fwd_hooks(positions)
        lp = batch_logprobs(model, [encoded[j.i] for j in batch], hooks, packed).cpu()
        res[idx, 0] = lp[: len(idx)].float()
        res[idx, 1] = lp[len(idx) :].float()
    out = torch.zeros(len(vectors), len(mults), len(encoded), 2)
    for (vi, mi, i), k in where.items():
        out[vi, mi, i] = res[k]
    return out


def as_vector_list(vector: Any, *, rules: bool = False) -> list[Any]:
    """One vector, None, or a list of them, as a list (the evaluators' ``vector`` argument).
    With ``rules=True`` an :class:`~steerlens.steering.interventions.Intervention` or a
    :class:`~steerlens.steering.conditional.Conditional` may stand for a vector.

    Examples:
        >>> as_vector_list(None)
        [None]
    """
    kinds: tuple[type, ...] = (
        (SteeringVector, Intervention, Conditional) if rules else (SteeringVector,)
    )
    what = "a SteeringVector, Intervention, Conditional" if rules else "a SteeringVector"
    if vector is None or isinstance(vector, kinds):
        return [vector]
    if isinstance(vector, (str, bytes)) or not isinstance(vector, Sequence) or not vector:
        raise ConfigError(
            f"vector must be {what}, None, or a non-empty list of them, got {type(vector).__name__}"
        )
    for i, v in enumerate(vector):
        if v is not None and not isinstance(v, kinds):
            raise ConfigError(f"vector[{i}]: expected {what} or None, got {v!r}")
    return list(vector)


def vector_label(vector: Any, i: int = 0) -> str:
    """How results tables name a vector: its ``name``, else ``method``, metadata; ``"none"``
    for no vector; ``"conditional"`` for a conditional rule; ``"vector{i}"`` otherwise."""
    if vector is None:
        return "none"
    if isinstance(vector, Conditional):
        return "conditional"
    for key in ("name", "method"):
        if vector.metadata.get(key):
            return str(vector.metadata[key])
    return f"vector{i}"


def vector_labels(vectors: Sequence[Any]) -> list[str]:
    """:func:`vector_label` of each vector, made unique (``bipo``, ``bipo#2``, ...).

    Examples:
        >>> import torch
        >>> v = SteeringVector({"h": torch.ones(2)}, {"method": "caa"})
        >>> vector_labels([v, None, v])
        ['caa', 'none', 'caa#2']
    """
    out: list[str] = []
    for i, v in enumerate(vectors):
        label = vector_label(v, i)
        out.append(label if label not in out else f"{label}#{i}")
    return out


def answer_nll(
    model: Any,
    prompt_tokens: Sequence[Sequence[int]],
    tokens: Sequence[Sequence[int]],
    *,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed negative log-likelihood of each answer's ``tokens`` under the *unsteered*
    model, given its ``prompt_tokens``, and the number of tokens scored: the one path that
    scores generated answers (open-ended answers' perplexity, the engine's cells).

    The end-of-turn token is not scored (the text as read); an empty answer scores 0 of 0.
    Answers to the same prompt share one forward of it: two answers ride in one packed row
    (:func:`~steerlens.core.logprobs.pack_pairs`'s layout), an odd one out beside itself.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=1)
        >>> nll, n = answer_nll(m, [[1, 2], [1, 2]], [[3, 4], []])
        >>> bool(nll[0] > 0), n.tolist(), float(nll[1])
        (True, [2, 0], 0.0)
    """
    nll = np.zeros(len(tokens))
    count = np.array([len(t) for t in tokens], dtype=np.int64)
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tokens):
        if len(t):
            by_prompt.setdefault(tuple(prompt_tokens[i]), []).append(i)
    pairs = []
    for members in by_prompt.values():
        for k in range(0, len(members), 2):
            pairs.append((members[k], members[min(k + 1, len(members) - 1)]))
    if pairs:
        enc = [EncodedPair(tuple(prompt_tokens[i]), tuple(tokens[i]), tuple(tokens[j]))
               for i, j in pairs]  # fmt: skip
        lp = margin_batch(model, [None], enc, [0.0], batch_size=batch_size)[0, 0].double()
        for (i, j), (a, b) in zip(pairs, lp.tolist(), strict=True):
            nll[i], nll[j] = -a, -b
    return nll, count


def perplexity(nll: Any, tokens: Any) -> np.ndarray:
    """``exp(nll / tokens)`` per answer; NaN for an answer of no tokens.

    Examples:
        >>> perplexity(np.array([0.0, 2.0, 1.0]), np.array([1, 2, 0])).round(4).tolist()
        [1.0, 2.7183, nan]
    """
    nll, tokens = np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tokens > 0, np.exp(nll / np.maximum(tokens, 1)), np.nan)
