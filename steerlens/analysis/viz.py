"""Pictures: multiplier curves, layer sweeps, cosine-by-layer, PCA scatter, per-token views.

matplotlib figures (save with ``fig.savefig("x.png")``), circuitsvis for coloured tokens in
notebooks, and a dependency-free HTML export.

Examples:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"multiplier": [-1, 0, 1], "score": [0.2, 0.5, 0.8]})
    >>> fig = plot_multiplier_curve(df, metric="score")
    >>> [round(float(y), 1) for y in fig.axes[0].lines[0].get_ydata()]
    [0.2, 0.5, 0.8]
"""

from __future__ import annotations

import html
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure


def _new(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_multiplier_curve(
    df: pd.DataFrame, metric: str = "score", hue: str | None = None, title: str | None = None
) -> Figure:
    """Metric against multiplier, one line per value of ``hue`` (e.g. ``method``)."""
    fig, ax = _new(title or f"{metric} vs multiplier", "multiplier", metric)
    groups = df.groupby(hue, sort=False) if hue else [(None, df)]
    for name, g in groups:
        g = g.sort_values("multiplier")
        ax.plot(
            g["multiplier"], g[metric], marker="o", label=str(name) if name is not None else None
        )
    if hue:
        ax.legend()
    return fig


def plot_sweep(df: pd.DataFrame, metric: str | None = None, title: str | None = None) -> Figure:
    """Metric against layer, one line per (method, multiplier).

    Examples:
        >>> df = pd.DataFrame({"layer": [1, 2], "method": "caa", "multiplier": 1.0,
        ...                    "score": [0.4, 0.6]})
        >>> len(plot_sweep(df).axes[0].lines)
        1
    """
    metric = metric or ("score" if "score" in df else "margin")
    fig, ax = _new(title or f"{metric} by layer", "layer", metric)
    keys = [k for k in ("method", "multiplier") if k in df]
    for name, g in df.groupby(keys, sort=False):
        g = g.sort_values("layer")
        label = " ".join(
            f"{k}={v}"
            for k, v in zip(keys, name if isinstance(name, tuple) else (name,), strict=True)
        )
        ax.plot(g["layer"], g[metric], marker="o", label=label)
    ax.legend(fontsize=8)
    return fig


def plot_tradeoff(df: pd.DataFrame, title: str | None = None, *, x: str = "perplexity") -> Figure:
    """Judged behaviour against a coherence measure, one colour per method: a solid line
    through its ``+m`` answers and a dashed one through its ``-m`` answers, both from the
    unsteered point, each point labelled with its multiplier, the behaviour's 95% interval as
    error bars (``Comparison.tradeoff`` for one dataset: ``method``, ``multiplier``,
    ``behaviour``, ``behaviour_low``, ``behaviour_high`` and the ``x`` column). The
    unsteered answers are the black dot; the trade-off a method offers is how far up or down
    it gets before moving right.

    Args:
        x: the coherence column: ``"perplexity"`` (under the unsteered model) or
            ``"repetition"`` (mean per-answer repetition), or any other column.

    Examples:
        >>> df = pd.DataFrame({"method": "m", "multiplier": [-1.0, 0.0, 1.0],
        ...     "behaviour": [0.2, 0.4, 0.7], "behaviour_low": [0.1, 0.3, 0.6],
        ...     "behaviour_high": [0.3, 0.5, 0.8], "perplexity": [3.0, 2.5, 3.2]})
        >>> ax = plot_tradeoff(df).axes[0]
        >>> [[round(float(y), 1) for y in c.lines[0].get_ydata()] for c in ax.containers]
        [[0.4, 0.7], [0.4, 0.2]]
    """
    names = {"perplexity": "perplexity (unsteered model)", "repetition": "mean repetition"}
    fig, ax = _new(title or f"behaviour vs {x}", names.get(x, x), "judged behaviour")
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, g) in enumerate(df.groupby("method", sort=False)):
        colour = colours[k % len(colours)]
        zero = g[g["multiplier"] == 0]
        for sign, style in ((1, "-"), (-1, "--")):
            branch = g[g["multiplier"] * sign > 0].sort_values("multiplier", key=abs)
            branch = pd.concat([zero, branch])
            y = branch["behaviour"].to_numpy()
            err = [y - branch["behaviour_low"].to_numpy(), branch["behaviour_high"].to_numpy() - y]
            label = f"{name} (+m solid, -m dashed)" if sign > 0 else None
            ax.errorbar(branch[x], y, yerr=err, marker="o", ms=3, capsize=2, lw=1, ls=style,
                        color=colour, label=label)  # fmt: skip
            for r in branch[branch["multiplier"] != 0].itertuples():
                ax.annotate(f"{r.multiplier:+g}", (getattr(r, x), r.behaviour), fontsize=6,
                            color=colour, xytext=(2, 2), textcoords="offset points")  # fmt: skip
    base = df[df["multiplier"] == 0]
    if len(base):
        ax.plot(base[x].iloc[:1], base["behaviour"].iloc[:1], "ko", zorder=5)
    ax.legend(fontsize=6)
    return fig


def plot_cosine_by_layer(df: pd.DataFrame, title: str = "cosine similarity by layer") -> Figure:
    """Lines of cosine vs layer from :func:`steerlens.analysis.geometry.cosine_by_layer` or
    :func:`~steerlens.analysis.geometry.cosine_similarity` output.

    Examples:
        >>> df = pd.DataFrame({"layer": [1, 2], "cosine": [0.3, 0.5]})
        >>> [float(y) for y in plot_cosine_by_layer(df).axes[0].lines[0].get_ydata()]
        [0.3, 0.5]
    """
    fig, ax = _new(title, "layer", "cosine")
    if {"a", "b"} <= set(df.columns):
        for (a, b), g in df.groupby(["a", "b"], sort=False):
            g = g.sort_values("layer")
            ax.plot(g["layer"], g["cosine"], marker="o", label=f"{a} vs {b}")
        ax.legend()
    else:
        g = df.sort_values("layer")
        ax.plot(g["layer"], g["cosine"], marker="o")
    ax.set_ylim(-1.05, 1.05)
    return fig


def plot_pca(result: Any, title: str | None = None) -> Figure:
    """Scatter of a :class:`~steerlens.analysis.geometry.PCAResult` with each vector drawn as an
    arrow."""
    evr = result.explained_variance_ratio
    fig, ax = _new(
        title or f"PCA of activations at {result.hook}",
        f"PC1 ({evr[0]:.0%})",
        f"PC2 ({evr[1]:.0%})",
    )
    for label, color in (("matching", "tab:red"), ("not_matching", "tab:blue")):
        g = result.coords[result.coords["label"] == label]
        ax.scatter(g["pc1"], g["pc2"], s=14, alpha=0.6, color=color, label=label)
    span = float(result.coords[["pc1", "pc2"]].abs().to_numpy().max()) * 0.8
    cx, cy = result.coords["pc1"].mean(), result.coords["pc2"].mean()
    for i, (name, (dx, dy)) in enumerate(result.directions.items()):
        ax.annotate(
            "",
            xy=(cx + dx * span, cy + dy * span),
            xytext=(cx, cy),
            arrowprops={"arrowstyle": "->", "lw": 2, "color": f"C{i + 2}"},
        )
        ax.text(cx + dx * span, cy + dy * span, name, color=f"C{i + 2}")
    ax.legend()
    return fig


def render_projection(df: pd.DataFrame, text: int = 0, hook: str | None = None) -> Any:
    """circuitsvis coloured tokens for one text of :func:`steerlens.analysis.geometry.project`
    output."""
    import circuitsvis as cv

    sel = df[df["text"] == text]
    hook = hook or sel["hook"].iloc[0]
    sel = sel[sel["hook"] == hook].sort_values("position")
    return cv.tokens.colored_tokens(tokens=list(sel["token"]), values=list(sel["projection"]))


def projection_html(df: pd.DataFrame, text: int | None = None, hook: str | None = None) -> str:
    """A standalone HTML page of coloured tokens (red: positive projection, blue: negative).

    Examples:
        >>> df = pd.DataFrame({"text": 0, "hook": "h", "position": [0, 1],
        ...                    "token": ["a", "<b>"], "projection": [1.0, -1.0]})
        >>> "&lt;b&gt;" in projection_html(df)
        True
    """
    parts = [
        "<!doctype html><meta charset='utf-8'><title>steerlens projections</title>",
        "<body style='font-family:monospace;line-height:2'>",
    ]
    texts = [text] if text is not None else sorted(df["text"].unique())
    for t in texts:
        sel = df[df["text"] == t]
        h = hook or sel["hook"].iloc[0]
        sel = sel[sel["hook"] == h].sort_values("position")
        scale = max(float(sel["projection"].abs().max()), 1e-9)
        parts.append(f"<h3>text {t} &middot; {html.escape(h)}</h3><p>")
        for tok, val in zip(sel["token"], sel["projection"], strict=True):
            a = min(abs(val) / scale, 1.0)
            rgb = "220,50,47" if val >= 0 else "38,139,210"
            parts.append(
                f"<span title='{val:.3f}' style='background:rgba({rgb},{a:.2f})'>"
                f"{html.escape(tok).replace(chr(10), '&#8629;<br>')}</span>"
            )
        parts.append("</p>")
    parts.append("</body>")
    return "".join(parts)


__all__ = [
    "plot_cosine_by_layer",
    "plot_multiplier_curve",
    "plot_pca",
    "plot_sweep",
    "projection_html",
    "render_projection",
]
