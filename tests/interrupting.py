"""A test helper: make the N-th call of a function raise, to interrupt a run midway."""

from __future__ import annotations

from typing import Any


def fail_at_call(
    monkeypatch: Any, owner: Any, name: str, at: int, error: BaseException | None = None
) -> Any:
    """Replace ``owner.name`` so that its ``at``-th call raises ``error`` (KeyboardInterrupt by
    default) and the others run the real function; returns a function that puts it back."""
    real = getattr(owner, name)
    count = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        count["n"] += 1
        if count["n"] == at:
            raise error if error is not None else KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return lambda: monkeypatch.setattr(owner, name, real)
