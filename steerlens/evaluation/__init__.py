"""Evaluation: how steered models are measured.

Batched scoring kernels (``scoring``), the public metrics (A/B score, preference margin, KL:
``metrics``), generation (``generation``, batched decoding in ``decode``), the offline judge
(``judge``) and open-ended answers with their coherence (``openended``).

May import: ``core``, ``steering``.
"""
