"""RePS: Reference-free Preference Steering (Wu et al. 2025, arXiv 2505.20809), beside BiPO.

For a prompt x, the behaviour-matching answer y_c (the paper's steered response) and the
opposite answer y (its original response), each step minimises

    ( -log sigmoid(Delta+) - log sigmoid(Delta-) ) / 2

    Delta+ = beta+ * log p+(y_c|x) / |x y_c|  -  log p+(y|x) / |x y|
             steered by  h <- h + alpha * v           (alpha > 0 drawn from ``factors``)
    Delta- = beta- * log p-(y|x) / |x y|  -  log p-(y_c|x) / |x y_c|
             nulled by   h <- h - relu(h . v) / |v|^2 * v
    beta+  = max(s * (log p(y|x) - log p(y_c|x)), 1)
    beta-  = max(s * (log p(y_c|x) - log p(y|x)), 1)

with log-probs summed over answer tokens, ``|x r|`` the length of the whole row (prompt and
answer, as the attention mask counts it), ``p`` the unsteered model (computed once, like
BiPO's reference) and ``s`` = ``RePSConfig.beta_scale`` (1.0). Unlike BiPO there is no
reference log-ratio inside Delta (reference-free, after SimPO), and the two directions are
asymmetric: towards the behaviour by adding the vector, away from it by removing the vector's
positive component from the residual stream.

Sources. The paper (arXiv 2505.20809, section 3: the RePS objective) and the authors' code
as released with AxBench; the file read for this module is the copy in the public fork
``clarenceluo78/axbench`` (``preference_model.py`` at commit 228969a, the other two files at
027dcfb), because the ``stanfordnlp/axbench`` copy in the
index this was built from lacks the preference-model files:

* ``axbench/models/preference_model.py``, ``preference_loss`` (from line 68; the
  ``ref_logratios_reverse`` at line 103, the ``loss_type == "scaled_simpo"`` branch at lines
  117-121): ``max(ref_logratios_reverse * simpo_scaler, 1) / winning_lens *
  policy_chosen_logps - 1 / losing_lens * policy_rejected_logps`` inside ``-logsigmoid``;
  ``ref_logratios_reverse = reference_rejected_logps - reference_chosen_logps``; log-probs
  from ``_get_batch_logps(..., average_log_prob=False)`` (sums); ``winning_lens =
  attention_mask.sum(-1)`` (whole rows), both in ``PreferenceModel.train``; the loss is the
  mean over all rows of the batch, "add" and "sub" examples together (hence the ``/ 2``
  here).
* ``axbench/models/interventions.py``, ``PreferenceVectorIntervention.forward``: ``h +
  factor * v`` for a non-zero factor; factor 0 ("null it out" training) gives ``h -
  relu(h . v) / |v|^2 * v``.
* ``axbench/scripts/args/training_args.py``: defaults ``loss_type="scaled_simpo"``,
  ``simpo_scaler=1.0`` (``beta_scale`` here), ``substraction_type="null_it_out"``,
  ``max_grad_norm=1.0``.

What could not be settled, and the choices made:

* The intervention's learned scalar bias (``proj.bias``, added to the factor and inside the
  relu) is left out: a steerlens vector is a direction and a norm, nothing else.
* Factors: the code draws one per example row (``random.choice(steering_factors)``);
  here one is drawn per step from ``RePSConfig.factors`` and shared by the pair, because both
  answers continue one packed prompt. The values for this setting are not given; (1, 2, 4)
  by default.
* Initialisation: the code starts from ``nn.Linear``'s random weights; here from zero, like
  BiPO (at v = 0 the nulling term is exactly h).
* Positions: every position (prompt and answer), as BiPO; AxBench's own intervention sites
  depend on its data module.

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

from steerlens.core.data import PreferencePair
from steerlens.core.encoding import EncodedPair
from steerlens.core.errors import ConfigError
from steerlens.core.logprobs import batch_logprobs
from steerlens.methods.bipo import BiPOTrainer
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.objective import LogprobsFn
from steerlens.steering.hookpoints import SteerHook
from steerlens.steering.interventions import clamp_along
from steerlens.steering.vector import SteeringVector


@dataclass
class RePSConfig(BiPOConfig):
    """Settings of :func:`train_reps`: BiPO's (lr, schedule, batch, clipping, ...) plus
    ``factors``, the positive steering factors alpha drawn from at each step, and
    ``beta_scale`` (the authors' ``simpo_scaler``, 1.0). ``beta`` is not used (RePS scales by
    beta+ and beta- computed from the unsteered model).

    Examples:
        >>> RePSConfig(epochs=2).factors
        (1.0, 2.0, 4.0)
    """

    factors: tuple[float, ...] = (1.0, 2.0, 4.0)
    beta_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.factors = tuple(float(f) for f in self.factors)
        if not self.factors or any(not (f > 0) for f in self.factors):
            raise ConfigError(f"RePSConfig.factors must be positive numbers, got {self.factors!r}")
        if not (isinstance(self.beta_scale, (int, float)) and self.beta_scale > 0):
            raise ConfigError(f"RePSConfig.beta_scale must be > 0, got {self.beta_scale!r}")


class NullHook:
    """Removes the positive component along ``vector``: ``h - relu(h . v) / |v|^2 * v``
    (AxBench's ``PreferenceVectorIntervention`` at factor 0). At v = 0 it leaves h alone.
    It is the projection cap ``Cap(v, max=0)`` of :mod:`steerlens.steering.interventions` (one form,
    :func:`~steerlens.steering.interventions.clamp_along`, serves both).

    Examples:
        >>> import torch
        >>> NullHook(torch.tensor([2.0, 0.0]))(torch.tensor([[3.0, 1.0], [-3.0, 1.0]]), None)
        tensor([[ 0.,  1.],
                [-3.,  1.]])
    """

    def __init__(self, vector: Tensor) -> None:
        self.vector = vector

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        return clamp_along(act, self.vector.to(device=act.device, dtype=act.dtype), max=0.0)


def reps_loss(
    model: Any,
    batch: Sequence[EncodedPair],
    hook_names: Sequence[str],
    vectors: Sequence[Float[Tensor, " d_model"]],
    alpha: float,
    ref: Float[Tensor, "batch 2"],
    *,
    beta_scale: float = 1.0,
    logprobs_fn: LogprobsFn | None = None,
) -> tuple[Float[Tensor, ""], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """The RePS loss on one batch, and the per-pair ``Delta+`` and ``Delta-``.

    ``ref`` holds the unsteered summed ``[log p(y_c|x), log p(y|x)]`` per pair (matching,
    not matching); their difference times ``beta_scale`` sets beta+ and beta-.
    ``logprobs_fn(hooks)``, if given, replaces ``batch_logprobs(model, batch, hooks)`` (as in
    :func:`~steerlens.methods.objective.bipo_loss`).

    Examples:
        >>> import torch, steerlens as sl
        >>> from steerlens.core.encoding import encode_pairs
        >>> from steerlens.core.logprobs import pair_logprobs
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
    # whole rows, prompt and answer (the authors' attention_mask.sum(-1))
    n_c = torch.tensor([len(e.prompt) + len(e.matching) for e in batch], dtype=torch.float32)
    n_y = torch.tensor([len(e.prompt) + len(e.not_matching) for e in batch], dtype=torch.float32)
    steer = [
        (n, SteerHook(v, float(alpha), "all")) for n, v in zip(hook_names, vectors, strict=True)
    ]
    null = [(n, NullHook(v)) for n, v in zip(hook_names, vectors, strict=True)]
    score = logprobs_fn or (lambda hooks: batch_logprobs(model, batch, hooks))
    lp_plus = score(steer)
    lp_null = score(null)
    ref = ref.to(lp_plus.device, lp_plus.dtype)
    n_c, n_y = n_c.to(lp_plus.device), n_y.to(lp_plus.device)
    beta_plus = torch.clamp((ref[:, 1] - ref[:, 0]) * beta_scale, min=1.0)
    beta_minus = torch.clamp((ref[:, 0] - ref[:, 1]) * beta_scale, min=1.0)
    delta_plus = beta_plus * lp_plus[:b] / n_c - lp_plus[b:] / n_y
    delta_minus = beta_minus * lp_null[b:] / n_y - lp_null[:b] / n_c
    # the mean over the batch's "add" and "sub" examples together
    loss = (-F.logsigmoid(delta_plus) - F.logsigmoid(delta_minus)).mean() / 2
    return loss, delta_plus, delta_minus


class RePSTrainer(BiPOTrainer):
    """:class:`~steerlens.methods.bipo.BiPOTrainer` with the RePS objective: the same run object,
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
            beta_scale=self.cfg.beta_scale,  # type: ignore[attr-defined]
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

    Same arguments as :func:`~steerlens.methods.bipo.train_bipo`: checkpoints, exact resume and the
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
