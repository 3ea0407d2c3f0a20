"""Interop: vectors in and out of other tools and models.

llama.cpp GGUF control vectors, repeng and steering-vectors converters (``converters``) and
transfer of vectors across models through a fitted activation map (``transfer``).

May import: ``core``, ``steering``.
"""

from steerlens.interop.converters import (
    from_gguf,
    from_repeng,
    from_steering_vectors,
    to_gguf,
    to_repeng,
    to_steering_vectors,
)

__all__ = [
    "from_gguf",
    "from_repeng",
    "from_steering_vectors",
    "to_gguf",
    "to_repeng",
    "to_steering_vectors",
]
