"""BiPO: Bi-directional Preference Optimization of a steering vector (Cao et al., NeurIPS 2024).

A vector v is added to the residual stream after block L (``blocks.L.hook_resid_post``) at every
position. Each optimiser step draws ``d`` from {-1, +1} once for the whole batch and minimises

    mean_batch( -log sigmoid( d * beta * z ) ),
    z = [log p_dv(r_T|x) - log p_0(r_T|x)] - [log p_dv(r_O|x) - log p_0(r_O|x)]

where ``p_dv`` is the model steered by ``d * v`` and ``p_0`` the unsteered model; log-probs are
summed over answer tokens (end-of-turn token included). ``p_0`` comes from the same model with no
hook, computed once before training.

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    >>> cfg = sl.BiPOConfig(epochs=1, lr=1e-2, warmup_steps=0, progress=False)
    >>> v = sl.train_bipo(model, pairs, layers=1, config=cfg)
    >>> v.hook_names, v.metadata["method"]
    (['blocks.1.hook_resid_post'], 'bipo')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.compat import deprecated_args
from steerlens.data import DEFAULT_SYSTEM_PROMPT, PreferencePair, check_overlap
from steerlens.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from steerlens.fileio import atomic_write, read_safetensors
from steerlens.hooks import check_hook_site, model_device, model_name, resid_hook
from steerlens.logprobs import (
    EncodedPair,
    Hooks,
    batch_logprobs,
    bucketed_logprobs,
    encode_pairs,
)
from steerlens.prefix import PrefixCache, floor_supported
from steerlens.vector import SteerHook, SteeringVector

#: computes one batch's ``[matching_1..B, not_matching_1..B]`` log-probs under some hooks
LogprobsFn = Callable[[Hooks], Tensor]


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
            is computed once per pair instead of in every step (:mod:`steerlens.prefix`; the
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


def bipo_loss(
    model: Any,
    batch: Sequence[EncodedPair],
    hook_names: Sequence[str],
    vectors: Sequence[Float[Tensor, " d_model"]],
    d: float,
    beta: float,
    ref: Float[Tensor, "batch 2"],
    share_prompt: bool = True,
    *,
    logprobs_fn: LogprobsFn | None = None,
) -> tuple[Float[Tensor, ""], Float[Tensor, " batch"]]:
    """The BiPO loss on one batch of encoded pairs, and the per-pair ``z``.

    ``ref`` holds the unsteered ``[log p_0(r_T|x), log p_0(r_O|x)]`` per pair. With
    ``share_prompt`` both answers of a pair continue one steered prompt (one packed row, see
    :func:`~steerlens.logprobs.batch_logprobs`); the loss is the same. ``logprobs_fn(hooks)``,
    if given, computes the batch's steered log-probs instead of ``batch_logprobs`` (the
    trainer passes :meth:`steerlens.prefix.PrefixCache.logprobs`, which starts at the steered
    layer).

    Examples:
        >>> import torch, steerlens as sl
        >>> from steerlens.logprobs import encode_pairs, pair_logprobs
        >>> m = sl.tiny_model(n_layers=2)
        >>> enc = encode_pairs(m.tokenizer, [sl.PreferencePair("Q?", "Yes.", "No.")])
        >>> v = torch.zeros(64, requires_grad=True)
        >>> loss, z = bipo_loss(m, enc, ["blocks.1.hook_resid_post"], [v], 1.0, 0.1,
        ...                     pair_logprobs(m, enc))
        >>> round(loss.item(), 4)  # v = 0: z = 0 and the loss is log 2
        0.6931
    """
    hooks = [(n, SteerHook(v, float(d), "all")) for n, v in zip(hook_names, vectors, strict=True)]
    if logprobs_fn is not None:
        lp = logprobs_fn(hooks)
    else:
        lp = batch_logprobs(model, batch, hooks, share_prompt)
    b = ref.shape[0]
    ref = ref.to(lp.device, lp.dtype)
    z = (lp[:b] - ref[:, 0]) - (lp[b:] - ref[:, 1])
    loss = -F.logsigmoid(d * beta * z).mean()
    return loss, z


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Turn off ``requires_grad`` on every model parameter, restoring it afterwards."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _fingerprint(pairs: Sequence[PreferencePair], hooks: Sequence[str], cfg: BiPOConfig) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.question, p.matching, p.not_matching]).encode())
    # settings that do not change the result stay out (a resumed run may change them)
    skip = {"progress", "checkpoint_every", "cache_mb"}
    keep = {k: v for k, v in asdict(cfg).items() if k not in skip}
    h.update(json.dumps([list(hooks), keep], sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


@dataclass
class _State:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_rng: Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _save_checkpoint(
    path: Path,
    params: Sequence[Tensor],
    hook_names: Sequence[str],
    opt: torch.optim.Optimizer,
    state: _State,
    fingerprint: str,
) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    for name, p in zip(hook_names, params, strict=True):
        tensors[f"vector::{name}"] = p.detach().cpu().clone()
    opt_state = opt.state_dict()["state"]
    for i in range(len(params)):
        for key, value in opt_state.get(i, {}).items():
            t = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"opt::{i}::{key}"] = t.detach().cpu().clone().reshape(-1)
    assert state.epoch_rng is not None
    tensors["rng::epoch"] = state.epoch_rng.clone()
    meta = {
        "steerlens_checkpoint": "1",
        "fingerprint": fingerprint,
        "hooks": json.dumps(list(hook_names)),
        "epoch": str(state.epoch),
        "step_in_epoch": str(state.step_in_epoch),
        "global_step": str(state.global_step),
        "epoch_loss_sum": repr(state.epoch_loss_sum),
        "seconds": repr(state.seconds),
        "history": json.dumps(state.history),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _load_checkpoint(
    path: Path,
    params: Sequence[Tensor],
    hook_names: Sequence[str],
    opt: torch.optim.Optimizer,
    fingerprint: str,
) -> _State:
    tensors, meta = read_safetensors(path, CheckpointError, "a readable checkpoint")
    if meta.get("steerlens_checkpoint") != "1":
        raise CheckpointError(f"{path}: not a steerlens BiPO checkpoint")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path}: the checkpoint belongs to another run (different data, layers or "
            "settings); start a new run or pass the same arguments"
        )
    with torch.no_grad():
        for name, p in zip(hook_names, params, strict=True):
            p.copy_(tensors[f"vector::{name}"])
    opt_state: dict[int, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("opt::"):
            _, i, k = key.split("::")
            opt_state.setdefault(int(i), {})[k] = t.reshape(()) if k == "step" else t
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    return _State(
        epoch=int(meta["epoch"]),
        step_in_epoch=int(meta["step_in_epoch"]),
        global_step=int(meta["global_step"]),
        epoch_loss_sum=float(meta["epoch_loss_sum"]),
        epoch_rng=tensors["rng::epoch"],
        history=json.loads(meta["history"]),
        seconds=float(meta["seconds"]),
    )


@torch.no_grad()
def _evaluate(
    score: Callable[[Callable[[], Hooks] | None], Tensor],
    ref: Tensor,
    hook_names: Sequence[str],
    params: Sequence[Tensor],
    cfg: BiPOConfig,
) -> dict[str, float]:
    """Held-out figures at +v and -v; ``score(factory)`` gives the ``[n, 2]`` log-probs."""
    out: dict[str, float] = {}
    for d, tag in ((1.0, "plus"), (-1.0, "minus")):

        def factory(d: float = d) -> list[tuple[str, SteerHook]]:
            return [(n, SteerHook(p, d, "all")) for n, p in zip(hook_names, params, strict=True)]

        lp = score(factory)
        z = (lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1])
        out[f"eval_loss_{tag}"] = float(-F.logsigmoid(d * cfg.beta * z).mean())
        # share of held-out pairs the steered model moved the right way relative to the
        # unsteered one (z > 0 at +v, z < 0 at -v): BiPO's own objective, not a task accuracy
        out[f"eval_moved_{tag}"] = float(((d * z) > 0).float().mean())
        out[f"eval_margin_{tag}"] = float((lp[:, 0] - lp[:, 1]).mean())
    out["eval_margin_0"] = float((ref[:, 0] - ref[:, 1]).mean())
    return out


class BiPOTrainer:
    """One BiPO run as an object (the shape of SAELens' trainer): :meth:`fit` runs it, one
    :meth:`step` is one optimiser step, :meth:`end_epoch` scores and records an epoch, and
    :meth:`save_checkpoint` / :meth:`load_checkpoint` make it resumable bit for bit.

    :func:`train_bipo` is ``BiPOTrainer(...).fit(checkpoint, resume)``.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> trainer = BiPOTrainer(m, pairs, layers=1, config=BiPOConfig(epochs=1, progress=False))
        >>> trainer.fit().metadata["steps"], trainer.state.epoch
        (1, 1)
    """

    def __init__(
        self,
        model: Any,
        pairs: Sequence[PreferencePair],
        *,
        layers: int | Sequence[int],
        config: BiPOConfig | None = None,
        eval_pairs: Sequence[PreferencePair] | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg = config or BiPOConfig()
        if not pairs:
            raise DataError("train_bipo needs at least one preference pair")
        for i, p in enumerate(pairs):
            if not isinstance(p, PreferencePair):
                raise DataError(f"pairs[{i}] is a {type(p).__name__}, not a PreferencePair")
        layer_list = [layers] if isinstance(layers, int) else list(layers)
        if not layer_list:
            raise ConfigError("layers must be an int or a non-empty list of ints")
        where = check_hook_site(cfg.hook)
        self.hook_names = [resid_hook(model, lyr, where) for lyr in layer_list]
        if len(set(self.hook_names)) != len(self.hook_names):
            raise ConfigError(f"duplicate layers in {layer_list}")
        if eval_pairs:
            check_overlap(pairs, eval_pairs)
        self.model = model
        self.callback = callback
        tok = model.tokenizer
        self.enc = encode_pairs(tok, pairs, cfg.system_prompt)
        self.eval_enc = encode_pairs(tok, eval_pairs, cfg.system_prompt) if eval_pairs else []
        self.encoded = [*self.enc, *self.eval_enc]  # indices: training pairs, then held-out
        self.steps_per_epoch = math.ceil(len(self.enc) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.schedule_steps = self.steps_per_epoch * (cfg.schedule_epochs or cfg.epochs)
        self.fingerprint = _fingerprint(pairs, self.hook_names, cfg)
        width, device = int(model.cfg.d_model), model_device(model)
        self.params = [
            torch.zeros(width, device=device, requires_grad=True) for _ in self.hook_names
        ]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.state = _State(epoch_rng=self.gen.get_state())
        self.ref: Tensor | None = None
        self.eval_ref: Tensor | None = None
        self.prefix: PrefixCache | None = None
        self.last_good = [p.detach().clone() for p in self.params]

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Vector, AdamW state, counters and RNG state, atomically (safetensors)."""
        _save_checkpoint(
            Path(path), self.params, self.hook_names, self.opt, self.state, self.fingerprint
        )

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Continue from a checkpoint of this same run (same data, layers and settings)."""
        self.state = _load_checkpoint(
            Path(path), self.params, self.hook_names, self.opt, self.fingerprint
        )

    # ------------------------------------------------------------------ training
    def prepare(self) -> None:
        """Once per run: the residual stream below the steered layer (when the model allows
        it, within ``cache_mb``) and the unsteered reference log-probs of the training (and
        held-out) pairs."""
        cfg = self.cfg
        self.prefix = None
        if cfg.cache_mb > 0 and floor_supported(self.model, self.hook_names):
            self.prefix = PrefixCache(
                self.model,
                self.encoded,
                self.hook_names,
                budget_mb=cfg.cache_mb,
                batch_size=cfg.eval_batch_size,
            )
        self.ref = self.pair_logprobs(range(len(self.enc)), None, "reference")
        if self.eval_enc:
            n = len(self.enc)
            self.eval_ref = self.pair_logprobs(range(n, n + len(self.eval_enc)), None, "reference")

    def batch_logprobs(self, idx: Sequence[int], hooks: Hooks) -> Tensor:
        """``[matching_1..B, not_matching_1..B]`` log-probs of pairs ``idx`` (indices into
        the training pairs, then the held-out ones) steered by ``hooks``: from the cached
        residual when there is one, else a full forward. Differentiable."""
        if self.prefix is not None:
            return self.prefix.logprobs(idx, hooks)
        return batch_logprobs(self.model, [self.encoded[i] for i in idx], hooks)

    def pair_logprobs(
        self,
        indices: Sequence[int],
        factory: Callable[[], Hooks] | None,
        desc: str | None = None,
    ) -> Tensor:
        """``[n, 2]`` log-probs of the pairs ``indices``, batched by length, no gradient."""
        indices = list(indices)
        return bucketed_logprobs(
            [self.encoded[i].length for i in indices],
            lambda chunk, hooks: self.batch_logprobs([indices[j] for j in chunk], hooks),
            factory,
            self.cfg.eval_batch_size,
            self.cfg.progress and desc is not None,
            desc or "log-probs",
        )

    #: the ``method`` recorded in the vector's metadata
    method = "bipo"

    def loss(self, idx: Sequence[int], d: float, step_in_epoch: int) -> Tensor:
        """The objective on the pairs ``idx``: BiPO's loss steered by ``d * v``."""
        assert self.ref is not None, "call prepare() first"
        batch = [self.enc[i] for i in idx]
        loss, _ = bipo_loss(
            self.model,
            batch,
            self.hook_names,
            self.params,
            d,
            self.cfg.beta,
            self.ref[list(idx)],
            logprobs_fn=lambda hooks: self.batch_logprobs(idx, hooks),
        )
        return loss

    def step(self, idx: Sequence[int], d: float, step_in_epoch: int = 0) -> float:
        """One optimiser step on the pairs ``idx`` (direction ``d``); returns the loss."""
        cfg, state = self.cfg, self.state
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(
                state.global_step, cfg.warmup_steps, self.schedule_steps
            )
        loss = self.loss(idx, d, step_in_epoch)
        if not torch.isfinite(loss):
            raise _diverged(self.last_good, self.hook_names, state.global_step, loss.item())
        self.last_good = [p.detach().clone() for p in self.params]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.opt.step()
        if not all(bool(torch.isfinite(t).all()) for t in self.params):
            with torch.no_grad():
                for t, g in zip(self.params, self.last_good, strict=True):
                    t.copy_(g)
            raise _diverged(self.last_good, self.hook_names, state.global_step, float("nan"))
        state.global_step += 1
        state.epoch_loss_sum += loss.item()
        return float(loss.item())

    def end_epoch(self, started: float) -> dict[str, Any]:
        """Score the held-out pairs, append the epoch's record to the history, advance
        (``started``: the ``time.perf_counter()`` at which the epoch's timing began)."""
        state = self.state
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "train_loss": state.epoch_loss_sum / self.steps_per_epoch,
            "norm": float(torch.stack([p.detach().norm() for p in self.params]).norm()),
        }
        if self.eval_enc and self.eval_ref is not None:
            n = len(self.enc)
            held_out = range(n, n + len(self.eval_enc))
            record.update(
                _evaluate(
                    lambda factory: self.pair_logprobs(held_out, factory),
                    self.eval_ref,
                    self.hook_names,
                    self.params,
                    self.cfg,
                )
            )
        state.seconds += time.perf_counter() - started
        record["seconds"] = state.seconds
        state.history.append(record)
        state.epoch += 1
        state.step_in_epoch = 0
        state.epoch_loss_sum = 0.0
        return record

    def _epoch_plan(self) -> tuple[Tensor, Tensor, Tensor]:
        """This epoch's pair order and directions, drawn from the saved RNG state."""
        assert self.state.epoch_rng is not None
        self.gen.set_state(self.state.epoch_rng)
        perm = torch.randperm(len(self.enc), generator=self.gen)
        signs = torch.randint(0, 2, (self.steps_per_epoch,), generator=self.gen) * 2 - 1
        return perm, signs, self.gen.get_state()

    def fit(
        self, checkpoint: str | os.PathLike[str] | None = None, resume: bool = False
    ) -> SteeringVector:
        """Run (or continue) the training; checkpoints after each epoch and every
        ``checkpoint_every`` steps when ``checkpoint`` is given."""
        cfg, state = self.cfg, self.state
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if resume and ckpt is None:
            raise ConfigError("resume=True needs checkpoint=PATH")
        if resume and ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)
            state = self.state
        with frozen(self.model):
            self.prepare()
            bar = tqdm(
                total=self.total_steps,
                initial=state.global_step,
                desc="BiPO",
                disable=not cfg.progress,
            )
            try:
                for epoch in range(state.epoch, cfg.epochs):
                    t0 = time.perf_counter()
                    perm, signs, next_rng = self._epoch_plan()
                    for s in range(state.step_in_epoch, self.steps_per_epoch):
                        idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size].tolist()
                        d = float(signs[s])
                        loss = self.step(idx, d, s)
                        state.step_in_epoch = s + 1
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, d=int(d), loss=f"{loss:.4f}")
                        if self.callback is not None:
                            self.callback(
                                {
                                    "step": state.global_step,
                                    "epoch": epoch + 1,
                                    "d": d,
                                    "loss": loss,
                                    "lr": self.opt.param_groups[0]["lr"],
                                }
                            )
                        if (
                            ckpt is not None
                            and cfg.checkpoint_every
                            and state.global_step % cfg.checkpoint_every == 0
                            and s + 1 < self.steps_per_epoch
                        ):
                            state.seconds += time.perf_counter() - t0
                            t0 = time.perf_counter()
                            self.save_checkpoint(ckpt)
                    record = self.end_epoch(t0)
                    state.epoch_rng = next_rng
                    if ckpt is not None:
                        self.save_checkpoint(ckpt)
                    if cfg.progress and self.eval_enc:
                        bar.write(_epoch_line(record))
            finally:
                bar.close()
                self.prefix = None  # the cache lives as long as one fit (prepare() refills it)
        return self.vector()

    def vector(self) -> SteeringVector:
        """The vector as trained so far, with the run's settings and history as metadata."""
        vectors = {n: p.detach().clone() for n, p in zip(self.hook_names, self.params, strict=True)}
        meta = {
            "method": self.method,
            "model": model_name(self.model),
            "d_model": int(self.model.cfg.d_model),
            "n_layers": int(self.model.cfg.n_layers),
            "behaviour": self.cfg.behaviour,
            "layers": [int(h.split(".")[1]) for h in self.hook_names],
            "hooks": self.hook_names,
            "config": asdict(self.cfg),
            "n_train": len(self.enc),
            "n_eval": len(self.eval_enc),
            "steps": self.state.global_step,
            "seconds": self.state.seconds,
            "history": self.state.history,
        }
        return SteeringVector(vectors, meta)


def _epoch_line(record: dict[str, Any]) -> str:
    return (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} | held-out "
        f"loss +v {record['eval_loss_plus']:.4f} -v {record['eval_loss_minus']:.4f}"
        f" | pairs moved the right way +v {record['eval_moved_plus']:.2f}"
        f" -v {record['eval_moved_minus']:.2f}"
    )


@deprecated_args(renamed={"layer": "layers"})
def train_bipo(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    layers: int | Sequence[int],
    config: BiPOConfig | None = None,
    eval_pairs: Sequence[PreferencePair] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> SteeringVector:
    """Train a BiPO steering vector.

    Args:
        model: a hooked model (``sl.load_model()``); its weights are not changed.
        pairs: training :class:`~steerlens.data.PreferencePair` list.
        layers: block index (negative counts from the end) or a list of them; one vector per
            layer, trained jointly (all steered by the same ``d``).
        config: :class:`BiPOConfig` (paper defaults).
        eval_pairs: held-out pairs, scored after each epoch: loss at d=+1/-1,
            ``eval_moved_plus``/``_minus`` (share of pairs whose log-ratio z moved the right way:
            z > 0 at +v, z < 0 at -v) and the margin log p(matching) - log p(not matching).
        checkpoint: file to write after each epoch (and every ``checkpoint_every`` steps),
            atomically; holds the vector, AdamW state, step counters and RNG state.
        resume: continue from ``checkpoint`` if it exists; the result equals an uninterrupted run.
        callback: called after every optimiser step with ``{"step", "epoch", "d", "loss",
            "lr"}`` (for logging or benchmarks).

    Returns:
        A :class:`~steerlens.vector.SteeringVector` whose metadata records the full config, the
        per-epoch history and timings.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (``err.vector`` is the last good vector).
        CheckpointError: ``resume`` with a checkpoint of another run.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> v = train_bipo(m, pairs, layers=-1, config=BiPOConfig(epochs=1, progress=False))
        >>> v.hook_names, v.metadata["steps"]
        (['blocks.1.hook_resid_post'], 1)
    """
    trainer = BiPOTrainer(
        model, pairs, layers=layers, config=config, eval_pairs=eval_pairs, callback=callback
    )
    return trainer.fit(checkpoint, resume)


def _diverged(
    good: Sequence[Tensor], hook_names: Sequence[str], step: int, value: float
) -> TrainingDivergedError:
    last = None
    if all(bool(torch.isfinite(g).all()) for g in good):
        last = SteeringVector(dict(zip(hook_names, good, strict=True)), {"method": "bipo"})
    return TrainingDivergedError(
        f"BiPO loss became {value} at step {step}; lower the learning rate or beta. "
        "The last good vector is in err.vector (and in the last checkpoint, if any).",
        vector=last,
        step=step,
    )
