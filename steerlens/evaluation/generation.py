"""Generation under steering: greedy or sampled answers with the chat template, batched, for
many vectors and multipliers at once.

Examples:
    >>> GREEDY.temperature
    0.0
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from steerlens.core.compat import deprecated_args
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT
from steerlens.core.encoding import encode_prompt, end_of_turn_id
from steerlens.core.errors import ConfigError
from steerlens.evaluation.decode import GenRow, generate_rows
from steerlens.evaluation.scoring import (
    DEFAULT_MULTIPLIERS,
    AnySteering,
    Multipliers,
    as_vector_list,
    positions_label,
    vector_labels,
)
from steerlens.steering.conditional import Conditional
from steerlens.steering.hookpoints import Positions, check_multiplier


@dataclass(frozen=True)
class Sampling:
    """How answers are decoded: greedy (``temperature=0``, the default) or sampled.

    Attributes:
        temperature: 0 is greedy decoding; above 0, sampling at that temperature.
        top_p: nucleus sampling threshold (None: the whole distribution).
        seed: with the prompt's text and the sample index, seeds each answer's own random
            stream, so a (prompt, sample) sees the same random draws at every multiplier, with
            every vector and system prompt, and in any batch
            (a paired comparison; see :mod:`steerlens.evaluation.decode`); the global RNG is left
            untouched.
        samples: answers per prompt.

    Examples:
        >>> Sampling(temperature=0.7, top_p=0.9, samples=3).samples
        3
        >>> Sampling(temperature=-1)
        Traceback (most recent call last):
        ...
        steerlens.core.errors.ConfigError: temperature must be >= 0 (0 = greedy), got -1
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
    vector and multiplier (:class:`~steerlens.steering.rows.RowSteering`), so a whole grid decodes
    together; the answers equal one multiplier at a time (tested). Batches are left-padded,
    sorted by length and sized by :func:`steerlens.core.batching.plan_batches`, and decoded with the
    KV cache by the model's own ``generate`` (see :mod:`steerlens.evaluation.decode`). Greedy by
    default; ``sampling=Sampling(temperature=0.7, top_p=0.9, samples=3)`` samples.

    Args:
        vector: a vector, None (unsteered), an
            :class:`~steerlens.steering.interventions.Intervention`, a
            :class:`~steerlens.steering.conditional.Conditional`, or a list of them (a ``vector``
            column tells them apart). With a conditional rule a ``condition_met`` column says
            which rows it steered (None for rows it did not decide).
        system_prompt: one system prompt, or one per prompt.
        batch_size: at most this many rows per batch (default: the measured rule).
        backend: ``"auto"``, ``"native"`` or ``"bridge"``
            (:func:`steerlens.evaluation.decode.generate_rows`).

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
    texts = [tok.decode(toks, skip_special_tokens=True).strip() for toks in new]
    return _table(vectors, prompts, jobs, texts, new, decisions, label)


def _table(vectors: Sequence[Any], prompts: Sequence[str], jobs: Sequence[tuple[Any, ...]],
           texts: Sequence[str], tokens: Sequence[Sequence[int]], decisions: Sequence[bool | None],
           label: str) -> pd.DataFrame:  # fmt: skip
    """:func:`generate`'s table: one row per job (vector, multiplier, prompt, sample)."""
    conditional = any(isinstance(v, Conditional) for v in vectors)
    records = []
    labels = vector_labels(vectors)
    for (vi, m, i, k), text, toks, met in zip(jobs, texts, tokens, decisions, strict=True):
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
