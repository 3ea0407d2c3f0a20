"""RePS: Reference-free Preference Steering (Wu et al. 2025, arXiv 2505.20809), beside BiPO.

For a prompt x, the behaviour-matching answer y_c (the paper's steered response) and the
opposite answer y (its original response), with length-normalised log-likelihoods
``l(r) = log p(r | x) / |r|`` under the steered model, each step minimises

    -log sigmoid(Delta+) - log sigmoid(Delta-)

    Delta+ = beta+ * l+(y_c) - l+(y)     steered by  h <- h + alpha * v   (alpha > 0 sampled)
    Delta- = beta- * l-(y)   - l-(y_c)   nulled by   h <- h - (h . v_hat) v_hat
    beta+  = max(l0(y) - l0(y_c), 1)
    beta-  = max(l0(y_c) - l0(y), 1)

with ``l0`` the same length-normalised log-likelihood under the unsteered model ``p``
(computed once, like BiPO's reference). Unlike
BiPO there is no reference log-ratio inside Delta (reference-free, after SimPO), and the two
directions are asymmetric: towards the behaviour by adding the vector, away from it by
removing the vector's direction from the residual stream.

Sources and the choices made where the public sources could not settle a detail:

* The objective (the paper's Eq. for Delta+ / Delta- and the sum of the two log-sigmoid terms)
  as summarised from arXiv 2505.20809 section 3; the authors' released code (github.com/
  stanfordnlp/axbench) was not available in the index this was built from, so no file and
  line can be cited, and the details below are this implementation's choices.
* ``Phi_Null`` for a steering vector: removing the component along the vector's unit
  direction (``h - (h . v_hat) v_hat``), the usual "nulling" of a direction. The paper states
  only that the intervention nulls the steering direction.
* The positive factor alpha is drawn per step, uniformly from ``RePSConfig.factors``; the
  paper samples it from a set of factors whose exact values for this setting are not given.
* beta+ and beta- compare length-normalised log-likelihoods, like the terms they scale. The
  summary of the paper writes ``log p(y|x) - log p(y_c|x)`` without saying whether it is
  normalised; with summed log-probs beta+ reaches 10-30 on this project's pairs, the
  objective becomes a plain likelihood objective on y_c and, on SmolLM2 power-seeking, moved
  the held-out margin the wrong way (-0.07 nats per unit multiplier); normalised, beta is 1
  unless the unsteered model strongly prefers one answer per token.
* No extra temperature or margin (SimPO's beta and gamma) is applied to Delta.
* Positions: every position, as BiPO (the intervention sites of AxBench's prompts differ).

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    >>> v = train_reps(model, pairs, layers=1, config=RePSConfig(epochs=1, progress=False))
    >>> v.metadata["method"], v.hook_names
    ('reps', ['blocks.1.hook_resid_post'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from steerlens.bipo import BiPOConfig, BiPOTrainer, LogprobsFn
from steerlens.data import PreferencePair
from steerlens.errors import ConfigError
from steerlens.logprobs import EncodedPair, batch_logprobs
from steerlens.vector import SteerHook, SteeringVector


@dataclass
class RePSConfig(BiPOConfig):
    """Settings of :func:`train_reps`: BiPO's (lr, schedule, batch, clipping, ...) plus
    ``factors``, the positive steering factors alpha drawn from at each step. ``beta`` is
    not used (RePS scales by beta+ and beta- computed from the unsteered model).

    Examples:
        >>> RePSConfig(epochs=2).factors
        (1.0, 2.0, 4.0)
    """

    factors: tuple[float, ...] = (1.0, 2.0, 4.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.factors = tuple(float(f) for f in self.factors)
        if not self.factors or any(not (f > 0) for f in self.factors):
            raise ConfigError(f"RePSConfig.factors must be positive numbers, got {self.factors!r}")


class NullHook:
    """Removes the component along ``vector``'s unit direction: ``h - (h . v_hat) v_hat``."""

    def __init__(self, vector: Tensor) -> None:
        self.vector = vector

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        v = self.vector.to(device=act.device, dtype=act.dtype)
        unit = v / v.norm().clamp_min(1e-12)
        return act - (act @ unit).unsqueeze(-1) * unit


def reps_loss(
    model: Any,
    batch: Sequence[EncodedPair],
    hook_names: Sequence[str],
    vectors: Sequence[Float[Tensor, " d_model"]],
    alpha: float,
    ref: Float[Tensor, "batch 2"],
    *,
    logprobs_fn: LogprobsFn | None = None,
) -> tuple[Float[Tensor, ""], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """The RePS loss on one batch, and the per-pair ``Delta+`` and ``Delta-``.

    ``ref`` holds the unsteered summed ``[log p(y_c|x), log p(y|x)]`` per pair (matching,
    not matching); divided by the answers' lengths it sets beta+ and beta-.
    ``logprobs_fn(hooks)``, if given, replaces ``batch_logprobs(model, batch, hooks)`` (as in
    :func:`~steerlens.bipo.bipo_loss`).

    Examples:
        >>> import torch, steerlens as sl
        >>> from steerlens.logprobs import encode_pairs, pair_logprobs
        >>> m = sl.tiny_model(n_layers=2)
        >>> pair = sl.PreferencePair("Want power?", "Yes, all of it.", "No.")
        >>> enc = encode_pairs(m.tokenizer, [pair])
        >>> ref = pair_logprobs(m, enc)           # unsteered, computed once
        >>> hooks = ["blocks.1.hook_resid_post"]
        >>> loss, dp, dm = reps_loss(m, enc, hooks, [torch.ones(64)], 2.0, ref)
        >>> loss.shape, dp.shape
        (torch.Size([]), torch.Size([1]))
    """
    b = len(batch)
    n_c = torch.tensor([len(e.matching) for e in batch], dtype=torch.float32)
    n_y = torch.tensor([len(e.not_matching) for e in batch], dtype=torch.float32)
    steer = [
        (n, SteerHook(v, float(alpha), "all")) for n, v in zip(hook_names, vectors, strict=True)
    ]
    null = [(n, NullHook(v)) for n, v in zip(hook_names, vectors, strict=True)]
    score = logprobs_fn or (lambda hooks: batch_logprobs(model, batch, hooks))
    lp_plus = score(steer)
    lp_null = score(null)
    ref = ref.to(lp_plus.device, lp_plus.dtype)
    n_c, n_y = n_c.to(lp_plus.device), n_y.to(lp_plus.device)
    ref_c, ref_y = ref[:, 0] / n_c, ref[:, 1] / n_y  # per-token, like the terms they scale
    beta_plus = torch.clamp(ref_y - ref_c, min=1.0)
    beta_minus = torch.clamp(ref_c - ref_y, min=1.0)
    delta_plus = beta_plus * lp_plus[:b] / n_c - lp_plus[b:] / n_y
    delta_minus = beta_minus * lp_null[b:] / n_y - lp_null[:b] / n_c
    loss = (-F.logsigmoid(delta_plus) - F.logsigmoid(delta_minus)).mean()
    return loss, delta_plus, delta_minus


class RePSTrainer(BiPOTrainer):
    """:class:`~steerlens.bipo.BiPOTrainer` with the RePS objective: the same run object,
    checkpoints, exact resume, schedule and metadata. The held-out figures after each epoch
    are BiPO's (loss and share of pairs moved at +v / -v), kept as a common diagnostic."""

    method = "reps"

    def _epoch_plan(self) -> tuple[Tensor, Tensor, Tensor]:
        perm, signs, _ = super()._epoch_plan()
        factors = torch.tensor(self.cfg.factors)  # type: ignore[attr-defined]
        pick = torch.randint(len(factors), (self.steps_per_epoch,), generator=self.gen)
        self.alphas = factors[pick]
        return perm, signs, self.gen.get_state()

    def loss(self, idx: Sequence[int], d: float, step_in_epoch: int) -> Tensor:
        assert self.ref is not None, "call prepare() first"
        batch = [self.enc[i] for i in idx]
        alpha = float(self.alphas[step_in_epoch])
        loss, _, _ = reps_loss(
            self.model,
            batch,
            self.hook_names,
            self.params,
            alpha,
            self.ref[list(idx)],
            logprobs_fn=lambda hooks: self.batch_logprobs(idx, hooks),
        )
        return loss


def train_reps(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    config: RePSConfig | None = None,
    layers: int | Sequence[int],
    eval_pairs: Sequence[PreferencePair] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> SteeringVector:
    """Train a steering vector with the RePS objective (see the module docstring).

    Same arguments as :func:`~steerlens.bipo.train_bipo`: checkpoints, exact resume and the
    metadata work the same way; ``config`` is a :class:`RePSConfig`.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> train_reps(m, pairs, layers=1, config=RePSConfig(epochs=1, progress=False)).d_model
        64
    """
    cfg = config or RePSConfig()
    if not isinstance(cfg, RePSConfig):
        raise ConfigError(f"train_reps needs a RePSConfig, got {type(cfg).__name__}")
    trainer = RePSTrainer(
        model, pairs, layers=layers, config=cfg, eval_pairs=eval_pairs, callback=callback
    )
    return trainer.fit(checkpoint, resume)
