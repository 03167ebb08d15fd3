"""Figures of runs: held-out metrics against a swept hyper-parameter, and curves over optimizer steps.

matplotlib (``pip install -e ".[dev]"``) is imported when a figure is first drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prefdistill.analysis.history import metric_curve
from prefdistill.analysis.runs import metric_columns

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

# Curves drawn by default (those any run logged).
CURVE_METRICS = (
    "train/loss",
    "train/reward/margin",
    "train/reward/accuracy",
    "train/reward/chosen",
    "train/reward/rejected",
    "val/loss",
    "val/reward/margin",
    "val/reward/accuracy",
)


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.2)):
    """A figure with ``n`` visible panels, ``ncols`` to a row; the panels as a flat list."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _default_hue(table: pd.DataFrame, x: str) -> str | None:
    """``method`` when runs differ in method, else ``model``, else the first other swept entry."""
    others = [c for c in ["method", "model", *table.attrs.get("swept", [])] if c != x and c in table]
    return next((c for c in others if table[c].map(repr).nunique() > 1), None)


def plot_sweep(
    table: pd.DataFrame,
    x: str,
    metrics: Iterable[str] | None = None,
    hue: str | None = None,
    before: bool = True,
    logx: bool | None = None,
) -> Figure:
    """One panel per metric (default :func:`.runs.metric_columns`) against the config entry ``x``
    (e.g. ``method.beta``, ``method.margin``): one line per value of ``hue`` (default:
    :func:`_default_hue`). ``before`` adds the held-out value before training as a dotted line;
    ``logx`` defaults to a log axis when x spans 10x or more."""
    import pandas as pd

    if x not in table:
        raise KeyError(f"{x!r} is not a column of the runs table; swept: {table.attrs.get('swept')}")
    metrics = metric_columns(table, metrics)
    if not metrics:
        raise ValueError("no metric to plot: no run has finished (metrics.json) with held-out metrics")
    hue = _default_hue(table, x) if hue is None else hue
    data = table[table[x].notna()]
    xs = data[x]
    numeric = pd.api.types.is_numeric_dtype(xs)
    if logx is None:
        logx = bool(numeric and len(xs) and (xs > 0).all() and xs.max() >= 10 * xs.min())
    groups = list(data.groupby(hue, dropna=False, sort=True)) if hue else [(None, data)]
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        for value, group in groups:
            group = group.sort_values(x) if numeric else group
            label = None if hue is None else f"{hue}={value}"
            (line,) = ax.plot(group[x], group[metric], marker="o", label=label)
            if before and f"before/{metric}" in group and group[f"before/{metric}"].notna().any():
                ax.plot(group[x], group[f"before/{metric}"], ls=":", marker=".", color=line.get_color(),
                        label=None if hue is None else f"{label} (before)")  # fmt: skip
        ax.set_xlabel(x)
        ax.set_title(metric)
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if hue is not None:
            ax.legend(fontsize="small")
    fig.suptitle(f"held-out metrics after training vs {x}" + (" (dotted: before)" if before else ""))
    fig.tight_layout()
    return fig


def plot_curves(
    histories: dict[str, pd.DataFrame],
    metrics: Iterable[str] | None = None,
    smooth: float = 0.0,
    labels: dict[str, str] | None = None,
) -> Figure:
    """One panel per metric (default: the :data:`CURVE_METRICS` any run logged) over optimizer
    steps, one line per run (``histories``: :func:`.history.load_histories`); held-out points are
    marked. ``smooth`` applies to training curves (:func:`.history.metric_curve`); ``labels``
    renames runs in the legend (e.g. :func:`.runs.run_labels`)."""
    labels = labels or {}
    metrics = CURVE_METRICS if metrics is None else metrics
    metrics = [m for m in metrics if any(m in h and h[m].notna().any() for h in histories.values())]
    if not metrics:
        raise ValueError("no step history to plot (runs logged with logger=none, or nothing logged yet)")
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        for label, history in histories.items():
            curve = metric_curve(history, metric, smooth=smooth if metric.startswith("train/") else 0.0)
            if len(curve):
                marker = "o" if metric.startswith(("val/", "test/")) or len(curve) < 10 else None
                ax.plot(curve["step"], curve[metric], marker=marker, ms=3, label=labels.get(label, label))
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
