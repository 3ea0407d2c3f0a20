"""Conclusive method comparisons: layers from a margin sweep, coherence-matched operating
points chosen on half the questions and reported on the other half, intervals and verdicts.

:func:`compare_methods` is one call over :func:`~steerlens.grid.sweep_grid` (every cell cached
and resumed there) that returns every table a results page needs (:class:`Comparison`):

1. **Layers.** Each method's layer is the one whose vector, built with the sweep's (quick)
   recipe, moves the held-out preference margin furthest between ``-m`` and ``+m``; a method
   with ``norm_of`` takes the layer of the method whose norm it borrows.
2. **Operating points.** Each method answers the behaviour's questions at every multiplier
   of its grid (prompting: the away / default / toward system prompts at -1, 0, +1). The
   questions are split in two halves by a seeded permutation. On the first half, the
   multiplier ``m`` with the largest judged range (behaviour at ``+m`` minus at ``-m``) whose
   answers at both ``+m`` and ``-m`` stay within the :class:`CoherenceBudget` is chosen; its
   range, with a 95% paired bootstrap interval over questions, is reported on the second
   half. This is AxBench's protocol (Wu et al., 2025, sec. 4: the steering factor is chosen
   on half of the instructions and evaluated on the other half), with an explicit coherence
   budget in place of AxBench's LLM-judged fluency.
3. **Verdicts.** Two methods at their operating points are compared on the same held-out
   questions: the per-question difference of ranges, resampled by question
   (:func:`~steerlens.intervals.paired_difference`), gives "better", "worse" or "not
   distinguishable". A behaviour whose judge's held-out accuracy is under
   ``min_judge_accuracy`` (0.7) is "not judged" instead of ranked.
4. **Equal norm.** The same comparison at one fixed multiplier (all questions), for methods
   rescaled to a reference's norm (``Method(..., norm_of=...)``).

Examples:
    >>> import numpy as np, pandas as pd
    >>> items = pd.DataFrame({"dataset": "d", "method": "x", "layer": 1, "seed": 0,
    ...     "metric": "open_ended", "multiplier": np.repeat([-1.0, 0.0, 1.0], 4),
    ...     "item": [0, 1, 2, 3] * 3, "prompt": list("abcd") * 3, "text": ["w1 w2 w3"] * 12,
    ...     "behaviour": [0.2] * 4 + [0.5] * 4 + [0.8] * 4, "nll": 3.0, "tokens": 3})
    >>> op = operating_points(items)
    >>> op[["multiplier", "range"]].round(2).values.tolist()
    [[1.0, 0.6]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from steerlens.bipo import BiPOConfig
from steerlens.errors import ConfigError
from steerlens.evaluate import DEFAULT_MULTIPLIERS
from steerlens.grid import PROMPT_LAYER, Behaviour, Method, summarize, sweep_grid
from steerlens.intervals import N_BOOT, SEED, format_interval, paired_difference
from steerlens.openended import coherence

CELL = ["dataset", "method", "layer", "seed"]


@dataclass(frozen=True)
class CoherenceBudget:
    """How much a steered answer may lose in coherence, relative to the unsteered answers to
    the same questions.

    Attributes:
        perplexity: the answers' perplexity under the unsteered model may be at most this
            times the unsteered answers' (1.25: within 25%). Perplexity catches broken grammar
            and off-distribution text. On SmolLM2 (``docs/results.md``) the prompting
            baseline, which changes what is said but not how fluently, stays at 0.96-1.01x on
            all seven behaviours, while CAA at +-2 on power-seeking reaches 1.52-1.56x and
            full-data BiPO at +-2 1.4-3.8x: 25% sits well between the two.
        distinct2: the share of distinct word bigrams over a multiplier's answers may fall to
            this fraction of the unsteered answers' and no lower (0.8). A repeating answer has
            a *low* perplexity and passes the first test; repetition is what distinct-2 sees
            (Li et al., 2016). The prompting baseline's answers keep 0.74-0.98x of it, so 0.8
            sits at the low end of what rewording alone does.

    Examples:
        >>> CoherenceBudget().allows(ppl=3.0, ppl0=2.5, d2=0.85, d20=0.9)
        True
    """

    perplexity: float = 1.25
    distinct2: float = 0.8

    def allows(self, *, ppl: float, ppl0: float, d2: float, d20: float) -> bool:
        """Whether answers with perplexity ``ppl`` and distinct-2 ``d2`` are within budget
        of unsteered answers with ``ppl0`` and ``d20``."""
        if not all(math.isfinite(x) for x in (ppl, ppl0, d2, d20)):
            return False
        return ppl <= self.perplexity * ppl0 and d2 >= self.distinct2 * d20


def split_questions(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Question indices in two halves (choose, report), by a seeded permutation.

    Examples:
        >>> a, b = split_questions(5)
        >>> len(a), len(b), sorted(np.r_[a, b].tolist())
        (2, 3, [0, 1, 2, 3, 4])
    """
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _ranges(grp: pd.DataFrame, m: float) -> pd.Series:
    """Per question: behaviour at +m minus at -m (means over samples)."""
    hi = grp[grp["multiplier"] == m].groupby("item")["behaviour"].mean()
    lo = grp[grp["multiplier"] == -m].groupby("item")["behaviour"].mean()
    return (hi - lo).dropna()


def operating_points(
    items: pd.DataFrame,
    *,
    budget: CoherenceBudget = CoherenceBudget(),
    split_seed: int = SEED,
    seed: int = SEED,
) -> pd.DataFrame:
    """Each cell's coherence-matched operating point (see the module docstring).

    Args:
        items: open-ended per-answer rows (``sweep_grid(..., per_item=True)``): ``item``,
            ``multiplier``, ``behaviour``, ``nll``, ``tokens``, ``text``.
        split_seed: seeds the split of questions into (choose, report) halves.
        seed: seeds the bootstrap.

    Returns:
        One row per cell: ``multiplier`` (NaN when no multiplier is within budget),
        ``choose_range`` (first half), ``range`` with ``low`` / ``high`` (second half),
        ``ppl_ratio`` and ``distinct2_ratio`` (second half, the worse of +m and -m),
        ``candidates`` (multipliers within budget on the first half), ``n_report``.
    """
    oe = items[items["metric"] == "open_ended"] if "metric" in items else items
    rows = []
    for key, grp in oe.groupby(CELL, sort=False):
        n = int(grp["item"].max()) + 1
        choose, report = split_questions(n, split_seed)
        halves = {"choose": grp[grp["item"].isin(choose)], "report": grp[grp["item"].isin(report)]}
        mults = sorted(float(m) for m in grp["multiplier"].unique() if m > 0 and -m in
                       set(grp["multiplier"]))  # fmt: skip
        row: dict[str, Any] = dict(zip(CELL, key, strict=True))
        ok: list[tuple[float, float]] = []
        a = halves["choose"]
        ppl0, d20 = coherence(a[a["multiplier"] == 0])
        for m in mults:
            fine = all(
                budget.allows(ppl=p, ppl0=ppl0, d2=d, d20=d20)
                for p, d in (coherence(a[a["multiplier"] == s * m]) for s in (1, -1))
            )
            if fine:
                ok.append((float(_ranges(a, m).mean()), m))
        if not np.isfinite(grp["behaviour"].to_numpy(dtype=float)).all():
            ok = []  # not judged (no judge): no operating point
        row["candidates"] = ",".join(f"{m:g}" for _, m in ok)
        if not ok:
            row.update(multiplier=math.nan, choose_range=math.nan, range=math.nan, low=math.nan,
                       high=math.nan, ppl_ratio=math.nan, distinct2_ratio=math.nan,
                       n_report=len(report))  # fmt: skip
            rows.append(row)
            continue
        best_range, m = max(ok, key=lambda t: (t[0], -t[1]))
        b = halves["report"]
        r = _ranges(b, m)
        iv = paired_difference(r.to_numpy(), np.zeros(len(r)), seed=seed)
        p0, d0 = coherence(b[b["multiplier"] == 0])
        coh = [coherence(b[b["multiplier"] == s * m]) for s in (1, -1)]
        row.update(multiplier=m, choose_range=best_range, range=iv.estimate, low=iv.low,
                   high=iv.high, ppl_ratio=max(p for p, _ in coh) / p0,
                   distinct2_ratio=min(d for _, d in coh) / d0, n_report=len(r))  # fmt: skip
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _cell_items(oe: pd.DataFrame, point: Mapping[str, Any]) -> pd.DataFrame:
    sel = np.ones(len(oe), bool)
    for k in CELL:
        sel &= (oe[k] == point[k]).to_numpy()
    return oe[sel]


def compare_points(
    items: pd.DataFrame,
    points: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    questions: str = "report",
    split_seed: int = SEED,
    seed: int = SEED,
    judged: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Method ``a`` minus method ``b``, each at its point in ``points`` (one row per dataset and
    method with a ``multiplier``), paired by question, with an interval and a verdict.

    Args:
        pairs: ``(a, b)`` method names.
        questions: ``"report"`` (the held-out half of :func:`split_questions`) or ``"all"``.
        judged: per dataset, whether its judge is good enough to rank (False: verdict
            ``"not judged"``).
    """
    oe = items[items["metric"] == "open_ended"] if "metric" in items else items
    rows = []
    for dataset in points["dataset"].unique():
        pts = points[points["dataset"] == dataset].set_index("method")
        for a, b in pairs:
            if a not in pts.index or b not in pts.index:
                continue
            row: dict[str, Any] = {"dataset": dataset, "a": a, "b": b,
                                   "m_a": pts.loc[a, "multiplier"],
                                   "m_b": pts.loc[b, "multiplier"]}  # fmt: skip
            if not (np.isfinite(row["m_a"]) and np.isfinite(row["m_b"])):
                rows.append({**row, "difference": math.nan, "low": math.nan, "high": math.nan,
                             "n": 0, "verdict": "no operating point"})  # fmt: skip
                continue
            ra = _ranges(_cell_items(oe, {**pts.loc[a].to_dict(), "dataset": dataset, "method": a}),
                         float(row["m_a"]))  # fmt: skip
            rb = _ranges(_cell_items(oe, {**pts.loc[b].to_dict(), "dataset": dataset, "method": b}),
                         float(row["m_b"]))  # fmt: skip
            both = pd.concat([ra.rename("a"), rb.rename("b")], axis=1, join="inner")
            if questions == "report":
                n = int(oe[oe["dataset"] == dataset]["item"].max()) + 1
                both = both[both.index.isin(split_questions(n, split_seed)[1])]
            if both.empty or not np.isfinite(both.to_numpy(dtype=float)).all():
                rows.append({**row, "difference": math.nan, "low": math.nan, "high": math.nan,
                             "n": len(both), "verdict": "not judged"})  # fmt: skip
                continue
            iv = paired_difference(both["a"].to_numpy(), both["b"].to_numpy(), seed=seed)
            verdict = iv.verdict if (judged or {}).get(dataset, True) else "not judged"
            rows.append({**row, "difference": iv.estimate, "low": iv.low, "high": iv.high,
                         "n": iv.n, "verdict": verdict})  # fmt: skip
    return pd.DataFrame.from_records(rows)


def choose_layers(margins: pd.DataFrame, *, multiplier: float = 1.0) -> pd.DataFrame:
    """Per dataset and method, the layer whose mean margin range (``+m`` minus ``-m``, mean
    over seeds) is largest, from ``sweep_grid(..., metric="margin")``'s summary.

    Examples:
        >>> df = pd.DataFrame({"dataset": "d", "method": "caa", "layer": [1, 1, 2, 2],
        ...                    "seed": 0, "multiplier": [-1.0, 1.0] * 2,
        ...                    "margin": [0.0, 1.0, 0.0, 3.0]})
        >>> best = choose_layers(df)
        >>> int(best["layer"].iloc[0]), float(best["margin_range"].iloc[0])
        (2, 3.0)
    """
    hi = margins[margins["multiplier"] == multiplier].set_index(CELL)["margin"]
    lo = margins[margins["multiplier"] == -multiplier].set_index(CELL)["margin"]
    r = (hi - lo).rename("margin_range").reset_index()
    r = r.groupby(["dataset", "method", "layer"], as_index=False)["margin_range"].mean()
    best = r.loc[r.groupby(["dataset", "method"])["margin_range"].idxmax()]
    return best.reset_index(drop=True)


@dataclass
class Comparison:
    """Every table of a method comparison (:func:`compare_methods`).

    Attributes:
        items: every open-ended answer (judged) and every margin item.
        tradeoff: per cell and multiplier, judged behaviour with its interval, perplexity and
            distinct-2 (the trade-off curve each method offers).
        layers: the margin sweep's chosen layer per dataset and method kind.
        judges: per dataset, the judge's held-out accuracy with its interval and whether it
            ranks (``judged``).
        operating_points: :func:`operating_points`.
        verdicts: :func:`compare_points` at the operating points (held-out questions).
        equal_norm: ranges at one fixed multiplier and :func:`compare_points` there (all
            questions).
        costs: per cell, how it was made (``recipe``), the vector's build time, the
            answers' generation time and where it ran.
        settings: budget, seeds, multipliers (recorded for the page).

    Examples:
        >>> import pandas as pd
        >>> empty = pd.DataFrame()
        >>> Comparison(*[empty] * 8, settings={"split_seed": 0}).settings
        {'split_seed': 0}
    """

    items: pd.DataFrame
    tradeoff: pd.DataFrame
    layers: pd.DataFrame
    judges: pd.DataFrame
    operating_points: pd.DataFrame
    verdicts: pd.DataFrame
    equal_norm: pd.DataFrame
    costs: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def headline(self, a: str, b: str) -> pd.DataFrame:
        """The answer in one table: per behaviour, the judge's accuracy, ``a``'s and ``b``'s
        ranges at their operating points (multiplier in brackets), ``a - b`` and the verdict,
        each with its 95% interval, as text."""
        op = self.operating_points.set_index(["dataset", "method"])
        judges = self.judges.set_index("dataset")
        rows = []
        for r in self.verdicts[(self.verdicts["a"] == a) & (self.verdicts["b"] == b)].itertuples():
            j = judges.loc[r.dataset]
            cells = {}
            for name, m in ((a, r.m_a), (b, r.m_b)):
                p = op.loc[(r.dataset, name)]
                cells[f"{name} (m)"] = f"{format_interval(p['range'], p['low'], p['high'])} ({m:g})"
            rows.append({"behaviour": r.dataset,
                         "judge": format_interval(j["accuracy"], j["low"], j["high"], signed=False),
                         **cells, f"{a} - {b}": format_interval(r.difference, r.low, r.high),
                         "verdict": r.verdict})  # fmt: skip
        return pd.DataFrame(rows)


def _judges(behaviours: Mapping[str, Behaviour], minimum: float, seed: int) -> pd.DataFrame:
    rows = []
    for name, b in behaviours.items():
        j = b.judge
        row: dict[str, Any] = {"dataset": name, "judge": type(j).__name__ if j else "none",
                               "context": bool(getattr(j, "context", False))}  # fmt: skip
        if getattr(j, "heldout_correct", ()):
            iv = j.accuracy_interval(seed=seed)
            row.update(accuracy=iv.estimate, low=iv.low, high=iv.high, heldout_pairs=iv.n)
        else:  # a callable judge: no held-out accuracy known, trusted as given
            row.update(accuracy=math.nan, low=math.nan, high=math.nan, heldout_pairs=0)
        row["judged"] = bool(j is not None and not (row["accuracy"] < minimum))
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _layer_of(m: Method, by_name: Mapping[str, Method], by_kind: Mapping[str, int | None],
              default: int) -> int:  # fmt: skip
    """A method's layer: its kind's sweep choice; an equal-norm method sits at the layer of the
    method whose norm it borrows; prompting steers no layer."""
    if m.label_kind == "prompt":
        return PROMPT_LAYER
    if m.norm_of is not None:
        return _layer_of(by_name[m.norm_of], by_name, by_kind, default)
    layer = by_kind.get(m.label_kind)
    return default if layer is None else layer


def compare_methods(
    model: Any,
    datasets: Mapping[str, Behaviour] | Sequence[Behaviour],
    *,
    methods: Sequence[str | Method] | Mapping[str, Sequence[str | Method]],
    layers: Sequence[int],
    layer_methods: Sequence[str | Method] | Mapping[str, Sequence[str | Method]] | None = None,
    layer_multiplier: float = 1.0,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    pairs: Sequence[tuple[str, str]] = (("bipo", "caa"),),
    equal_norm: tuple[float, Sequence[tuple[str, str]]] | None = None,
    budget: CoherenceBudget = CoherenceBudget(),
    min_judge_accuracy: float = 0.7,
    config: BiPOConfig | None = None,
    max_new_tokens: int = 48,
    split_seed: int = SEED,
    seed: int = SEED,
    folder: Any = None,
    executor: Any = None,
    progress: bool = True,
) -> Comparison:
    """Compare steering methods on behaviours, conclusively (see the module docstring).

    Args:
        datasets: :class:`~steerlens.grid.Behaviour` values (training pairs, held-out pairs
            for the layer sweep, questions, judge), as a list or ``{name: Behaviour}``.
        methods: the methods compared (names or :class:`~steerlens.grid.Method` recipes; a
            method's layer is the one chosen for the ``layer_methods`` entry of its kind), or
            ``{behaviour name: methods}`` when behaviours differ.
        layers: candidate layers (one layer: no sweep).
        layer_methods: the recipes swept over ``layers`` by held-out margin (default: each
            kind of ``methods`` by its name, with ``config``); or one list per behaviour.
        layer_multiplier: the sweep ranks layers by margin at ``+m`` minus ``-m``.
        multipliers: each method's grid for the operating point (0 included; the page uses
            -3..3: a wider grid finds each method's own operating point).
        pairs: ``(a, b)`` method names compared at their operating points.
        equal_norm: ``(multiplier, pairs)``: also compare these pairs at that one multiplier.
        budget: the coherence budget (:class:`CoherenceBudget`).
        min_judge_accuracy: a judge below this held-out accuracy marks its behaviour "not
            judged".
        folder: :func:`~steerlens.grid.sweep_grid`'s cell cache.
        executor: :func:`~steerlens.grid.sweep_grid`'s executor (None: in-process).

    Returns:
        A :class:`Comparison`.

    Examples:
        >>> import tempfile, steerlens as sl
        >>> model = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))
        >>> b = sl.Behaviour("power-seeking", pairs[:4], questions=["Hi?", "Why?", "Who?", "How?"],
        ...                  judge=lambda texts: [len(t) % 7 / 7 for t in texts])
        >>> c = compare_methods(model, [b], methods=["caa", "prompt"], layers=[1],
        ...                     multipliers=(-1, 0, 1), pairs=[("caa", "prompt")],
        ...                     max_new_tokens=3, folder=tempfile.mkdtemp(), progress=False)
        >>> c.operating_points["method"].tolist(), len(c.tradeoff), len(c.verdicts)
        (['caa', 'prompt'], 6, 1)
    """
    behaviours = dict(datasets) if isinstance(datasets, Mapping) else {b.name: b for b in datasets}
    if 0 not in [float(x) for x in multipliers]:
        raise ConfigError("multipliers must include 0 (the unsteered answers set the budget)")

    def per(value: Any, name: str) -> list[Method]:
        chosen = value[name] if isinstance(value, Mapping) else value
        return [Method(m) if isinstance(m, str) else m for m in chosen]

    layer_frames, frames, recipes = [], [], {}
    for name, b in behaviours.items():
        ms = per(methods, name)
        by_name = {m.name: m for m in ms}
        recipes.update({(name, m.name): str(m.recipe(config)) for m in ms})
        kinds = list(dict.fromkeys(m.label_kind for m in ms if m.label_kind != "prompt"))
        sweepers = per(layer_methods, name) if layer_methods is not None else per(kinds, name)
        chosen: dict[str, int] = {}
        if len(layers) > 1 and sweepers:
            margins = sweep_grid(model, {name: b}, layers=layers, methods=sweepers,
                                 multipliers=(-layer_multiplier, 0.0, layer_multiplier),
                                 metric="margin", config=config, folder=folder,
                                 executor=executor, progress=progress)  # fmt: skip
            best = choose_layers(margins, multiplier=layer_multiplier)
            layer_frames.append(best)
            chosen = {r.method: int(r.layer) for r in best.itertuples()}
        by_kind = {m.label_kind: m.name for m in sweepers}
        for m in ms:
            group = [m] + ([by_name[m.norm_of]] if m.norm_of else [])
            metric = ["open_ended"] + (["margin"] if b.eval_pairs else [])
            layer = _layer_of(m, by_name, {k: chosen.get(v) for k, v in by_kind.items()},
                              int(layers[0]))  # fmt: skip
            df = sweep_grid(model, {name: b}, layers=[layer], methods=group,
                            multipliers=multipliers, metric=metric, config=config,
                            max_new_tokens=max_new_tokens, folder=folder, executor=executor,
                            per_item=True, progress=False)  # fmt: skip
            frames.append(df[df["method"] == m.name])
    layer_rows = (pd.concat(layer_frames, ignore_index=True) if layer_frames else
                  pd.DataFrame(columns=["dataset", "method", "layer", "margin_range"]))  # fmt: skip
    items = pd.concat(frames, ignore_index=True)
    oe = items[items["metric"] == "open_ended"]
    judges = _judges(behaviours, min_judge_accuracy, seed)
    judged = dict(zip(judges["dataset"], judges["judged"], strict=True))
    points = operating_points(oe, budget=budget, split_seed=split_seed, seed=seed)
    verdicts = compare_points(oe, points, pairs, split_seed=split_seed, seed=seed, judged=judged)
    fixed = pd.DataFrame()
    if equal_norm is not None:
        m_eq, eq_pairs = equal_norm
        cells = oe[CELL].drop_duplicates().assign(multiplier=float(m_eq))
        fixed = compare_points(oe, cells, eq_pairs, questions="all", seed=seed, judged=judged)
    tradeoff = summarize(oe, seed=seed)
    costs = (
        items.groupby(CELL + ["metric"], sort=False)
        .agg(build_seconds=("seconds", "first"), metric_seconds=("metric_seconds", "first"),
             device=("device", "first"), norm=("norm", "first"))
        .reset_index()
    )  # fmt: skip
    costs["recipe"] = [recipes[(d, m)] for d, m in zip(costs["dataset"], costs["method"],
                                                       strict=True)]  # fmt: skip
    settings = {"budget": asdict(budget), "split_seed": split_seed, "bootstrap_seed": seed,
                "n_boot": N_BOOT, "multipliers": [float(x) for x in multipliers],
                "layers": [int(x) for x in layers], "layer_multiplier": layer_multiplier,
                "max_new_tokens": max_new_tokens,
                "min_judge_accuracy": min_judge_accuracy}  # fmt: skip
    return Comparison(items, tradeoff, layer_rows, judges, points, verdicts, fixed, costs,
                      settings)  # fmt: skip


__all__ = [
    "CoherenceBudget",
    "Comparison",
    "choose_layers",
    "compare_methods",
    "compare_points",
    "operating_points",
    "split_questions",
]
