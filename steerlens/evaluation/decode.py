"""Steered generation of many (prompt, vector, multiplier) rows in shared batches.

:func:`generate_rows` is the engine under :func:`steerlens.generate` and every open-ended
evaluator. Each row carries its own prompt, vector and multiplier; rows are sorted by prompt
length and cut into batches by :func:`steerlens.core.batching.plan_batches`, each batch is
left-padded and steered row by row (:class:`~steerlens.steering.rows.RowSteering`), and decoded
with the KV cache by the Hugging Face model's own ``generate``: through the native module
tree (:mod:`steerlens.steering.native`) where every hook in use has a checked equivalent there,
through the bridge otherwise.

Sampling is *paired*: row noise comes from a generator seeded by the row's own key
(``Sampling.seed``, prompt, sample), and a sampled token is ``argmax(logits / T + Gumbel)``
over the top-p set (the Gumbel-max trick: an exact draw from the softmax). A (prompt, sample)
therefore sees the same random draws at every multiplier and in any batch, so a steered and an
unsteered answer differ by the steering alone.

Examples:
    >>> import steerlens as sl
    >>> m = sl.tiny_model(n_layers=2)
    >>> tok = m.tokenizer
    >>> rows = [GenRow(tuple(tok("Hi")["input_ids"]), None, 0.0)] * 2
    >>> out = generate_rows(m, rows, max_new_tokens=3, eos_token_id=2)
    >>> len(out), out[0] == out[1]
    (2, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import NoneType
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.batching import plan_batches
from steerlens.core.errors import ConfigError
from steerlens.core.hooks import model_device, pad_token_id
from steerlens.steering.conditional import Conditional, ConditionReport
from steerlens.steering.hookpoints import Positions, steer_with
from steerlens.steering.interventions import Intervention
from steerlens.steering.native import can_run_native, native_hooks, native_model
from steerlens.steering.rows import RowSteering
from steerlens.steering.vector import SteeringVector


@dataclass(frozen=True)
class GenRow:
    """One row to generate: the prompt's token ids, its vector (None: unsteered), the
    multiplier, and the key of its random stream when sampling."""

    prompt: tuple[int, ...]
    vector: SteeringVector | Intervention | Conditional | None
    multiplier: float
    key: tuple[int, ...] = ()


@dataclass(frozen=True)
class DecodeOptions:
    """How rows are decoded: ``max_new_tokens``, temperature (0: greedy), ``top_p``, seed."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float | None = None
    seed: int = 0


class PairedSampler:
    """A ``transformers`` logits processor that turns greedy decoding into sampling with one
    random stream per row: temperature, then top-p (nucleus), then Gumbel noise drawn from
    the row's own generator. Its argmax is a draw from the filtered softmax."""

    def __init__(self, keys: Sequence[tuple[int, ...]], options: DecodeOptions) -> None:
        self.options = options
        self.generators = []
        for key in keys:
            seed = hash((options.seed, *key)) & 0x7FFF_FFFF_FFFF_FFFF
            self.generators.append(torch.Generator().manual_seed(seed))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logits = scores.float() / self.options.temperature
        top_p = self.options.top_p
        if top_p is not None and top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = torch.softmax(sorted_logits, dim=-1)
            # drop a token when the mass before it already reaches top_p (keeps at least one)
            drop = (probs.cumsum(-1) - probs) >= top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        u = torch.stack(
            [
                torch.rand(logits.shape[-1], generator=g, dtype=torch.float64)
                for g in self.generators
            ]
        ).to(logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
        return (logits.double() + gumbel).to(
            scores.dtype if scores.is_floating_point() else torch.float32
        )


def _generate_batch(
    model: Any,
    rows: Sequence[GenRow],
    options: DecodeOptions,
    positions: Positions,
    eos_token_id: int,
    backend: str,
) -> list[tuple[list[int], bool | None]]:
    from transformers import GenerationConfig

    device = model_device(model)
    pad = pad_token_id(model)
    width = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, width - len(r.prompt) :] = torch.tensor(r.prompt, dtype=torch.long)
        mask[j, width - len(r.prompt) :] = 1
    rule = next(
        (r.vector for r in rows
         if r.multiplier != 0 and not isinstance(r.vector, (SteeringVector, NoneType))),
        None,
    )  # fmt: skip
    report = None
    if rule is None:  # vectors: one row-to-vector table per hook
        vecs = [r.vector if isinstance(r.vector, SteeringVector) else None for r in rows]
        steering = RowSteering(vecs, [r.multiplier for r in rows])
        steering.check_model(model)
        hooks: list[tuple[str, Any]] = list(steering.fwd_hooks(positions))
    else:  # one intervention or conditional rule for the batch, a multiplier per row
        mults = [r.multiplier if r.vector is rule else 0.0 for r in rows]
        rule.check_model(model)
        if isinstance(rule, Conditional):
            report = ConditionReport()
            hooks = list(rule.fwd_hooks(mults, positions, report))
        else:
            hooks = list(rule.fwd_hooks(mults, positions))
    names = [n for n, _ in hooks]
    native = native_model(model) if backend != "bridge" else None
    use_native = native is not None and can_run_native(model, names)
    if backend == "native" and not use_native:
        raise ConfigError(
            "backend='native': this model or these hooks have no checked native equivalent "
            f"({', '.join(names) or 'no hooks'}); use backend='auto'"
        )
    config = GenerationConfig(
        max_new_tokens=options.max_new_tokens,
        do_sample=False,
        eos_token_id=eos_token_id,
        pad_token_id=pad,
        bos_token_id=getattr(model.tokenizer, "bos_token_id", None),
    )
    processors: Any = None
    if options.temperature > 0:
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList([PairedSampler([r.key for r in rows], options)])
    module = native.module if use_native and native is not None else model.original_model
    if use_native and native is not None:
        ctx: contextlib.AbstractContextManager[Any] = native_hooks(native, hooks)
    elif hooks:
        ctx = steer_with(model, hooks, track=model.original_model)
    else:
        ctx = contextlib.nullcontext()
    with torch.no_grad(), ctx:
        out = module.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=processors,
        )
    result = []
    met = report.decisions[0] if report is not None and report.decisions else None
    for j in range(len(rows)):
        new = out[j, width:].tolist()
        new = new[: new.index(eos_token_id)] if eos_token_id in new else new
        result.append((new, None if met is None or rows[j].vector is not rule else met[j]))
    return result


def generate_rows(
    model: Any,
    rows: Sequence[GenRow],
    *,
    max_new_tokens: int = 48,
    eos_token_id: int,
    positions: Positions = "all",
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    backend: str = "auto",
    progress: bool = False,
    decisions: list[bool | None] | None = None,
) -> list[list[int]]:
    """New token ids (the end-of-turn token and what follows it dropped) for every row.

    A row's ``vector`` is a :class:`~steerlens.steering.vector.SteeringVector`, None, an
    :class:`~steerlens.steering.interventions.Intervention` or a
    :class:`~steerlens.steering.conditional.Conditional`; rows of each intervention or rule are
    batched among themselves (vectors of any kind share batches). With ``decisions`` (a list), it is
    filled with each row's condition decision (None for rows without a rule).

    Args:
        backend: ``"auto"`` (the native tree where checked, else the bridge), ``"native"``
            (raise where it cannot be used) or ``"bridge"`` (always through the bridge's
            hook points).
        batch_size: at most this many rows per batch (default: the rule of
            :func:`steerlens.core.batching.plan_batches`).
    """
    if backend not in {"auto", "native", "bridge"}:
        raise ConfigError(f"backend must be 'auto', 'native' or 'bridge', got {backend!r}")
    options = DecodeOptions(max_new_tokens, float(temperature), top_p, seed)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        rule = not isinstance(r.vector, (SteeringVector, NoneType)) and r.multiplier != 0
        groups.setdefault(id(r.vector) if rule else 0, []).append(i)
    out: list[list[int]] = [[] for _ in rows]
    met: list[bool | None] = [None] * len(rows)
    bar = tqdm(total=len(rows), desc="generate", disable=not progress, leave=False)
    for members in groups.values():
        plan = plan_batches([len(rows[i].prompt) for i in members], max_new_tokens,
                            batch_size=batch_size, device=model_device(model))  # fmt: skip
        for part in plan:
            idx = [members[k] for k in part]
            new = _generate_batch(
                model, [rows[i] for i in idx], options, positions, eos_token_id, backend
            )
            for i, (toks, decided) in zip(idx, new, strict=True):
                out[i], met[i] = toks, decided
            bar.update(len(idx))
    bar.close()
    if decisions is not None:
        decisions[:] = met
    return out


__all__ = ["GenRow", "PairedSampler", "generate_rows"]
