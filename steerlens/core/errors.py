"""The steerlens error hierarchy.

Every error steerlens raises on bad input derives from :class:`SteerlensError` and from the
built-in class that fits (``ValueError`` for bad values, ``OSError`` for unreadable files), so
existing ``except ValueError`` code keeps working. Messages name the file, row/line, field or
hook at fault.

Examples:
    >>> from steerlens.core.errors import DataError
    >>> err = DataError("pairs.csv: row 3: field 'matching' is empty")
    >>> isinstance(err, ValueError)
    True
"""

from __future__ import annotations

from typing import Any


class SteerlensError(Exception):
    """Base class of every error steerlens raises on purpose."""


class DataError(SteerlensError, ValueError):
    """A preference-data file or object is malformed (names file, row/line and field)."""


class VectorFileError(SteerlensError, ValueError):
    """A steering-vector file is not a valid steerlens safetensors/GGUF file."""


class VectorError(SteerlensError, ValueError):
    """A steering vector's values are unusable (wrong shape/dtype, NaN/inf, d_model mismatch)."""


class HookError(SteerlensError, ValueError):
    """A hook name does not exist on the model, or a layer index is out of range."""


class ConfigError(SteerlensError, ValueError):
    """An argument or configuration value is invalid (NaN multiplier, bad batch size, ...)."""


class ModelLoadError(SteerlensError, OSError):
    """A model could not be loaded (package missing, path missing, no network)."""


class CheckpointError(SteerlensError, OSError):
    """A training checkpoint is missing, corrupt, or belongs to another run."""


class TrainingDivergedError(SteerlensError, RuntimeError):
    """The training loss became NaN or infinite.

    Attributes:
        vector: the last :class:`~steerlens.steering.vector.SteeringVector` with a finite loss.
        step: the optimiser step at which the loss diverged.
    """

    def __init__(self, message: str, *, vector: Any = None, step: int | None = None) -> None:
        super().__init__(message)
        self.vector = vector
        self.step = step


class FileExistsSteerlensError(SteerlensError, FileExistsError):
    """Refusing to overwrite an existing file (pass ``overwrite=True``)."""


class SweepError(SteerlensError, RuntimeError):
    """Some cells of a sweep failed; the others are saved (``err.failed``: cell -> message)."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FileExistsSteerlensError",
    "HookError",
    "ModelLoadError",
    "SteerlensError",
    "SweepError",
    "TrainingDivergedError",
    "VectorError",
    "VectorFileError",
]
