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

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.compat import deprecated_args
from steerlens.data import DEFAULT_SYSTEM_PROMPT, PreferencePair
from steerlens.errors import ConfigError, DataError
from steerlens.hooks import model_device, pad_token_id
from steerlens.logprobs import (
    encode_pairs,
    encode_prompt,
    encode_text,
    end_of_turn_id,
    length_buckets,
    logits_at,
    pad_rows,
    pair_logprobs,
    set_prompt_ends,
)
from steerlens.vector import Positions, SteeringVector, check_multiplier

Multipliers = Sequence[float]

#: The multipliers every evaluator uses unless told otherwise.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)


def _factory(vector: SteeringVector | None, mult: float, positions: Positions = "all") -> Any:
    if vector is None or mult == 0:
        return None
    return lambda: vector.fwd_hooks(mult, positions)


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


@torch.no_grad()
def ab_probabilities(
    model: Any,
    vector: SteeringVector | None,
    pairs: Sequence[PreferencePair],
    multiplier: float = 1.0,
    *,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int = 8,
) -> Float[Tensor, " n"]:
    """p(matching letter) / (p(matching letter) + p(other letter)) at the answer position.

    For A/B items that is CAA's p(matching) / (p(A) + p(B)); items with more letters (e.g. "(C)"
    vs "(A)") use their own two letters.
    """
    tok = model.tokenizer
    device = model_device(model)
    _check_vector(model, vector)
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
    out = torch.zeros(len(pairs))
    pad = pad_token_id(model)
    for idx in length_buckets([len(p) + len(a) for p, a in rows], batch_size):
        ids, _ = pad_rows([rows[i] for i in idx], pad, device)
        factory = _factory(vector, multiplier, positions)
        hooks = factory() if factory else []
        # CAA's protocol: steer from the instruction's last token on (the answer's "(" onward)
        set_prompt_ends(hooks, torch.tensor([len(rows[i][0]) - 1 for i in idx]))
        last = torch.tensor([len(rows[i][0]) + len(rows[i][1]) - 1 for i in idx], device=device)
        logits = logits_at(model, ids, torch.arange(len(idx), device=device), last, hooks)
        pick = torch.tensor([letters[i] for i in idx], device=device)
        pair = logits.float().gather(-1, pick)
        out[idx] = torch.softmax(pair, -1)[:, 0].cpu()
    return out


@deprecated_args(positional=("multipliers",), renamed={"items": "pairs"})
def ab_score(
    model: Any,
    vector: SteeringVector | None,
    pairs: Sequence[PreferencePair],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int = 8,
    per_item: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """CAA's A/B metric: mean p(matching letter) / (p(A) + p(B)) at each multiplier.

    ``matching_likelier`` is the share of items where the matching letter is the likelier one
    (for MMLU items, whose "matching" answer is the correct one, this is MMLU accuracy); on a
    model near chance it can stay flat while ``score`` moves. With
    ``per_item=True`` one row per item and multiplier is returned instead.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> df = ab_score(m, None, sl.load_pairs(sl.demo_data_path("ab"))[:2], multipliers=(0,))
        >>> df["n"].tolist()
        [2]
    """
    records = []
    label = positions_label(positions)
    for mult in tqdm(list(multipliers), desc="A/B score", disable=not progress, leave=False):
        m = check_multiplier(mult)
        probs = ab_probabilities(
            model,
            vector,
            pairs,
            m,
            positions=positions,
            system_prompt=system_prompt,
            batch_size=batch_size,
        )
        if per_item:
            records += [
                {"multiplier": m, "item": i, "score": float(p), "positions": label}
                for i, p in enumerate(probs)
            ]
        else:
            likelier = float((probs > 0.5).float().mean())
            records.append(_summary(m, "score", float(probs.mean()), likelier, len(pairs), label))
    return pd.DataFrame.from_records(records)


@deprecated_args(positional=("multipliers",))
def preference_margin(
    model: Any,
    vector: SteeringVector | None,
    pairs: Sequence[PreferencePair],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    per_item: bool = False,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    progress: bool = True,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Mean of ``log p(matching|x) - log p(not_matching|x)`` (summed over answer tokens, EOS
    included) and ``matching_likelier``, the share of pairs whose matching answer is the
    likelier one (a positive gap), per multiplier.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("eval"))[:2]
        >>> list(preference_margin(m, None, pairs, multipliers=(0,)).columns)
        ['multiplier', 'margin', 'matching_likelier', 'n', 'positions']
    """
    _check_vector(model, vector)
    enc = encode_pairs(model.tokenizer, pairs, system_prompt)
    records = []
    label = positions_label(positions)
    for mult in tqdm(list(multipliers), desc="margin", disable=not progress, leave=False):
        m = check_multiplier(mult)
        lp = pair_logprobs(model, enc, _factory(vector, m, positions), batch_size)
        gap = lp[:, 0] - lp[:, 1]
        if per_item:
            records += [
                {
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
            records.append(_summary(m, "margin", float(gap.mean()), likelier, len(pairs), label))
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class Sampling:
    """How answers are decoded: greedy (``temperature=0``, the default) or sampled.

    Attributes:
        temperature: 0 is greedy decoding; above 0, sampling at that temperature.
        top_p: nucleus sampling threshold (None: the whole distribution).
        seed: seeds every batch (with the batch's first prompt), so each multiplier sees the
            same random draws (a paired comparison); the global RNG is left untouched.
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


@deprecated_args(positional=("multipliers",))
@torch.no_grad()
def generate(
    model: Any,
    vector: SteeringVector | None,
    prompts: Sequence[str],
    *,
    multipliers: Multipliers = DEFAULT_MULTIPLIERS,
    max_new_tokens: int = 48,
    positions: Positions = "all",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    sampling: Sampling = GREEDY,
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """Answers with the chat template, in batches, at each multiplier.

    Greedy by default; ``sampling=Sampling(temperature=0.7, top_p=0.9, samples=3)`` samples.
    Batches are left-padded with an attention mask and decoded with the KV cache.

    Returns:
        One row per answer: ``prompt``, ``sample``, ``multiplier``, ``text``, ``positions``
        and ``tokens`` (the new token ids, end-of-turn token dropped).

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> df = generate(m, None, ["Hello?"], multipliers=(0,), max_new_tokens=3)
        >>> df.columns.tolist(), len(df)
        (['prompt', 'sample', 'multiplier', 'text', 'positions', 'tokens'], 1)
    """
    _check_vector(model, vector)
    mults = [check_multiplier(m) for m in multipliers]
    tok = model.tokenizer
    eot = end_of_turn_id(tok)
    device = model_device(model)
    pad = pad_token_id(model)
    label = positions_label(positions)
    jobs = [(i, k) for i in range(len(prompts)) for k in range(sampling.samples)]
    encoded = [encode_prompt(tok, p, system_prompt) for p in prompts]
    records = []
    bar = tqdm(total=len(jobs) * len(mults), desc="generate", disable=not progress, leave=False)
    for m in mults:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            width = max(len(encoded[i]) for i, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, (i, _) in enumerate(chunk):
                ids[j, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                attn[j, width - len(encoded[i]) :] = 1
            kwargs: dict[str, Any] = dict(
                max_new_tokens=max_new_tokens,
                do_sample=sampling.temperature > 0,
                verbose=False,
                return_type="tokens",
                eos_token_id=eot,
                stop_at_eos=True,
            )
            if sampling.temperature > 0:
                kwargs.update(temperature=float(sampling.temperature), top_p=sampling.top_p)
            if len(chunk) > 1:
                kwargs["attention_mask"] = attn.to(device)
            steering = (
                vector.apply(model, m, positions)
                if vector is not None and m != 0
                else contextlib.nullcontext()
            )
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(sampling.seed * 1_000_003 + start)
                with steering:
                    out = model.generate(ids.to(device), **kwargs)
            for j, (i, k) in enumerate(chunk):
                new = out[j, width:].tolist()
                new = new[: new.index(eot)] if eot in new else new
                text = tok.decode(new, skip_special_tokens=True).strip()
                records.append((prompts[i], k, m, text, label, tuple(new)))
            bar.update(len(chunk))
    bar.close()
    columns = ["prompt", "sample", "multiplier", "text", "positions", "tokens"]
    return pd.DataFrame.from_records(records, columns=columns)


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
    batch_size: int = 8,
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
    records = []
    label = positions_label(positions)
    for mult in tqdm(list(multipliers), desc="KL", disable=not progress, leave=False):
        m = check_multiplier(mult)
        total, count = 0.0, 0
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            ids, mask = pad_rows([([], s) for s in chunk], pad, device)
            base = torch.log_softmax(model(ids).float(), -1)
            hooks = vector.fwd_hooks(m, positions)
            set_prompt_ends(hooks, torch.tensor([len(s) - 1 for s in chunk]))
            steer = torch.log_softmax(model.run_with_hooks(ids, fwd_hooks=hooks).float(), -1)
            kl = (base.exp() * (base - steer)).sum(-1)
            total += float(kl[mask].sum())
            count += int(mask.sum())
        records.append(
            {"multiplier": m, "kl": total / max(count, 1), "tokens": count, "positions": label}
        )
    return pd.DataFrame.from_records(records)
