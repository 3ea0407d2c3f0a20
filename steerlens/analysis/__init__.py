"""Analysis: looking at vectors and activations.

Cosine similarity, projections, PCA of activations and the comparison of vectors
(``geometry``); plots and per-token views (``viz``).

May import: ``core``, ``steering``, ``methods``.
"""

from steerlens.analysis import viz
from steerlens.analysis.geometry import (
    PCAResult,
    compare,
    cosine_by_layer,
    cosine_similarity,
    pca_activations,
    project,
    projection_gap,
)

__all__ = [
    "PCAResult",
    "compare",
    "cosine_by_layer",
    "cosine_similarity",
    "pca_activations",
    "project",
    "projection_gap",
    "viz",
]
