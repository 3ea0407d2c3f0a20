"""Methods: ways to make a steering vector, behind one registry.

BiPO (``bipo``, with the prefix cache it trains at: ``prefix``), RePS (``reps``), CAA and PCA
(``baselines``), Arditi et al.'s difference-in-means directions (``directions``); the
``registry`` lists every method kind (its builder, config class and the fields of its recipe) and
``train`` builds a vector by kind.

May import: ``core``, ``steering``.
"""
