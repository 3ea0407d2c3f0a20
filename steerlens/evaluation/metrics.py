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

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlens.core.batching import CPU_MAX_ROWS, GPU_MAX_ROWS
from steerlens.core.compat import deprecated_args
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT, PreferencePair
from steerlens.core.encoding import encode_pairs, encode_text, pad_rows
from steerlens.core.hooks import model_device, pad_token_id
from steerlens.core.logprobs import set_prompt_ends
from steerlens.evaluation.scoring import (
    DEFAULT_MULTIPLIERS,
    Multipliers,
    Vectors,
    ab_batch,
    as_vector_list,
    check_vector,
    margin_batch,
    positions_label,
    scoring_plan,
    summary_row,
    vector_labels,
)
from steerlens.steering.hookpoints import Positions, check_multiplier
from steerlens.steering.rows import RowSteering
from steerlens.steering.vector import SteeringVector


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
    grid = ab_batch(model, vectors, pairs, mults, positions=positions,
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
                row = summary_row(m, "score", float(probs.mean()), likelier, len(pairs), label)
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
    grid = margin_batch(model, vectors, enc, mults, positions=positions, batch_size=batch_size)
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
                row = summary_row(m, "margin", float(gap.mean()), likelier, len(pairs), label)
                records.append({**tag, **row})
    return pd.DataFrame.from_records(records)


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
    check_vector(model, vector)
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
