"""Experiments: the engine that runs behaviours x methods x layers x seeds, and what reads it.

Its vocabulary (``vocabulary``: Behaviour, Method, Cell, Settings), the on-disk cell cache
(``cache``), scheduling (``grid``: ``sweep_grid`` and one cell's work), summaries (``summary``),
layer and multiplier sweeps (``sweep``), the comparison of methods at coherence-matched
operating points (``compare``, with ``verdicts``, ``readers``), and the second look at its
verdicts: operating points by search (``search``), cross-fitting with Holm's adjustment and
split stability (``crossfit``) and per-item reliability (``reliability``).

May import: ``core``, ``steering``, ``methods``, ``evaluation``.
"""
