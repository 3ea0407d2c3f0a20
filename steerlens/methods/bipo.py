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

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.compat import deprecated_args
from steerlens.core.data import PreferencePair, check_overlap
from steerlens.core.encoding import encode_pairs
from steerlens.core.errors import ConfigError, DataError, TrainingDivergedError
from steerlens.core.hooks import check_hook_site, model_device, model_name, resid_hook
from steerlens.core.logprobs import Hooks, batch_logprobs, bucketed_logprobs
from steerlens.methods.bipo_config import BiPOConfig, lr_factor
from steerlens.methods.checkpoint import TrainState, fingerprint, load_checkpoint, save_checkpoint
from steerlens.methods.objective import bipo_loss, frozen
from steerlens.methods.prefix import PrefixCache, floor_supported
from steerlens.steering.hookpoints import SteerHook
from steerlens.steering.vector import SteeringVector


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
        self.fingerprint = fingerprint(pairs, self.hook_names, cfg)
        width, device = int(model.cfg.d_model), model_device(model)
        self.params = [
            torch.zeros(width, device=device, requires_grad=True) for _ in self.hook_names
        ]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState(epoch_rng=self.gen.get_state())
        self.ref: Tensor | None = None
        self.eval_ref: Tensor | None = None
        self.prefix: PrefixCache | None = None
        self.last_good = [p.detach().clone() for p in self.params]

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Vector, AdamW state, counters and RNG state, atomically (safetensors)."""
        save_checkpoint(
            Path(path), self.params, self.hook_names, self.opt, self.state, self.fingerprint
        )

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Continue from a checkpoint of this same run (same data, layers and settings)."""
        self.state = load_checkpoint(
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
        pairs: training :class:`~steerlens.core.data.PreferencePair` list.
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
        A :class:`~steerlens.steering.vector.SteeringVector` whose metadata records the full config,
        the per-epoch history and timings.

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
