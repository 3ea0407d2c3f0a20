"""The method registry: every way steerlens makes a vector, in one place.

A :class:`MethodKind` names a method, how to build its vector, its config class (whose
:meth:`~steerlens.methods.bipo_config.BiPOConfig.recipe` gives the fields that make the vector)
and whether its vector depends on the seed. :func:`~steerlens.methods.train.train_vector`, the
experiment engine (its cells' hashes), checkpoints' fingerprints and the CLI's ``--method``
choices all read it, so adding a method is one :func:`register` call (as SAELens registers its
SAE architectures).

Examples:
    >>> method_names()
    ('bipo', 'reps', 'caa', 'pca', 'prompt')
    >>> method_kind("reps").config_class.__name__, method_kind("caa").seeded
    ('RePSConfig', False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError
from steerlens.methods.baselines import caa_vector, pca_vector
from steerlens.methods.bipo import train_bipo
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.reps import RePSConfig, train_reps
from steerlens.steering.vector import SteeringVector

#: ``build(model, pairs, *, layers, config, checkpoint, progress) -> SteeringVector``
Builder = Callable[..., SteeringVector]


@dataclass(frozen=True)
class MethodKind:
    """One registered method.

    Attributes:
        name: its name (``method="..."`` everywhere, the CLI's ``--method``).
        build: ``build(model, pairs, *, layers, config, checkpoint, progress)``; None for a
            method that makes no vector (the prompting baseline).
        config_class: its settings class (None: it has no settings).
        seeded: whether its vector depends on the seed.
        summary: one line for listings.

    Examples:
        >>> kind = method_kind("caa")
        >>> kind.makes_vector, kind.config_for(None) is None
        (True, True)
    """

    name: str
    build: Builder | None
    config_class: type[BiPOConfig] | None = None
    seeded: bool = False
    summary: str = ""

    @property
    def makes_vector(self) -> bool:
        """Whether it builds a steering vector."""
        return self.build is not None

    def config_for(self, own: BiPOConfig | None, default: BiPOConfig | None = None) -> Any:
        """The config a build uses: ``own``, else ``default`` (converted to this method's
        class when it is another), else the class's defaults; None without a config class.

        Examples:
            >>> type(method_kind("reps").config_for(None, BiPOConfig(epochs=2))).__name__
            'RePSConfig'
        """
        if self.config_class is None:
            return None
        cfg = own or default
        if cfg is None:
            return self.config_class()
        return cfg if isinstance(cfg, self.config_class) else self.config_class(**asdict(cfg))

    def recipe(self, config: BiPOConfig | None) -> list[Any] | None:
        """What of ``config`` makes the vector: ``[class name, recipe fields]`` (hashed into
        the engine's cell folders), or None without a config."""
        return None if config is None else [type(config).__name__, config.recipe()]


REGISTRY: dict[str, MethodKind] = {}


def register_method(kind: MethodKind, *, replace: bool = False) -> MethodKind:
    """Add a method to the registry (``replace=True`` to redefine one).

    Examples:
        >>> def mean_of_matching(model, pairs, *, layers, config=None, checkpoint=None,
        ...                      progress=True):
        ...     raise NotImplementedError
        >>> _ = register_method(MethodKind("mine", mean_of_matching))
        >>> "mine" in method_names()
        True
        >>> _ = REGISTRY.pop("mine")
    """
    if kind.name in REGISTRY and not replace:
        raise ConfigError(f"method {kind.name!r} is already registered (replace=True to redefine)")
    REGISTRY[kind.name] = kind
    return kind


def method_names(*, vectors_only: bool = False) -> tuple[str, ...]:
    """The registered methods' names, in registration order.

    Examples:
        >>> method_names(vectors_only=True)
        ('bipo', 'reps', 'caa', 'pca')
    """
    return tuple(n for n, k in REGISTRY.items() if k.makes_vector or not vectors_only)


def method_kind(name: str) -> MethodKind:
    """The registered method ``name``, else a :class:`ConfigError` listing them."""
    if name not in REGISTRY:
        raise ConfigError(
            f"method must be one of {', '.join(REGISTRY)} or a callable "
            f"f(model, pairs, layers=...), got {name!r}"
        )
    return REGISTRY[name]


def _bipo(model: Any, pairs: Sequence[PreferencePair], *, layers: Any, config: Any,
          checkpoint: Path | None = None, progress: bool = True) -> Any:  # fmt: skip
    return train_bipo(model, pairs, layers=layers, config=config, checkpoint=checkpoint,
                      resume=checkpoint is not None)  # fmt: skip


def _reps(model: Any, pairs: Sequence[PreferencePair], *, layers: Any, config: Any,
          checkpoint: Path | None = None, progress: bool = True) -> Any:  # fmt: skip
    return train_reps(model, pairs, layers=layers, config=config, checkpoint=checkpoint,
                      resume=checkpoint is not None)  # fmt: skip


def _caa(model: Any, pairs: Sequence[PreferencePair], *, layers: Any, config: Any = None,
         checkpoint: Any = None, progress: bool = True) -> Any:  # fmt: skip
    return caa_vector(model, pairs, layers=layers, progress=progress)


def _pca(model: Any, pairs: Sequence[PreferencePair], *, layers: Any, config: Any = None,
         checkpoint: Any = None, progress: bool = True) -> Any:  # fmt: skip
    return pca_vector(model, pairs, layers=layers, progress=progress)


register_method(
    MethodKind("bipo", _bipo, BiPOConfig, True, "Bi-directional Preference Optimization")
)
register_method(MethodKind("reps", _reps, RePSConfig, True, "Reference-free Preference Steering"))
register_method(
    MethodKind("caa", _caa, None, False, "contrastive activation addition (mean difference)")
)
register_method(
    MethodKind("pca", _pca, None, False, "first principal component of the differences")
)
register_method(
    MethodKind("prompt", None, None, False, "prompting baseline: a system prompt, no vector")
)
