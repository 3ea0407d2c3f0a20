"""Conditional steering (CAST: Lee et al., ICLR 2025, "Programming Refusal with Conditional
Activation Steering"; code IBM/activation-steering), decided per row.

A :class:`Condition` is checked once per prompt, at prefill: the row's activation at the
condition hook, pooled over its prompt tokens (``"mean"``, IBM's default, or ``"last"``), is
compared with its projection onto the condition direction c, as IBM's ``LeashLayer`` does
(``leash_layer.py`` at d5f4412, ``_process_single_condition`` and ``compute_similarity``)::

    similarity = cos(h, tanh(P h)),   P = c c^T / (c . c)

and the condition holds when ``similarity < threshold`` for ``threshold_is="larger"`` and when
``similarity > threshold`` for ``threshold_is="smaller"`` (IBM's parameter
``condition_comparator_threshold_is``, same words, same meaning: the threshold is larger or
smaller than the similarity). Where IBM keeps one decision in class state and checks only the
first row of a batch, steerlens decides each row by itself and keeps that row's decision
through decoding and the KV cache; a row whose condition fails is bit-identical to the
unsteered model. The behaviour (an :class:`~steerlens.steering.interventions.Intervention` or a
:class:`~steerlens.steering.vector.SteeringVector`) must act after the condition point in the
forward pass (a later block, or a later hook of the same block), so that the prefill itself is
steered
or not by its own row's decision.

:func:`search_condition` is IBM's ``find_best_condition_point`` grid (layers x thresholds x
comparators, best F1; CAST appendix C.2) on pooled activations, with the direction fitted on
one split, the point chosen on a second and its F1 reported on a third.

Examples:
    >>> import torch, steerlens as sl
    >>> m = sl.tiny_model(n_layers=3, d_model=32)
    >>> c = Condition("blocks.0.hook_resid_post", torch.ones(32), threshold=0.5)
    >>> rule = Conditional(c, sl.SteeringVector({"blocks.2.hook_resid_post": torch.ones(32)}))
    >>> with rule.apply(m) as report:
    ...     out = m(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    >>> len(report.decisions[0])
    2
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.batching import plan_batches
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT
from steerlens.core.encoding import encode_prompt, pad_rows
from steerlens.core.errors import ConfigError
from steerlens.core.hooks import model_device, pad_token_id
from steerlens.steering.activations import read_activations
from steerlens.steering.hookpoints import PositionalHook, Positions, steer_with
from steerlens.steering.interventions import Intervention
from steerlens.steering.vector import SteeringVector

Comparator = Literal["larger", "smaller"]
_SITE_ORDER = {"hook_resid_pre": 0, "hook_attn_out": 1, "hook_resid_mid": 2, "hook_mlp_out": 3,
               "hook_resid_post": 4}  # fmt: skip


def hook_order(name: str) -> tuple[int, int]:
    """Where a residual hook fires in the forward pass: ``(block, place in the block)``.

    Examples:
        >>> hook_order("blocks.3.hook_resid_pre") < hook_order("blocks.3.hook_resid_post")
        True
    """
    m = re.match(r"^blocks\.(\d+)\.(hook_\w+)$", name)
    if m is None or m.group(2) not in _SITE_ORDER:
        raise ConfigError(
            f"conditional steering needs residual-stream hooks (blocks.N.hook_resid_pre/mid/post,"
            f" hook_attn_out, hook_mlp_out); got {name!r}"
        )
    return int(m.group(1)), _SITE_ORDER[m.group(2)]


def similarity(
    h: Float[Tensor, "rows d_model"], direction: Float[Tensor, " d_model"]
) -> Float[Tensor, " rows"]:
    """IBM's condition similarity ``cos(h, tanh(P h))`` with ``P = c c^T / (c . c)``.

    Examples:
        >>> c = torch.tensor([1.0, 0.0])
        >>> similarity(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), c).tolist()
        [1.0, 0.0]
    """
    c = direction.to(h)
    proj = torch.tanh((h @ c)[:, None] * c / (c @ c))
    denom = h.norm(dim=-1) * proj.norm(dim=-1)
    return torch.where(denom > 0, (h * proj).sum(-1) / denom.clamp_min(1e-30), 0.0)


@dataclass(frozen=True)
class Condition:
    """When to steer a row: its pooled prompt activation at ``hook`` against ``direction``.

    Attributes:
        hook: a residual-stream hook name, e.g. ``blocks.7.hook_resid_pre`` (IBM checks a
            layer's input).
        direction: the condition direction c.
        threshold: compared with :func:`similarity`.
        threshold_is: ``"larger"`` (holds when similarity < threshold) or ``"smaller"``
            (holds when similarity > threshold), IBM's words.
        pool: ``"mean"`` over the row's prompt tokens (IBM's default) or ``"last"``.

    Examples:
        >>> c = Condition("blocks.2.hook_resid_pre", torch.tensor([1.0, 0.0]), threshold=0.5)
        >>> c.holds(torch.tensor([0.2, 0.9])).tolist()   # "larger": similarity below 0.5
        [True, False]
    """

    hook: str
    direction: Float[Tensor, " d_model"]
    threshold: float
    threshold_is: Comparator = "larger"
    pool: Literal["mean", "last"] = "mean"

    def __post_init__(self) -> None:
        hook_order(self.hook)
        d = self.direction
        if not isinstance(d, Tensor) or d.ndim != 1 or float(d.norm()) == 0.0:
            raise ConfigError("Condition: direction must be a non-zero 1-D tensor")
        if self.threshold_is not in ("larger", "smaller"):
            raise ConfigError(
                f"threshold_is must be 'larger' or 'smaller', got {self.threshold_is!r}"
            )
        if self.pool not in ("mean", "last"):
            raise ConfigError(f"pool must be 'mean' or 'last', got {self.pool!r}")
        if not math.isfinite(float(self.threshold)):
            raise ConfigError("Condition: threshold must be finite")

    def holds(self, sim: Tensor) -> Tensor:
        """Per-row decision from similarities."""
        return sim < self.threshold if self.threshold_is == "larger" else sim > self.threshold


@dataclass
class ConditionReport:
    """What a :meth:`Conditional.apply` block decided: one entry per prompt forward (prefill),
    each a list with one bool (steered or not) and one similarity per batch row."""

    decisions: list[list[bool]] = field(default_factory=list)
    similarities: list[list[float]] = field(default_factory=list)


class _Gate:
    """Per-row decisions shared by the condition hook (writer) and behaviour hooks (readers)."""

    def __init__(self) -> None:
        self.rows = torch.zeros(0, dtype=torch.bool)


class ConditionHook(PositionalHook):
    """Reads the condition hook's activation at each prompt forward, decides every row, and
    leaves the activation unchanged."""

    needs_calls = True

    def __init__(self, condition: Condition, gate: _Gate, report: ConditionReport) -> None:
        super().__init__("all")
        self.condition = condition
        self.gate = gate
        self.report = report

    def change(self, act: Tensor, mask: Tensor | None, hook: Any) -> Tensor:
        if self.decoding:
            return act  # decisions stay those of the row's prompt
        batch, n = act.shape[0], act.shape[1]
        starts, ends = self.prompt_span(batch, n)
        cols = torch.arange(n, device=act.device)
        if self.condition.pool == "mean":
            inside = (cols[None] >= starts[:, None].to(act.device)) & (
                cols[None] <= ends[:, None].to(act.device)
            )
            w = inside.to(torch.float32)
            pooled = (act.float() * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
        else:
            pooled = act.float()[torch.arange(batch, device=act.device), ends.to(act.device)]
        sim = similarity(pooled, self.condition.direction.float())
        met = self.condition.holds(sim)
        self.gate.rows = met.cpu()
        self.report.decisions.append(met.cpu().tolist())
        self.report.similarities.append(sim.cpu().tolist())
        return act


@dataclass
class Conditional:
    """Apply ``then`` only to rows whose :class:`Condition` holds (CAST, per row).

    Examples:
        >>> import torch
        >>> c = Condition("blocks.0.hook_resid_pre", torch.ones(4), threshold=0.1)
        >>> Conditional(c, SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)})).hook_names
        ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_post']
    """

    condition: Condition
    then: Intervention

    def __post_init__(self) -> None:
        if isinstance(self.then, SteeringVector):
            self.then = Intervention.from_vector(self.then)
        if not isinstance(self.then, Intervention):
            raise ConfigError("Conditional: then= must be an Intervention or a SteeringVector")
        first = hook_order(self.condition.hook)
        early = [n for n in self.then.hook_names if hook_order(n) <= first]
        if early:
            raise ConfigError(
                f"conditional steering decides at {self.condition.hook!r}; the behaviour must act "
                f"after it in the forward pass, but {', '.join(early)} comes at or before it "
                "(the prefill could not be steered by its own decision)"
            )

    @property
    def hook_names(self) -> list[str]:
        return [self.condition.hook, *self.then.hook_names]

    def check_model(self, model: Any) -> None:
        self.then.check_model(model)
        probe = SteeringVector({self.condition.hook: self.condition.direction.float()})
        probe.check_model(model)

    def fwd_hooks(
        self,
        multiplier: float | Sequence[float] = 1.0,
        positions: Positions = "all",
        report: ConditionReport | None = None,
    ) -> list[tuple[str, PositionalHook]]:
        """The condition hook, then the behaviour's hooks gated by its per-row decisions."""
        gate = _Gate()
        report = report if report is not None else ConditionReport()
        then = self.then.fwd_hooks(multiplier, positions, gate=gate)
        return [(self.condition.hook, ConditionHook(self.condition, gate, report)), *then]

    @contextlib.contextmanager
    def apply(
        self, model: Any, multiplier: float | Sequence[float] = 1.0, positions: Positions = "all"
    ) -> Iterator[ConditionReport]:
        """Context manager yielding a :class:`ConditionReport`; hooks are removed on exit."""
        self.check_model(model)
        report = ConditionReport()
        with steer_with(model, self.fwd_hooks(multiplier, positions, report)):
            yield report


# ----------------------------------------------------------------- finding a condition
@torch.no_grad()
def pooled_activations(
    model: Any,
    prompts: Sequence[str],
    *,
    hooks: Sequence[str],
    pool: Literal["mean", "last"] = "mean",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
) -> dict[str, Float[Tensor, "n d_model"]]:
    """Each prompt's activation at each hook, pooled over its chat-formatted prompt tokens as
    a :class:`Condition` pools them (``"mean"`` or ``"last"``), in fp32 on the CPU.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2, d_model=32)
        >>> acts = pooled_activations(m, ["Hi", "Hello there"], hooks=["blocks.1.hook_resid_pre"])
        >>> acts["blocks.1.hook_resid_pre"].shape
        torch.Size([2, 32])
    """
    tok = model.tokenizer
    enc = [encode_prompt(tok, p, system_prompt) for p in prompts]
    out = {h: torch.zeros(len(prompts), int(model.cfg.d_model)) for h in hooks}
    device = model_device(model)
    for idx in plan_batches([len(e) for e in enc], 0, batch_size=batch_size, device=device):
        ids, mask = pad_rows([([], enc[i]) for i in idx], pad_token_id(model), device)
        seen = read_activations(model, ids, hooks, attention_mask=mask)
        w = mask.float()
        last = torch.tensor([len(enc[i]) - 1 for i in idx], device=device)
        for h in hooks:
            act = seen[h].float()
            if pool == "mean":
                pooled = (act * w[..., None]).sum(1) / w.sum(1, keepdim=True)
            else:
                pooled = act[torch.arange(len(idx), device=device), last]
            out[h][idx] = pooled.cpu()
    return out


def condition_direction(
    positive: Float[Tensor, "n d_model"], negative: Float[Tensor, "n d_model"]
) -> Float[Tensor, " d_model"]:
    """IBM's ``pca_center`` direction: the first principal component of all activations
    (positives and negatives together) centred on their common mean, signed so that in most
    (positive_i, negative_i) pairs the positive projects higher (IBM/activation-steering
    ``steering_vector.py`` at 12d55b6, ``read_representations``, method ``"pca_center"``).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> pos = torch.randn(20, 4, generator=g) + torch.tensor([3.0, 0, 0, 0])
        >>> neg = torch.randn(20, 4, generator=g)
        >>> d = condition_direction(pos, neg)
        >>> float(d[0]) > 0.9        # mostly along the axis the classes differ on
        True
    """
    k = min(len(positive), len(negative))
    if k < 2:
        raise ConfigError("condition_direction needs at least 2 positive and 2 negative examples")
    h = torch.cat([positive, negative]).double()
    centred = h - h.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    d = vh[0]
    proj_p, proj_n = positive[:k].double() @ d, negative[:k].double() @ d
    if float((proj_p < proj_n).double().mean()) > float((proj_p > proj_n).double().mean()):
        d = -d
    return (d / d.norm()).float()


@dataclass
class ConditionSearch:
    """Result of :func:`search_condition`.

    Attributes:
        condition: the chosen :class:`Condition`.
        f1: F1 of the chosen point on the held-out report split.
        f1_select: its F1 on the selection split (where it was chosen).
        table: every (hook, threshold_is, threshold) tried with its selection-split F1.
        n_report: positive and negative prompts in the report split.
    """

    condition: Condition
    f1: float
    f1_select: float
    table: pd.DataFrame
    n_report: tuple[int, int]


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def search_condition(
    positive: Mapping[str, Float[Tensor, "n d_model"]],
    negative: Mapping[str, Float[Tensor, "m d_model"]],
    *,
    splits: tuple[float, float] = (0.5, 0.25),
    n_thresholds: int = 200,
    pool: Literal["mean", "last"] = "mean",
    seed: int | None = 0,
) -> ConditionSearch:
    """Grid search of condition point, threshold and comparator by F1 (IBM's
    ``find_best_condition_point``), on pooled activations ``{hook_name: [n, d_model]}``.

    Prompts are shuffled (``seed``; None keeps the given order) and split: the first
    ``splits[0]`` fit each hook's direction (:func:`condition_direction`), the next
    ``splits[1]`` choose the point (best F1 over ``n_thresholds`` thresholds between the
    smallest and largest similarity seen, both comparators), the rest report its F1. The
    positives are the prompts the condition should hold for.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = torch.zeros(8); c[0] = 1.0
        >>> pos = {"blocks.1.hook_resid_pre": torch.randn(40, 8, generator=g) + 4 * c}
        >>> neg = {"blocks.1.hook_resid_pre": torch.randn(40, 8, generator=g)}
        >>> found = search_condition(pos, neg)
        >>> found.condition.hook, found.f1 > 0.8
        ('blocks.1.hook_resid_pre', True)
    """
    hooks = list(positive)
    if not hooks or set(hooks) != set(negative):
        raise ConfigError("positive and negative activations must have the same hook names")
    g = np.random.default_rng(seed)
    n_pos, n_neg = len(positive[hooks[0]]), len(negative[hooks[0]])

    def split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = g.permutation(n) if seed is not None else np.arange(n)
        a, b = int(round(n * splits[0])), int(round(n * (splits[0] + splits[1])))
        return order[:a], order[a:b], order[b:]

    pf, ps, pr = split(n_pos)
    nf, ns, nr = split(n_neg)
    if min(len(ps), len(pr), len(ns), len(nr)) < 1:
        raise ConfigError("too few prompts for three splits; give more positives and negatives")
    rows = []
    best: tuple[float, str, str, float] | None = None
    directions = {}
    truth_s = np.r_[np.ones(len(ps), bool), np.zeros(len(ns), bool)]
    for hook in hooks:
        hp, hn = positive[hook].float(), negative[hook].float()
        d = condition_direction(hp[pf], hn[nf])
        directions[hook] = d
        sims = similarity(torch.cat([hp[ps], hn[ns]]), d).numpy()
        for thr in np.linspace(sims.min(), sims.max(), n_thresholds):
            for comp in ("larger", "smaller"):
                pred = sims < thr if comp == "larger" else sims > thr
                f = _f1(pred, truth_s)
                rows.append({"hook": hook, "threshold_is": comp, "threshold": float(thr), "f1": f})
                if best is None or f > best[0]:
                    best = (f, hook, comp, float(thr))
    assert best is not None
    f_sel, hook, comp, thr = best
    cond = Condition(hook, directions[hook], thr, comp, pool)  # type: ignore[arg-type]
    sims_r = similarity(torch.cat([positive[hook][pr].float(), negative[hook][nr].float()]),
                        directions[hook]).numpy()  # fmt: skip
    truth_r = np.r_[np.ones(len(pr), bool), np.zeros(len(nr), bool)]
    pred_r = sims_r < thr if comp == "larger" else sims_r > thr
    return ConditionSearch(cond, _f1(pred_r, truth_r), f_sel, pd.DataFrame(rows),
                           (len(pr), len(nr)))  # fmt: skip


__all__ = [
    "Condition",
    "ConditionReport",
    "ConditionSearch",
    "Conditional",
    "condition_direction",
    "hook_order",
    "pooled_activations",
    "search_condition",
    "similarity",
]
