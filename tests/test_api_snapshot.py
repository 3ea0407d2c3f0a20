"""The public API is a promise: ``sorted(sl.__all__)`` and every public signature, snapshot in
``tests/data/api_snapshot.json`` (taken before the package moved into wings); a release may add
names, members and keyword-only options with defaults, and change nothing else (parameter names,
kinds and defaults; annotations are compared by the type checker, not here).

Regenerate the snapshot (only after an intended addition) with
``python tests/test_api_snapshot.py > tests/data/api_snapshot.json``.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "data" / "api_snapshot.json"


def _signature(obj: Any) -> list[list[str]] | None:
    """[name, kind, default, annotation] per parameter, or None when it has none."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [
        [p.name, p.kind.name, repr(p.default), str(p.annotation)] for p in sig.parameters.values()
    ]


def _describe(obj: Any, top: bool = True) -> dict[str, Any]:
    if isinstance(obj, types.ModuleType):
        if not top:  # a sub-module is described where sl names it
            return {"kind": "module"}
        names = sorted(
            getattr(obj, "__all__", None)
            or [
                n
                for n, v in vars(obj).items()
                if not n.startswith("_") and getattr(v, "__module__", None) == obj.__name__
            ]
        )
        return {"kind": "module", "members": {n: _describe(getattr(obj, n), False) for n in names}}
    if inspect.isclass(obj):
        members = {}
        for n, v in inspect.getmembers(obj):
            if n.startswith("_") and n != "__init__":
                continue
            if inspect.isfunction(v) or inspect.ismethod(v):
                members[n] = {"kind": "method", "signature": _signature(v)}
            elif isinstance(inspect.getattr_static(obj, n), property):
                members[n] = {"kind": "property"}
        return {"kind": "class", "signature": _signature(obj), "members": members}
    if callable(obj):
        return {"kind": "function", "signature": _signature(obj)}
    return {"kind": type(obj).__name__}


def snapshot() -> dict[str, Any]:
    import steerlens as sl

    return {
        "__all__": sorted(sl.__all__),
        "names": {n: _describe(getattr(sl, n)) for n in sl.__all__},
    }


def _grew(was: str, now: str) -> bool:
    """``now`` is the repr of ``was``'s dataclass with fields added at the end."""
    return was.endswith(")") and now.startswith(was[:-1] + ", ") and "(" in was


def _only_added(old: Any, new: Any, where: str, problems: list[str]) -> None:
    if old.get("kind") != new.get("kind"):
        problems.append(f"{where}: was a {old.get('kind')}, is a {new.get('kind')}")
        return
    if old.get("signature") is not None:
        # names, kinds and defaults; annotations are text that may name a renamed alias
        was = [p[:3] for p in old["signature"]]
        now = [p[:3] for p in new.get("signature") or []]
        if len(now) >= len(was):  # a default value (a frozen dataclass) that gained a field
            now = [
                [*w[:2], w[2]] if _grew(w[2], n[2]) and w[:2] == n[:2] else n
                for w, n in zip(was, now, strict=False)
            ] + now[len(was) :]
        if now[: len(was)] != was:
            problems.append(f"{where}: signature changed from {was} to {now}")
        for p in now[len(was) :]:
            if p[1] != "KEYWORD_ONLY" or p[2] == "<class 'inspect._empty'>":
                problems.append(
                    f"{where}: new parameter {p[0]} must be keyword-only with a default"
                )
    for name, member in old.get("members", {}).items():
        if name not in new.get("members", {}):
            problems.append(f"{where}.{name} was removed")
        else:
            _only_added(member, new["members"][name], f"{where}.{name}", problems)


def test_public_api_only_grows():
    old, new = json.loads(SNAPSHOT.read_text()), snapshot()
    assert set(old["__all__"]) <= set(new["__all__"]), set(old["__all__"]) - set(new["__all__"])
    problems: list[str] = []
    for name, desc in old["names"].items():
        _only_added(desc, new["names"][name], f"sl.{name}", problems)
    assert problems == []


def test_the_snapshot_check_catches_a_change():
    old = {"kind": "function", "signature": [["model", "POSITIONAL_OR_KEYWORD", "x", "Any"]]}
    renamed = {"kind": "function", "signature": [["m", "POSITIONAL_OR_KEYWORD", "x", "Any"]]}
    added = {
        "kind": "function",
        "signature": [*old["signature"], ["k", "KEYWORD_ONLY", "1", "int"]],
    }
    problems: list[str] = []
    _only_added(old, renamed, "f", problems)
    assert problems and "signature changed" in problems[0]
    problems = []
    _only_added(old, added, "f", problems)
    assert problems == []


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    print()
