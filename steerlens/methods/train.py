"""A vector by method name, through the registry.

Examples:
    >>> import steerlens as sl
    >>> m = sl.tiny_model(n_layers=2)
    >>> pairs = sl.load_pairs(sl.demo_data_path("ab"))[:4]
    >>> train_vector(m, pairs, layers=1, method="caa", progress=False).metadata["method"]
    'caa'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from steerlens.core.data import PreferencePair
from steerlens.core.errors import ConfigError
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.registry import method_kind, method_names
from steerlens.steering.vector import SteeringVector

#: a registered method's name, or ``f(model, pairs, layers=...) -> SteeringVector``
MethodLike = str | Callable[..., SteeringVector]


def train_vector(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    layers: int | Sequence[int],
    method: MethodLike = "bipo",
    config: BiPOConfig | None = None,
    progress: bool = True,
) -> SteeringVector:
    """A vector by name (any registered method that makes one: ``"bipo"``, ``"reps"``,
    ``"caa"``, ``"pca"``, see :func:`~steerlens.methods.registry.method_names`) or
    ``f(model, pairs, layers=...)``.

    Args:
        config: the method's settings (BiPO, RePS; a BiPOConfig given to RePS is converted);
            default: the method's defaults with ``progress``.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> cfg = sl.RePSConfig(epochs=1, progress=False)
        >>> train_vector(m, pairs, layers=1, method="reps", config=cfg).metadata["method"]
        'reps'
    """
    if callable(method):
        return method(model, pairs, layers=layers)
    kind = method_kind(method)
    if kind.build is None:
        raise ConfigError(
            f"method {method!r} makes no vector; choose one of "
            f"{', '.join(method_names(vectors_only=True))}"
        )
    if config is None and kind.config_class is not None:
        config = kind.config_class(progress=progress)
    return kind.build(
        model, pairs, layers=layers, config=kind.config_for(config), progress=progress
    )
