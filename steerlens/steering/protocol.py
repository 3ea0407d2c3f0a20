"""What every steering object is: :class:`Steering`, the protocol evaluators take.

A :class:`~steerlens.steering.vector.SteeringVector`, a
:class:`~steerlens.steering.rows.RowSteering`, an
:class:`~steerlens.steering.interventions.Intervention` and a
:class:`~steerlens.steering.conditional.Conditional` all name the hook points they act at
(``hook_names``), check that a model has them (``check_model``), give the hooks to add
(``fwd_hooks``) and add them inside a context manager that always removes them (``apply``).
An evaluator that takes "a steering" takes any of them, or a user's own object with these four
members, without a union of types.

Examples:
    >>> import torch, steerlens as sl
    >>> v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)})
    >>> ablate = sl.Intervention([("blocks.1.hook_resid_post", sl.Ablate(torch.ones(4)))])
    >>> isinstance(v, Steering), isinstance(ablate, Steering)
    (True, True)
    >>> isinstance("not a steering", Steering)
    False
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Steering(Protocol):
    """The four members every steering object has (see the module docstring).

    Examples:
        >>> import torch, steerlens as sl
        >>> v = sl.SteeringVector({"blocks.1.hook_resid_post": torch.ones(4)})
        >>> isinstance(sl.RowSteering([v, None]), Steering)
        True
    """

    @property
    def hook_names(self) -> list[str]:
        """The hook points it acts at."""
        ...

    def check_model(self, model: Any) -> None:
        """Raise :class:`~steerlens.core.errors.HookError` if ``model`` lacks a hook point."""
        ...

    def fwd_hooks(self, *args: Any, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(hook name, hook)`` pairs for ``model.hooks(fwd_hooks=...)``."""
        ...

    def apply(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """A context manager that steers ``model`` inside its block."""
        ...


__all__ = ["Steering"]
