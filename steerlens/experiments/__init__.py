"""Experiments: the engine that runs behaviours x methods x layers x seeds, and what reads it.

Its vocabulary (``vocabulary``: Behaviour, Method, Cell, Settings), the on-disk cell cache
(``cache``), scheduling (``grid``: ``sweep_grid`` and one cell's work), summaries (``summary``),
layer and multiplier sweeps (``sweep``) and the comparison of methods at coherence-matched
operating points (``compare``).

May import: ``core``, ``steering``, ``methods``, ``evaluation``.
"""
