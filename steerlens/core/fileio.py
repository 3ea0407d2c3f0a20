"""Ground-floor file services: atomic writes that respect the umask, safetensors reading,
JSON-safe metadata.

Examples:
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> atomic_write(d / "x.txt", lambda tmp: Path(tmp).write_text("hi"))
    >>> (d / "x.txt").read_text(), (d / "x.txt").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    ('hi', True)
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        m = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1), 8)
    old = os.umask(0o022)  # elsewhere: read by setting and restoring it
    os.umask(old)
    return old


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    ``write(tmp_path)`` writes the content. A reader never sees a half-written file, and a
    failure leaves ``path`` as it was. The file gets the mode a plain ``open(path, "w")``
    would give (``0o666`` less the umask), not the ``0o600`` of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor],
    header: Mapping[str, str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tensors`` (copied to contiguous CPU tensors) and a string ``header`` as a
    safetensors file, atomically (:func:`atomic_write`); an existing file is only replaced
    with ``overwrite=True``. Reading it back (:func:`read_safetensors`) is bit-exact."""
    from safetensors.torch import save_file

    from steerlens.core.errors import FileExistsSteerlensError

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsSteerlensError(f"{path} exists; pass overwrite=True to replace it")
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, tmp, metadata=dict(header)))
    return path


def read_safetensors(
    path: str | os.PathLike[str], error: type[Exception], what: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the header metadata of a safetensors file (no pickle involved).

    A missing file becomes ``error("{path}: no such file")``, any parse failure
    ``error("{path}: not {what} (...)")``.
    """
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise error(f"{path}: no such file")

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise error(f"{path}: not {what} ({e})") from e
    return tensors, header


def jsonable(obj: Any) -> Any:
    """Make metadata JSON-safe (tensors become lists, unknown objects strings).

    Examples:
        >>> jsonable({"a": float("inf"), "b": (1, 2)})
        {'a': 'inf', 'b': [1, 2]}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def cache_dir() -> Path:
    """The steerlens cache folder: ``$STEERLENS_CACHE`` or ``~/.cache/steerlens``.

    Examples:
        >>> isinstance(cache_dir(), Path)
        True
    """
    env = os.environ.get("STEERLENS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "steerlens"


def download(url: str) -> Path:
    """Fetch a URL into the steerlens cache (once) and return the local path."""
    import hashlib
    import urllib.error
    import urllib.request

    from steerlens.core.errors import DataError

    name = url.rstrip("/").rsplit("/", 1)[-1] or "data"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache_dir() / "datasets" / f"{digest}-{name}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - user-given URL
            data = resp.read()
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: download failed ({e}); pass a local path instead") from e
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
    return target
