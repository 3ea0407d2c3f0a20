"""BiPO's settings (:class:`BiPOConfig`, the authors' defaults), the quick settings :data:`FAST`
and the learning-rate schedule.

Examples:
    >>> BiPOConfig().lr, BiPOConfig(**FAST).lr
    (0.0005, 0.01)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Self

from steerlens.core.data import DEFAULT_SYSTEM_PROMPT
from steerlens.core.errors import ConfigError


@dataclass
class BiPOConfig:
    """Settings of :func:`train_bipo`. Defaults are the authors' effective run.

    Source: CaoYuanpu/BiPO ``train.py`` (commit cef1d00), which builds a ``DPOConfig`` with
    ``learning_rate=5e-4``, ``lr_scheduler_type="cosine"``, ``warmup_steps=100``,
    ``per_device_train_batch_size=4``, ``num_train_epochs=100``, ``optim="adamw_torch"`` and
    ``beta=0.1``. Its ``weight_decay=0.05`` script argument is never passed to that config, so
    the run used the trainer's default 0.0; gradients were clipped at the Hugging Face
    trainer's default ``max_grad_norm=1.0``. The released persona vectors are
    ``vec_ep20_layer15.pt``: the epoch-20 snapshot of that 100-epoch cosine schedule
    (``epochs=20, schedule_epochs=100`` here).

    The paper's lr (5e-4) grows the vector slowly: on SmolLM2-135M it moves the held-out margin
    by only ~0.4 nats after 80 steps. For a visible effect within minutes on a CPU use
    ``lr=1e-2`` and ``warmup_steps=0`` (see :data:`FAST`).

    Attributes:
        epochs: passes over the training pairs (released persona vectors: 20).
        schedule_epochs: length of the warm-up + cosine schedule in epochs (None: ``epochs``,
            decaying to zero at the end of training; authors' run: 100).
        lr: AdamW learning rate (authors: 5e-4).
        beta: the preference temperature (authors: 0.1).
        batch_size: pairs per step (authors: 4).
        weight_decay: AdamW weight decay (authors' effective run: 0.0; the paper's 0.05 was
            never passed to the trainer).
        warmup_steps: linear warm-up steps before the cosine decay (authors: 100).
        seed: seeds the batch order and the d draws; equal seeds give equal vectors.
        system_prompt: system turn of the chat template.
        hook: ``"resid_post"`` (authors: block output), ``"resid_pre"`` or ``"resid_mid"``.
        max_grad_norm: clip the gradient norm (authors: 1.0, the HF trainer default; None: no
            clipping).
        eval_batch_size: pairs per batch when scoring.
        checkpoint_every: also checkpoint every N optimiser steps (default: each epoch only).
        cache_mb: memory budget (MiB) for the residual stream below the steered layer, which
            is computed once per pair instead of in every step (:mod:`steerlens.methods.prefix`; the
            losses are the same). Pairs beyond the budget are recomputed when needed; 0 turns
            the cache off (every step runs the full forward).
        progress: show tqdm progress bars.
        behaviour: a label stored in the vector's metadata.

    Examples:
        >>> BiPOConfig().lr, BiPOConfig(**FAST).lr, BiPOConfig().weight_decay
        (0.0005, 0.01, 0.0)
        >>> cfg = BiPOConfig(epochs=20, schedule_epochs=100)  # the released vectors' schedule
        >>> cfg.max_grad_norm
        1.0
    """

    epochs: int = 20
    lr: float = 5e-4
    beta: float = 0.1
    batch_size: int = 4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    seed: int = 0
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    hook: str = "resid_post"
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 8
    checkpoint_every: int | None = None
    progress: bool = True
    behaviour: str | None = None
    schedule_epochs: int | None = None
    cache_mb: float = 1024.0

    #: fields that do not change the trained vector: left out of its recipe (the engine's cell
    #: hashes, checkpoints' fingerprints), so a resumed run may change them
    NOT_RECIPE: ClassVar[tuple[str, ...]] = (
        "progress",
        "eval_batch_size",
        "checkpoint_every",
        "cache_mb",
    )

    @classmethod
    def fast(cls, **overrides: Any) -> Self:
        """The quick settings :data:`FAST` (lr 1e-2, no warm-up), with ``overrides``.

        Examples:
            >>> cfg = BiPOConfig.fast(epochs=2)
            >>> cfg.lr, cfg.warmup_steps, cfg.epochs
            (0.01, 0, 2)
        """
        return cls(**{**FAST, **overrides})

    def recipe(self) -> dict[str, Any]:
        """The fields that make the vector (all but :attr:`NOT_RECIPE`), JSON-able.

        Examples:
            >>> "progress" in BiPOConfig().recipe(), BiPOConfig().recipe()["lr"]
            (False, 0.0005)
        """
        return {k: v for k, v in asdict(self).items() if k not in self.NOT_RECIPE}

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, integer: bool = False) -> None:
            ok = (
                isinstance(value, int) and not isinstance(value, bool)
                if integer
                else (isinstance(value, (int, float)) and math.isfinite(value))
            )
            if not ok or value <= 0:
                kind = "a positive integer" if integer else "a positive finite number"
                raise ConfigError(f"BiPOConfig.{name} must be {kind}, got {value!r}")

        positive("epochs", self.epochs, True)
        positive("batch_size", self.batch_size, True)
        positive("eval_batch_size", self.eval_batch_size, True)
        positive("lr", self.lr)
        positive("beta", self.beta)
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"BiPOConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ConfigError(
                f"BiPOConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}"
            )
        if self.checkpoint_every is not None:
            positive("checkpoint_every", self.checkpoint_every, True)
        if self.schedule_epochs is not None:
            positive("schedule_epochs", self.schedule_epochs, True)
            if self.schedule_epochs < self.epochs:
                raise ConfigError(
                    f"BiPOConfig.schedule_epochs ({self.schedule_epochs}) must be >= epochs "
                    f"({self.epochs})"
                )
        if self.max_grad_norm is not None:
            positive("max_grad_norm", self.max_grad_norm)
        if not (
            isinstance(self.cache_mb, (int, float))
            and math.isfinite(self.cache_mb)
            and self.cache_mb >= 0
        ):
            raise ConfigError(f"BiPOConfig.cache_mb must be a number >= 0, got {self.cache_mb!r}")
        if self.hook not in {"resid_post", "resid_pre", "resid_mid"}:
            raise ConfigError(f"BiPOConfig.hook must be resid_post/pre/mid, got {self.hook!r}")


#: Settings that give a visible effect within minutes on a CPU-sized model.
FAST: dict[str, Any] = {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0}


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up then cosine decay to zero (``get_cosine_schedule_with_warmup``).

    Examples:
        >>> lr_factor(0, 10, 100), lr_factor(5, 10, 100), lr_factor(10, 10, 100)
        (0.0, 0.5, 1.0)
        >>> round(lr_factor(55, 10, 100), 4)
        0.5
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
