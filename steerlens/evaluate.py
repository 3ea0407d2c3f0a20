"""Evaluation under steering: A/B score, preference margin, generation, utility (MMLU, KL).

Every function takes a ``vector`` (or ``None`` for the unsteered model) and a list of
multipliers, runs batched with optional progress bars, and returns a pandas DataFrame.

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> items = sl.load_pairs(sl.demo_data_path("ab"))[:4]
    >>> v = sl.caa_vector(model, items, layers=1)
    >>> df = ab_score(model, v, items, multipliers=(-1, 0, 1))
    >>> list(df.columns)
    ['multiplier', 'score', 'matching_likelier', 'n', 'positions']
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.compat import deprecated_args
from steerlens.conditional import Conditional
from steerlens.data import DEFAULT_SYSTEM_PROMPT, PreferencePair
from steerlens.decode import GenRow, generate_rows
from steerlens.errors import ConfigError, DataError
from steerlens.hooks import model_device, pad_token_id
from steerlens.interventions import Intervention
from steerlens.logprobs import (
    CPU_MAX_ROWS,
    GPU_MAX_ROWS,
    EncodedPair,
    batch_logprobs,
    encode_pairs,
    encode_prompt,
    encode_text,
    end_of_turn_id,
    logits_at,
    pad_rows,
    plan_batches,
    set_prompt_ends,
    supports_shared_prompt,
)
from steerlens.rows import RowSteering
from steerlens.vector import Positions, SteeringVector, check_multiplier

Multipliers = Sequence[float]

#: The multipliers every evaluator uses unless told otherwise.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)


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


def _summary(
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


def _check_vector(model: Any, vector: SteeringVector | None) -> None:
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
class GridJob:
    """One cell of an evaluation grid: vector ``v`` (index into the vector list, -1 for
    none), multiplier ``m`` and item ``i``. Every cell with no steering (no vector or
    multiplier 0) is the same unsteered job, computed once per item."""

    v: int
    m: float
    i: int


def grid_jobs(
    vectors: Sequence[SteeringVector | None], mults: Sequence[float], n: int
) -> tuple[list[GridJob], dict[tuple[int, int, int], int]]:
    """The distinct jobs of a vectors x multipliers x items grid, and where each cell's
    result is (``cell[(vi, mi, i)] -> job index``)."""
    jobs: list[GridJob] = []
    where: dict[tuple[int, int, int], int] = {}
    seen: dict[GridJob, int] = {}
    for vi, v in enumerate(vectors):
        for mi, m in enumerate(mults):
            for i in range(n):
                job = GridJob(-1, 0.0, i) if v is None or m == 0 else GridJob(vi, m, i)
                if job not in seen:
                    seen[job] = len(jobs)
                    jobs.append(job)
                where[(vi, mi, i)] = seen[job]
    return jobs, where


def row_steering(
    vectors: Sequence[SteeringVector | None], jobs: Sequence[GridJob], repeat: int = 1
) -> RowSteering:
    """The :class:`RowSteering` of a batch of jobs (each row ``repeat`` times in a row block:
    ``[job_1..B] * repeat``)."""
    vs = [None if j.v < 0 else vectors[j.v] for j in jobs] * repeat
    return RowSteering(vs, [j.m for j in jobs] * repeat)


def scoring_plan(lengths: Sequence[int], batch_size: int | None, model: Any) -> list[list[int]]:
    """Batches for forward-only scoring (:func:`steerlens.logprobs.plan_batches`)."""
    return plan_batches(lengths, 0, batch_size=batch_size, device=model_device(model))


@torch.no_grad()
def ab_grid(
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
        _check_vector(model, v)
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
    jobs, where = grid_jobs(vectors, mults, len(pairs))
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
    return ab_grid(model, [vector], pairs, [m], positions=positions,
                   system_prompt=system_prompt, batch_size=batch_size)[0, 0]  # fmt: skip


@torch.no_grad()
def margin_grid(
    model: Any,
    vectors: Sequence[SteeringVector | None],
    encoded: Sequence[EncodedPair],
    mults: Sequence[float],
    *,
    positions: Positions = "all",
    batch_size: int | None = None,
    share_prompt: bool = True,
) -> Float[Tensor, "vectors multipliers n 2"]:
    """``[log p(matching|x), log p(not_matching|x)]`` for every vector, multiplier and pair,
    all cells in shared batches (each row steered by its own vector and multiplier).
    ``share_prompt``: see :func:`steerlens.logprobs.batch_logprobs`."""
    for v in vectors:
        _check_vector(model, v)
    jobs, where = grid_jobs(vectors, mults, len(encoded))
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


@deprecated_args(positional=("multipliers",), renamed={"items": "pairs"})
def ab_score(
    model: Any,
    vector: Vectors,
    pairs: Sequence[PreferencePair],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
    per_item: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """CAA's A/B metric: mean p(matching letter) / (p(A) + p(B)) at each multiplier.

    ``matching_likelier`` is the share of items where the matching letter is the likelier one
    (for MMLU items, whose "matching" answer is the correct one, this is MMLU accuracy); on a
    model near chance it can stay flat while ``score`` moves. With
    ``per_item=True`` one row per item and multiplier is returned instead. Every multiplier
    (and every vector of a list, told apart by a ``vector`` column) is scored in shared
    batches.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> df = ab_score(m, None, sl.load_pairs(sl.demo_data_path("ab"))[:2], multipliers=(0,))
        >>> df["n"].tolist()
        [2]
    """
    vectors = as_vector_list(vector)
    mults = [check_multiplier(m) for m in multipliers]
    label = positions_label(positions)
    grid = ab_grid(model, vectors, pairs, mults, positions=positions,
                   system_prompt=system_prompt, batch_size=batch_size)  # fmt: skip
    records = []
    labels = vector_labels(vectors)
    for vi in range(len(vectors)):
        tag = {"vector": labels[vi]} if len(vectors) > 1 else {}
        for mi, m in enumerate(mults):
            probs = grid[vi, mi]
            if per_item:
                records += [
                    {**tag, "multiplier": m, "item": i, "score": float(p), "positions": label}
                    for i, p in enumerate(probs)
                ]
            else:
                likelier = float((probs > 0.5).float().mean())
                row = _summary(m, "score", float(probs.mean()), likelier, len(pairs), label)
                records.append({**tag, **row})
    return pd.DataFrame.from_records(records)


@deprecated_args(positional=("multipliers",))
def preference_margin(
    model: Any,
    vector: Vectors,
    pairs: Sequence[PreferencePair],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    per_item: bool = False,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    progress: bool = True,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Mean of ``log p(matching|x) - log p(not_matching|x)`` (summed over answer tokens, EOS
    included) and ``matching_likelier``, the share of pairs whose matching answer is the
    likelier one (a positive gap), per multiplier. Every multiplier (and every vector of a
    list, told apart by a ``vector`` column) is scored in shared batches.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("eval"))[:2]
        >>> list(preference_margin(m, None, pairs, multipliers=(0,)).columns)
        ['multiplier', 'margin', 'matching_likelier', 'n', 'positions']
    """
    vectors = as_vector_list(vector)
    mults = [check_multiplier(m) for m in multipliers]
    enc = encode_pairs(model.tokenizer, pairs, system_prompt)
    grid = margin_grid(model, vectors, enc, mults, positions=positions, batch_size=batch_size)
    records = []
    label = positions_label(positions)
    labels = vector_labels(vectors)
    for vi in range(len(vectors)):
        tag = {"vector": labels[vi]} if len(vectors) > 1 else {}
        for mi, m in enumerate(mults):
            lp = grid[vi, mi]
            gap = lp[:, 0] - lp[:, 1]
            if per_item:
                records += [
                    {
                        **tag,
                        "multiplier": m,
                        "item": i,
                        "logp_matching": float(a),
                        "logp_not_matching": float(b),
                        "margin": float(a - b),
                        "positions": label,
                    }
                    for i, (a, b) in enumerate(lp.tolist())
                ]
            else:
                likelier = float((gap > 0).float().mean())
                row = _summary(m, "margin", float(gap.mean()), likelier, len(pairs), label)
                records.append({**tag, **row})
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class Sampling:
    """How answers are decoded: greedy (``temperature=0``, the default) or sampled.

    Attributes:
        temperature: 0 is greedy decoding; above 0, sampling at that temperature.
        top_p: nucleus sampling threshold (None: the whole distribution).
        seed: with the prompt's text and the sample index, seeds each answer's own random
            stream, so a (prompt, sample) sees the same random draws at every multiplier, with
            every vector and system prompt, and in any batch
            (a paired comparison; see :mod:`steerlens.decode`); the global RNG is left
            untouched.
        samples: answers per prompt.

    Examples:
        >>> Sampling(temperature=0.7, top_p=0.9, samples=3).samples
        3
        >>> Sampling(temperature=-1)
        Traceback (most recent call last):
        ...
        steerlens.errors.ConfigError: temperature must be >= 0 (0 = greedy), got -1
    """

    temperature: float = 0.0
    top_p: float | None = None
    seed: int = 0
    samples: int = 1

    def __post_init__(self) -> None:
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t)):
            raise ConfigError(f"temperature must be a finite number >= 0, got {t!r}")
        if t < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {t!r}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.samples, int) and self.samples >= 1):
            raise ConfigError(f"samples must be an int >= 1, got {self.samples!r}")


#: Greedy decoding, one answer per prompt.
GREEDY = Sampling()


Vectors = SteeringVector | None | Sequence[SteeringVector | None]
#: What ``generate`` and ``open_ended_score`` steer with: vectors, interventions, conditionals.
Steering = SteeringVector | Intervention | Conditional | None
AnySteering = Steering | Sequence[Steering]


def as_vector_list(vector: Any, *, rules: bool = False) -> list[Any]:
    """One vector, None, or a list of them, as a list (the evaluators' ``vector`` argument).
    With ``rules=True`` an :class:`~steerlens.interventions.Intervention` or a
    :class:`~steerlens.conditional.Conditional` may stand for a vector.

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


@deprecated_args(positional=("multipliers",))
@torch.no_grad()
def generate(
    model: Any,
    vector: AnySteering,
    prompts: Sequence[str],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    max_new_tokens: int = 48,
    positions: Positions = "all",
    system_prompt: str | None | Sequence[str | None] = DEFAULT_SYSTEM_PROMPT,
    sampling: Sampling = GREEDY,
    batch_size: int | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Answers with the chat template at each multiplier (and vector), in shared batches.

    Every (vector, multiplier, prompt, sample) is one row of a batch, steered by its own
    vector and multiplier (:class:`~steerlens.rows.RowSteering`), so a whole grid decodes
    together; the answers equal one multiplier at a time (tested). Batches are left-padded,
    sorted by length and sized by :func:`steerlens.logprobs.plan_batches`, and decoded with the
    KV cache by the model's own ``generate`` (see :mod:`steerlens.decode`). Greedy by
    default; ``sampling=Sampling(temperature=0.7, top_p=0.9, samples=3)`` samples.

    Args:
        vector: a vector, None (unsteered), an
            :class:`~steerlens.interventions.Intervention`, a
            :class:`~steerlens.conditional.Conditional`, or a list of them (a ``vector``
            column tells them apart). With a conditional rule a ``condition_met`` column says
            which rows it steered (None for rows it did not decide).
        system_prompt: one system prompt, or one per prompt.
        batch_size: at most this many rows per batch (default: the measured rule).
        backend: ``"auto"``, ``"native"`` or ``"bridge"`` (:func:`steerlens.decode.generate_rows`).

    Returns:
        One row per answer: ``prompt``, ``sample``, ``multiplier``, ``text``, ``positions``
        and ``tokens`` (the new token ids, end-of-turn token dropped); with a list of vectors
        also ``vector``.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> df = generate(m, None, ["Hello?"], multipliers=(0,), max_new_tokens=3)
        >>> df.columns.tolist(), len(df)
        (['prompt', 'sample', 'multiplier', 'text', 'positions', 'tokens'], 1)
    """
    vectors = as_vector_list(vector, rules=True)
    for v in vectors:
        if v is not None:
            v.check_model(model)
    mults = [check_multiplier(m) for m in multipliers]
    tok = model.tokenizer
    eot = end_of_turn_id(tok)
    label = positions_label(positions)
    systems = _per_prompt(system_prompt, len(prompts))
    encoded = [tuple(encode_prompt(tok, p, s)) for p, s in zip(prompts, systems, strict=True)]
    jobs = [
        (vi, m, i, k)
        for vi in range(len(vectors))
        for m in mults
        for i in range(len(prompts))
        for k in range(sampling.samples)
    ]
    # a prompt's random stream is keyed by its text: the same at every multiplier and vector,
    # under any system prompt, in any batch or prompt list
    keys = [zlib.crc32(p.encode()) for p in prompts]
    rows = [GenRow(encoded[i], vectors[vi], m, (keys[i], k)) for vi, m, i, k in jobs]
    decisions: list[bool | None] = []
    new = generate_rows(
        model, rows, max_new_tokens=max_new_tokens, eos_token_id=eot, positions=positions,
        temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
        batch_size=batch_size, backend=backend, progress=progress, decisions=decisions,
    )  # fmt: skip
    conditional = any(isinstance(v, Conditional) for v in vectors)
    records = []
    labels = vector_labels(vectors)
    for (vi, m, i, k), toks, met in zip(jobs, new, decisions, strict=True):
        text = tok.decode(toks, skip_special_tokens=True).strip()
        rec = {"prompt": prompts[i], "sample": k, "multiplier": m, "text": text,
               "positions": label, "tokens": tuple(toks)}  # fmt: skip
        if conditional:
            rec["condition_met"] = met
        if len(vectors) > 1:
            rec = {"vector": labels[vi], **rec}
        records.append(rec)
    columns = ["prompt", "sample", "multiplier", "text", "positions", "tokens"]
    if len(vectors) > 1:
        columns.insert(0, "vector")
    if conditional:
        columns.append("condition_met")
    return pd.DataFrame.from_records(records, columns=columns)


def _per_prompt(system_prompt: Any, n: int) -> list[str | None]:
    if system_prompt is None or isinstance(system_prompt, str):
        return [system_prompt] * n
    systems = list(system_prompt)
    if len(systems) != n:
        raise ConfigError(f"system_prompt: {len(systems)} system prompts for {n} prompts")
    return systems


NEUTRAL_TEXTS = (
    "The museum opens at nine in the morning and closes at five in the afternoon.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She planted tomatoes, basil and peppers in the small garden behind the house.",
    "The train to the coast leaves every hour from the central station.",
    "A triangle has three sides, and its angles add up to one hundred and eighty degrees.",
    "He read the recipe twice before he started to bake the bread.",
    "Rivers carry sediment from the mountains down to the sea.",
    "The library lends books, films and music to anyone with a card.",
)


@deprecated_args(positional=("multipliers",))
@torch.no_grad()
def kl_divergence(
    model: Any,
    vector: SteeringVector,
    texts: Sequence[str] = NEUTRAL_TEXTS,
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    positions: Positions = "all",
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean KL(p_0 || p_steered) of next-token distributions over every position of neutral
    texts (how much steering disturbs unrelated text).

    Examples:
        >>> import torch, steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> v = SteeringVector({"blocks.0.hook_resid_post": torch.ones(64)})
        >>> df = kl_divergence(m, v, ["Some neutral text."], multipliers=(0, 1))
        >>> bool(df["kl"][0] == 0 < df["kl"][1])
        True
    """
    _check_vector(model, vector)
    tok = model.tokenizer
    device = model_device(model)
    seqs = [encode_text(tok, t) for t in texts]
    pad = pad_token_id(model)
    label = positions_label(positions)
    mults = [check_multiplier(m) for m in multipliers]
    steered = [m for m in dict.fromkeys(mults) if m != 0]
    per_text = 1 + len(steered)  # the unsteered row, then one row per nonzero multiplier
    max_rows = (
        batch_size if batch_size else (CPU_MAX_ROWS if device.type == "cpu" else GPU_MAX_ROWS)
    )
    plan = scoring_plan([len(x) for x in seqs], max(1, max_rows // per_text), model)
    total = dict.fromkeys(steered, 0.0)
    count = 0
    for idx in tqdm(plan, desc="KL", disable=not progress, leave=False):
        chunk = [seqs[i] for i in idx]
        b = len(chunk)
        ids, mask = pad_rows([([], x) for x in chunk] * per_text, pad, device)
        steering = RowSteering([None] * b + [vector] * (b * len(steered)),
                               [0.0] * b + [m for m in steered for _ in range(b)])  # fmt: skip
        hooks = steering.fwd_hooks(positions)
        set_prompt_ends(hooks, torch.tensor([len(x) - 1 for x in chunk] * per_text))
        logp = torch.log_softmax(model.run_with_hooks(ids, fwd_hooks=hooks).float(), -1)
        base, keep = logp[:b], mask[:b]
        for k, m in enumerate(steered):
            steer = logp[b * (k + 1) : b * (k + 2)]
            kl = (base.exp() * (base - steer)).sum(-1)
            total[m] += float(kl[keep].sum())
        count += int(keep.sum())
    records = [
        {"multiplier": m, "kl": total[m] / max(count, 1) if m != 0 else 0.0, "tokens": count,
         "positions": label}
        for m in mults
    ]  # fmt: skip
    return pd.DataFrame.from_records(records)
