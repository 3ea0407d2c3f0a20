"""Keeping old call forms working for one release, with a ``DeprecationWarning``.

steerlens' public functions follow one convention: ``(model, [vector,] data, *, options)``,
options keyword-only and named alike everywhere (``layers``, ``multipliers``, ``positions``,
``progress``, ...). :func:`deprecated_args` lets the previous release's calls through: renamed
keywords (``layer=`` -> ``layers=``) and options passed by position.

Examples:
    >>> import warnings
    >>> @deprecated_args(renamed={"layer": "layers"}, positional=("layers",))
    ... def f(model, pairs, *, layers=0):
    ...     return layers
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     f("m", "p", 3), f("m", "p", layer=4), f("m", "p", layers=5)
    (3, 4, 5)
    >>> for x in w:
    ...     print(x.message)
    f(): pass layers by keyword (layers=...); passing it by position is deprecated
    f(): 'layer=' is deprecated; use 'layers='
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class SteerlensDeprecationWarning(DeprecationWarning):
    """A call form of the previous release that still works, for one more release."""


def deprecated_args(
    *, renamed: Mapping[str, str] | None = None, positional: Sequence[str] = ()
) -> Callable[[F], F]:
    """Decorator: accept old keyword names and old positional options, with a warning.

    Args:
        renamed: ``{old_keyword: new_keyword}``.
        positional: the names, in order, of keyword-only options that the previous release
            took by position after the positional parameters.
    """
    renamed = dict(renamed or {})

    def deco(fn: F) -> F:
        params = inspect.signature(fn).parameters.values()
        n_pos = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > n_pos and positional:
                extra, args = args[n_pos:], args[:n_pos]
                if len(extra) > len(positional):
                    raise TypeError(f"{name}() takes {n_pos} positional arguments")
                names = list(positional[: len(extra)])
                warnings.warn(
                    f"{name}(): pass {', '.join(names)} by keyword ({names[0]}=...); passing "
                    f"{'it' if len(names) == 1 else 'them'} by position is deprecated",
                    SteerlensDeprecationWarning,
                    stacklevel=2,
                )
                for key, value in zip(names, extra, strict=True):
                    if key in kwargs:
                        raise TypeError(f"{name}() got multiple values for {key!r}")
                    kwargs[key] = value
            for old, new in renamed.items():
                if old in kwargs:
                    warnings.warn(
                        f"{name}(): '{old}=' is deprecated; use '{new}='",
                        SteerlensDeprecationWarning,
                        stacklevel=2,
                    )
                    if new in kwargs:
                        raise TypeError(f"{name}() got both {old!r} and {new!r}")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
