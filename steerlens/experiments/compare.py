"""Conclusive method comparisons: layers from a margin sweep, coherence-matched operating
points chosen on half the questions and reported on the other half, intervals and verdicts.

:func:`compare_methods` is one call over :func:`~steerlens.experiments.grid.sweep_grid` (every cell
cached and resumed there) that returns every table a results page needs (:class:`Comparison`):

1. **Layers.** Each method's layer is the one whose vector, built with the sweep's (quick)
   recipe, moves the held-out preference margin furthest between ``-m`` and ``+m``; a method
   with ``norm_of`` takes the layer of the method whose norm it borrows.
2. **Operating points.** Each method answers the behaviour's questions at every multiplier
   of its grid (prompting: the away / default / toward system prompts at -1, 0, +1). The
   questions are split in two halves by a seeded permutation. On the first half, the
   multiplier ``m`` with the largest judged range (behaviour at ``+m`` minus at ``-m``) whose
   answers at both ``+m`` and ``-m`` stay within the :class:`CoherenceBudget` (as do those
   of every smaller multiplier: ``CoherenceBudget.contiguous``) is chosen; its
   range, with a 95% paired bootstrap interval over questions, is reported on the second
   half. This is AxBench's protocol (Wu et al., 2025, sec. 4: the steering factor is chosen
   on half of the instructions and evaluated on the other half), with an explicit coherence
   budget in place of AxBench's LLM-judged fluency.
3. **Verdicts.** Two methods at their operating points are compared on the same held-out
   questions: the per-question difference of ranges, resampled by question
   (:func:`~steerlens.core.intervals.paired_difference`), gives "better", "worse" or "not
   distinguishable". A behaviour whose judge's held-out accuracy is under
   ``min_judge_accuracy`` (0.7) is "not judged" instead of ranked.
4. **Equal norm.** The same comparison at one fixed multiplier (all questions), for methods
   rescaled to a reference's norm (``Method(..., norm_of=...)``).
5. **A second look** (:mod:`steerlens.experiments.crossfit`): the same comparisons
   cross-fitted (chosen on each half, reported on the other, every question reported once),
   the interval from a bootstrap of the whole choose-and-report, Holm's adjustment over every
   judged comparison, the share of 20 random splits that give the same verdict; a method
   whose best in-budget range is not positive has no operating point. Per-item reliability of
   the margins (Tan et al., 2024) per cell (:mod:`steerlens.experiments.reliability`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from steerlens.core.data import SteerlensDataWarning
from steerlens.core.errors import ConfigError
from steerlens.core.intervals import (
    N_BOOT,
    SEED,
    format_interval,
)
from steerlens.evaluation.scoring import DEFAULT_MULTIPLIERS
from steerlens.experiments.crossfit import cross_fitted_points, cross_fitted_verdicts
from steerlens.experiments.grid import cache_root, run_grid, scoring_settings, sweep_grid
from steerlens.experiments.readers import crossfit_reader_verdicts, reader_verdicts
from steerlens.experiments.reliability import reliability
from steerlens.experiments.search import search_cells
from steerlens.experiments.summary import summarize
from steerlens.experiments.verdicts import (
    CELL,
    CoherenceBudget,
    choose_layers,
    compare_points,
    operating_points,
    split_questions,
)
from steerlens.experiments.vocabulary import PROMPT_LAYER, Behaviour, Cell, Method, as_methods
from steerlens.methods.bipo_config import BiPOConfig


@dataclass
class Comparison:
    """Every table of a method comparison (:func:`compare_methods`).

    Attributes:
        items: every open-ended answer (judged) and every margin item.
        tradeoff: per cell and multiplier, judged behaviour with its interval, perplexity and
            distinct-2 (the trade-off curve each method offers).
        layers: the margin sweep's chosen layer per dataset and method kind, with how many
            held-out pairs it scored and how many of them ask a reported question
            (``shared_questions``; ``Behaviour.layer_pairs``).
        judges: per dataset, the judge's held-out accuracy with its interval and whether it
            ranks (``judged``).
        operating_points: :func:`operating_points`.
        verdicts: :func:`compare_points` at the operating points (held-out questions).
        equal_norm: ranges at one fixed multiplier and :func:`compare_points` there (all
            questions).
        costs: per cell, how it was made (``recipe``), the vector's build time, the
            answers' generation time and where it ran.
        settings: budget, seeds, multipliers (recorded for the page).
        readers: the verdicts again with the readers' labels (``labels=``).
        crossfit_points: each method's cross-fitted range
            (:func:`~steerlens.experiments.crossfit.cross_fitted_points`).
        crossfit_verdicts: cross-fitted comparisons with Holm's adjustment and split stability
            (:func:`~steerlens.experiments.crossfit.cross_fitted_verdicts`).
        reliability: per cell, per-item steerability and the share of anti-steerable items
            (:func:`~steerlens.experiments.reliability.reliability`, from the margins).
        crossfit_readers: the cross-fitted verdicts again with the readers' labels
            (:func:`~steerlens.experiments.readers.crossfit_reader_verdicts`).
        searched: per cell, the operating point searched on each half (``search=``;
            :func:`~steerlens.experiments.search.search_cells`).

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
    readers: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)
    crossfit_points: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)
    crossfit_verdicts: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)
    crossfit_readers: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)
    searched: pd.DataFrame = field(default_factory=pd.DataFrame, kw_only=True)

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


def _judges(behaviours: Mapping[str, Behaviour], minimum: float, seed: int,
            labels: Any = None, min_agreement: float = 0.9) -> pd.DataFrame:  # fmt: skip
    """Per behaviour: the judge's held-out accuracy and, where readers labelled answers, its
    agreement with them (``gold_*``: :func:`~steerlens.evaluation.agreement.judge_agreement`);
    ``judged`` needs both over their thresholds."""
    from steerlens.evaluation.agreement import judge_agreement

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
        mine = labels[labels["behaviour"] == name] if labels is not None else None
        if j is not None and mine is not None and len(mine):
            g = judge_agreement(j, mine, seed=seed).iloc[0]
            row.update({f"gold_{k}": g[k] for k in g.index if k not in ("behaviour", "n")})
            row["gold_answers"] = int(g["n"])
            row["judged"] = row["judged"] and bool(g["cond_corr"] >= min_agreement)
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _layer_of(m: Method, by_name: Mapping[str, Method], by_kind: Mapping[str, int | None],
              default: int) -> int:  # fmt: skip
    """A method's layer: its kind's sweep choice; an equal-norm method sits at the layer of the
    method whose norm it borrows; prompting steers no layer."""
    if not m.makes_vector:
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
    labels: pd.DataFrame | None = None,
    min_judge_agreement: float = 0.9,
    search: float | None = None,
) -> Comparison:
    """Compare steering methods on behaviours: a :class:`Comparison` (the module docstring).

    Args:
        datasets: :class:`~steerlens.experiments.vocabulary.Behaviour` values (a list or by name).
        methods: names or :class:`~steerlens.experiments.vocabulary.Method` recipes (each at
            the layer chosen for its kind), or ``{behaviour name: methods}``.
        layers: candidate layers (one: no sweep), swept by held-out margin at
            ``+layer_multiplier`` minus ``-layer_multiplier`` with ``layer_methods``.
        multipliers: each method's grid for the operating point (0 included).
        pairs: ``(a, b)`` method names compared at their operating points; ``equal_norm``:
            ``(multiplier, pairs)``, also compare these pairs at that one multiplier.
        budget: the coherence budget (:class:`CoherenceBudget`).
        min_judge_accuracy: under this held-out accuracy (or ``min_judge_agreement``, the
            condition-mean correlation with ``labels``) a judge is "not judged".
        labels: readers' labels (:func:`~steerlens.evaluation.agreement.load_labels`): the
            judges' agreement with them and :attr:`Comparison.readers`.
        search: a resolution (0.05): each compared cell's budget edge is also searched per
            half, up to the grid's top (:func:`~steerlens.experiments.search.search_cells`).
        folder: the cell cache (``executor``: where cells run, None in-process; see
            :func:`~steerlens.experiments.grid.sweep_grid`).

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
    run = {"config": config, "folder": folder, "executor": executor, "progress": progress}
    items, layer_rows, recipes = _run(model, behaviours, methods, layer_methods, layers,
                                      layer_multiplier, multipliers, max_new_tokens,
                                      run)  # fmt: skip
    items, searched = _searched(model, behaviours, methods, items, budget, split_seed, search,
                                run, multipliers, max_new_tokens, pairs)  # fmt: skip
    oe = items[items["metric"] == "open_ended"]
    judges = _judges(behaviours, min_judge_accuracy, seed, labels, min_judge_agreement)
    judged = dict(zip(judges["dataset"], judges["judged"], strict=True))
    points = operating_points(oe, budget=budget, split_seed=split_seed, seed=seed)
    verdicts = compare_points(oe, points, pairs, split_seed=split_seed, seed=seed, judged=judged)
    settings = {"budget": asdict(budget), "split_seed": split_seed, "bootstrap_seed": seed,
                "n_boot": N_BOOT, "multipliers": [float(x) for x in multipliers],
                "layers": [int(x) for x in layers], "layer_multiplier": layer_multiplier,
                "max_new_tokens": max_new_tokens, "min_judge_accuracy": min_judge_accuracy,
                "min_judge_agreement": min_judge_agreement, "search": search}  # fmt: skip
    return Comparison(items, summarize(oe, seed=seed), layer_rows, judges, points, verdicts,
                      _equal_norm(oe, equal_norm, seed, judged), _costs(items, recipes), settings,
                      searched=searched, **_second_look(items, pairs, budget, judged, split_seed,
                                                        seed, labels, verdicts))  # fmt: skip


def _searched(model: Any, behaviours: Mapping[str, Behaviour], methods: Any, items: pd.DataFrame,
              budget: CoherenceBudget, split_seed: int, resolution: float | None,
              run: Mapping[str, Any], multipliers: Sequence[float], max_new_tokens: int,
              pairs: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The items with the answers of each compared cell's search at the visited multipliers
    added, and the search's table (:func:`~steerlens.experiments.search.search_cells`);
    ``resolution`` None: the items as they are, no table."""
    if resolution is None:
        return items, pd.DataFrame()
    compared = {name for pair in pairs for name in pair}
    oe = items[(items["metric"] == "open_ended") & items["method"].isin(compared)]
    settings = scoring_settings(behaviours, metric="open_ended", multipliers=multipliers,
                                positions="all", max_new_tokens=max_new_tokens)  # fmt: skip
    by = {name: as_methods(_per(methods, name)) for name in behaviours}
    rows, table = search_cells(model, behaviours, by, oe, root=cache_root(run["folder"]),
                               config=run["config"], settings=settings, budget=budget,
                               split_seed=split_seed, resolution=resolution,
                               largest=max(abs(float(x)) for x in multipliers))  # fmt: skip
    return pd.concat([items, rows], ignore_index=True), table


def _second_look(items: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                 budget: CoherenceBudget, judged: Mapping[str, bool], split_seed: int,
                 seed: int, labels: pd.DataFrame | None,
                 single: pd.DataFrame) -> dict[str, Any]:  # fmt: skip
    """The readers' verdicts beside the single-split ones; cross-fitted points and verdicts
    (Holm-adjusted, with split stability, and the readers' beside them); per-item reliability
    of the margins."""
    oe = items[items["metric"] == "open_ended"]
    margins = items[items["metric"] == "margin"]
    kw: dict[str, Any] = {"budget": budget, "split_seed": split_seed, "seed": seed}
    verdicts = cross_fitted_verdicts(oe, pairs, judged=dict(judged), **kw)
    readers, cf_readers = pd.DataFrame(), pd.DataFrame()
    if labels is not None:
        readers = reader_verdicts(oe, labels, single, seed=seed)
        if len(verdicts):
            cf_readers = crossfit_reader_verdicts(oe, labels, verdicts, split_seed=split_seed,
                                                  seed=seed)  # fmt: skip
    return {
        "readers": readers,
        "crossfit_points": cross_fitted_points(oe, **kw),
        "crossfit_verdicts": verdicts,
        "crossfit_readers": cf_readers,
        "reliability": reliability(margins, seed=seed) if len(margins) else pd.DataFrame(),
    }


def _equal_norm(oe: pd.DataFrame, equal_norm: Any, seed: int, judged: Any) -> pd.DataFrame:
    """:func:`compare_points` at one fixed multiplier on all questions (or nothing)."""
    if equal_norm is None:
        return pd.DataFrame()
    cells = oe[CELL].drop_duplicates().assign(multiplier=float(equal_norm[0]))
    return compare_points(oe, cells, equal_norm[1], questions="all", seed=seed, judged=judged)


def _run(model: Any, behaviours: Mapping[str, Behaviour], methods: Any, layer_methods: Any,
         layers: Sequence[int], layer_multiplier: float, multipliers: Sequence[float],
         max_new_tokens: int, run: dict[str, Any]) -> tuple[Any, Any, dict]:  # fmt: skip
    """Per behaviour: the layer sweep, then every method's answers at its layer (one engine
    run); all items, the chosen layers and each cell's recipe."""
    progress = run.pop("progress")
    layer_frames, frames, recipes = [], [], {}
    for name, b in behaviours.items():
        ms = _per(methods, name)
        recipes.update({(name, m.name): str(m.recipe(run["config"])) for m in ms})
        kinds = list(dict.fromkeys(m.label_kind for m in ms if m.makes_vector))
        sweepers = _per(layer_methods if layer_methods is not None else kinds, name)
        best, layer_of = _sweep_layers(model, b, ms, sweepers, layers, layer_multiplier,
                                       progress=progress, **run)  # fmt: skip
        layer_frames += [best] if len(best) else []
        frames.append(_answers(model, b, ms, layer_of, multipliers, max_new_tokens, **run))
    layer_rows = (pd.concat(layer_frames, ignore_index=True) if layer_frames else
                  pd.DataFrame(columns=["dataset", "method", "layer", "margin_range"]))  # fmt: skip
    return pd.concat(frames, ignore_index=True), layer_rows, recipes


def _per(value: Any, name: str) -> list[Method]:
    """The methods for behaviour ``name``: one list for all, or a list per behaviour."""
    chosen = value[name] if isinstance(value, Mapping) else value
    return [Method(m) if isinstance(m, str) else m for m in chosen]


def _sweep_layers(model: Any, b: Behaviour, ms: Sequence[Method], sweepers: Sequence[Method],
                  layers: Sequence[int], m: float, *, progress: bool,
                  **run: Any) -> tuple[pd.DataFrame, dict[str, int]]:  # fmt: skip
    """The layer sweep's choice per kind (one layer: no sweep), and each method's layer."""
    chosen: dict[str, int] = {}
    best = pd.DataFrame(columns=["dataset", "method", "layer", "margin_range"])
    if len(layers) > 1 and sweepers:
        shared, scored = b.shared_layer_questions(), b.for_layers()
        if shared:
            warnings.warn(f"{b.name}: {shared} of the layer sweep's pairs ask questions the "
                          "comparison reports on; give Behaviour(layer_pairs=...) pairs whose "
                          "questions it does not", SteerlensDataWarning, stacklevel=3)  # fmt: skip
        margins = sweep_grid(model, {b.name: scored}, layers=layers, methods=sweepers,
                             multipliers=(-m, 0.0, m), metric="margin", progress=progress,
                             **run)  # fmt: skip
        best = choose_layers(margins, multiplier=m).assign(
            pairs=len(scored.eval_pairs), shared_questions=shared
        )
        chosen = {r.method: int(r.layer) for r in best.itertuples()}
    by_kind = {s.label_kind: chosen.get(s.name) for s in sweepers}
    by_name = {x.name: x for x in ms}
    return best, {x.name: _layer_of(x, by_name, by_kind, int(layers[0])) for x in ms}


def _answers(model: Any, b: Behaviour, ms: Sequence[Method], layer_of: Mapping[str, int],
             multipliers: Sequence[float], max_new_tokens: int, *, config: BiPOConfig | None,
             folder: Any, executor: Any) -> pd.DataFrame:  # fmt: skip
    """Every method's answers (and margins) at its own layer: one run of the engine."""
    methods = as_methods(ms)
    cells = [Cell(b.name, m.name, layer_of[m.name], 0) for m in ms]
    metric = ["open_ended"] + (["margin"] if b.eval_pairs else [])
    settings = scoring_settings({b.name: b}, metric=metric, multipliers=multipliers,
                                positions="all", max_new_tokens=max_new_tokens)  # fmt: skip
    return run_grid(model, {b.name: b}, methods, cells, settings, config=config, folder=folder,
                    per_item=True, executor=executor, progress=False)  # fmt: skip


def _costs(items: pd.DataFrame, recipes: Mapping[tuple[str, str], str]) -> pd.DataFrame:
    """Per cell and metric: how it was made, its build and scoring time, where it ran."""
    costs = (
        items.groupby(CELL + ["metric"], sort=False)
        .agg(build_seconds=("seconds", "first"), metric_seconds=("metric_seconds", "first"),
             device=("device", "first"), norm=("norm", "first"))
        .reset_index()
    )  # fmt: skip
    costs["recipe"] = [recipes[(d, m)] for d, m in zip(costs["dataset"], costs["method"],
                                                       strict=True)]  # fmt: skip
    return costs


__all__ = [
    "CoherenceBudget",
    "Comparison",
    "choose_layers",
    "compare_methods",
    "compare_points",
    "operating_points",
    "split_questions",
]
