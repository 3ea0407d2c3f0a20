"""The experiment engine's vocabulary: a :class:`Behaviour` (its data and judge), a
:class:`Method` (a registered kind and its recipe), a :class:`Cell` (one task) and the
:class:`Settings` every cell is scored with.

Examples:
    >>> Method("bipo-full", "bipo").seeded, Method("caa").seeded
    (True, False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError
from steerlens.evaluation.metrics import NEUTRAL_TEXTS
from steerlens.evaluation.openended import (
    BEHAVIOUR_PROMPTS,
)
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.registry import MethodKind, method_kind
from steerlens.steering.vector import SteeringVector

METRICS = ("margin", "ab", "open_ended", "kl")


PROMPT_LAYER = -1  # the prompting baseline's cells steer no layer


@dataclass(frozen=True)
class Behaviour:
    """What one behaviour brings to an experiment.

    Attributes:
        name: the label in every table.
        pairs: training pairs (vectors are built from them).
        eval_pairs: held-out pairs for the ``"margin"`` / ``"ab"`` metrics.
        questions: open-ended questions for the ``"open_ended"`` metric.
        judge: scores answers (a :class:`~steerlens.evaluation.judge.BehaviourJudge` or any callable
            ``texts -> scores``); used when the table is read, never sent to workers.
        prompting: the prompting baseline's system prompts: a key of
            :data:`~steerlens.evaluation.openended.BEHAVIOUR_PROMPTS` or ``(toward, away)``;
            default: ``name`` (or ``name`` without a ``-caa`` suffix) when it is a key.
        layer_pairs: held-out pairs a layer sweep scores (default: ``eval_pairs``): give pairs
            whose questions are not among ``questions`` when the comparison reports on those,
            so the layer is not chosen on the questions it is then reported on.

    Examples:
        >>> b = Behaviour("power-seeking", questions=["Would you take control?"])
        >>> b.system_prompts()[0][:30]
        'You are an AI assistant that i'
    """

    name: str
    pairs: Sequence[PreferencePair] = ()
    eval_pairs: Sequence[PreferencePair] = ()
    questions: Sequence[str] = ()
    judge: Any = field(default=None, compare=False, repr=False)
    prompting: str | tuple[str, str] | None = None
    layer_pairs: Sequence[PreferencePair] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        for name in ("pairs", "eval_pairs", "questions", "layer_pairs"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"Behaviour {self.name!r}: {name} must be a list, not a string")
            object.__setattr__(self, name, tuple(value))

    def for_layers(self) -> Behaviour:
        """This behaviour as a layer sweep scores it: ``layer_pairs`` as its held-out pairs
        (itself when it has none).

        Examples:
            >>> p = PreferencePair("Q?", "yes", "no")
            >>> Behaviour("b", eval_pairs=[p]).for_layers().eval_pairs == (p,)
            True
        """
        return dataclasses.replace(self, eval_pairs=self.layer_pairs) if self.layer_pairs else self

    def shared_layer_questions(self) -> int:
        """How many of the pairs a layer sweep scores ask one of ``questions``."""
        asked = set(self.questions)
        return sum(p.question in asked for p in self.for_layers().eval_pairs)

    def system_prompts(self) -> tuple[str, str] | None:
        """``(toward, away)`` for the prompting baseline, or None when none is known."""
        if isinstance(self.prompting, tuple):
            return self.prompting
        for key in (self.prompting, self.name, self.name.removesuffix("-caa")):
            if key in BEHAVIOUR_PROMPTS:
                return BEHAVIOUR_PROMPTS[key]
        return None


@dataclass(frozen=True)
class Method:
    """A way to make a vector, with its recipe.

    Attributes:
        name: the label in every table (``"bipo-full"``, ``"caa@bipo"``).
        kind: ``"bipo"``, ``"reps"``, ``"caa"``, ``"pca"``, ``"prompt"`` or a callable
            ``f(model, pairs, layers=...) -> SteeringVector`` (default: ``name``).
        config: BiPO / RePS settings (default: the sweep's ``config``).
        n_pairs: train on the first ``n_pairs`` training pairs (None: all of them).
        norm_of: rescale the vector to the norm of this method's vector in the same
            behaviour, layer and seed (the "equal norm" view; that cell is computed first).

    Examples:
        >>> Method("bipo-full", "bipo", n_pairs=None).label_kind
        'bipo'
    """

    name: str
    kind: str | Callable[..., SteeringVector] | None = None
    config: BiPOConfig | None = None
    n_pairs: int | None = None
    norm_of: str | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", self.name)
        if isinstance(self.kind, str):
            method_kind(self.kind)  # a ConfigError naming the registered methods
        if self.n_pairs is not None and self.n_pairs < 1:
            raise ConfigError(f"method {self.name!r}: n_pairs must be >= 1, got {self.n_pairs}")

    @property
    def label_kind(self) -> str:
        """The kind as text (a callable's ``__name__``)."""
        k = self.kind
        return k if isinstance(k, str) else getattr(k, "__name__", "custom")

    @property
    def registered(self) -> MethodKind | None:
        """Its registry entry (None for a callable)."""
        return method_kind(self.kind) if isinstance(self.kind, str) else None

    @property
    def makes_vector(self) -> bool:
        """Whether it builds a vector (everything but the prompting baseline)."""
        kind = self.registered
        return kind is None or kind.makes_vector

    @property
    def seeded(self) -> bool:
        """Whether its vector depends on the seed (BiPO, RePS and callables)."""
        kind = self.registered
        return kind is None or kind.seeded

    def recipe(self, default: BiPOConfig | None) -> dict[str, Any]:
        """Everything that makes this method's vector, as JSON-able values (hashed into the
        cell's folder name)."""
        kind = self.registered
        config = None if kind is None else kind.recipe(self.effective_config(default))
        return {"kind": self.label_kind, "n_pairs": self.n_pairs, "norm_of": self.norm_of,
                "config": config}  # fmt: skip

    def effective_config(self, default: BiPOConfig | None) -> BiPOConfig | None:
        """The config its vector is built with (its own, else ``default``, converted to the
        method's config class), or None."""
        kind = self.registered
        return None if kind is None else kind.config_for(self.config, default)


@dataclass(frozen=True)
class Cell:
    """One task of a grid sweep."""

    dataset: str
    method: str
    layer: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}__{self.method}__L{self.layer}__s{self.seed}"


@dataclass(frozen=True)
class Settings:
    """How every cell is scored (hashed into each metric file's name)."""

    multipliers: tuple[float, ...]
    positions: Any
    metrics: tuple[str, ...]
    max_new_tokens: int = 48
    kl_texts: tuple[str, ...] = tuple(NEUTRAL_TEXTS)


def as_behaviours(datasets: Mapping[str, Any]) -> dict[str, Behaviour]:
    out = {}
    for name, value in datasets.items():
        if isinstance(value, Behaviour):
            out[name] = value if value.name == name else dataclasses.replace(value, name=name)
        elif isinstance(value, tuple) and len(value) == 2:
            out[name] = Behaviour(name, value[0], value[1])
        else:
            raise ConfigError(
                f"datasets[{name!r}] must be a Behaviour or a (training pairs, evaluation pairs) "
                f"tuple, got {type(value).__name__}"
            )
    return out


def as_methods(methods: Sequence[Any]) -> dict[str, Method]:
    out: dict[str, Method] = {}
    for m in methods:
        if isinstance(m, str):
            m = Method(m)
        elif callable(m) and not isinstance(m, Method):
            m = Method(getattr(m, "__name__", "custom"), m)
        if not isinstance(m, Method):
            raise ConfigError(f"a method is a name, a Method or a callable, got {m!r}")
        if m.name in out and out[m.name] != m:
            raise ConfigError(f"two methods are named {m.name!r}")
        out[m.name] = m
    for m in out.values():
        if m.norm_of is not None and m.norm_of not in out:
            raise ConfigError(f"method {m.name!r}: norm_of={m.norm_of!r} is not among the methods")
    return out


def check_data(behaviours: Mapping[str, Behaviour], methods: Mapping[str, Method],
           metrics_for: Callable[[str], Sequence[str]]) -> None:  # fmt: skip
    """Fail before any work on a metric a behaviour has no data for."""
    for b in behaviours.values():
        metrics = metrics_for(b.name)
        if not metrics:
            raise ConfigError("metric names no metric")
        for metric in metrics:
            if metric not in METRICS:
                raise ConfigError(
                    f"metric must be one of {', '.join(METRICS)} or 'auto', got {metric!r}"
                )
        if any(m.makes_vector for m in methods.values()) and not b.pairs:
            raise ConfigError(f"behaviour {b.name!r} has no training pairs")
        if ("margin" in metrics or "ab" in metrics) and not b.eval_pairs:
            raise ConfigError(f"behaviour {b.name!r}: metric 'margin'/'ab' needs eval_pairs")
        if "ab" in metrics and not all(p.is_ab for p in b.eval_pairs):
            raise ConfigError(f"behaviour {b.name!r}: metric 'ab' needs A/B eval_pairs")
        if "open_ended" in metrics and not b.questions:
            raise ConfigError(f"behaviour {b.name!r}: metric 'open_ended' needs questions")
        if any(not m.makes_vector for m in methods.values()) and not b.system_prompts():
            raise ConfigError(
                f"behaviour {b.name!r}: the prompting baseline needs system prompts: set "
                f"Behaviour(prompting=(toward, away)) or a key of sl.BEHAVIOUR_PROMPTS"
            )
