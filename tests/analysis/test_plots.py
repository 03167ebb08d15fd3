"""prefdistill.analysis.plots on hand-made runs: panels, lines, their data, hues and log axes."""

from __future__ import annotations

import pytest
from run_folders import make_run

from prefdistill import analysis

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_sweep_panels_lines_and_hue(grid):
    table = analysis.runs_table(grid)
    fig = analysis.plot_sweep(table, "method.beta")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["val/reward/accuracy", "val/reward/margin", "val/loss"]
    lines = axes[0].get_lines()  # margin 1.0 and 2.0, each after (solid) and before (dotted)
    assert [line.get_label() for line in lines] == [
        "method.margin=1.0",
        "method.margin=1.0 (before)",
        "method.margin=2.0",
        "method.margin=2.0 (before)",
    ]
    assert list(lines[2].get_xdata()) == [0.1, 0.5, 1.0] and axes[0].get_xscale() == "log"
    assert list(lines[2].get_ydata()) == pytest.approx([0.7, 0.8, 0.9])
    fig = analysis.plot_sweep(table, "method.margin", metrics=["val/loss"], before=False, hue="method")
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert len(ax.get_lines()) == 1 and ax.get_xscale() == "linear"
    with pytest.raises(KeyError, match="swept"):
        analysis.plot_sweep(table, "method.gamma")


def test_plot_sweep_needs_finished_runs(tmp_path):
    make_run(tmp_path / "0", finished=False)
    make_run(tmp_path / "1", beta=0.5, finished=False)
    with pytest.raises(ValueError, match="no metric to plot"):
        analysis.plot_sweep(analysis.runs_table(tmp_path), "method.beta")


def test_plot_curves_one_line_per_run(grid):
    histories = analysis.load_histories(grid)
    assert list(histories) == ["0", "1", "2", "3", "10"] and histories["10"].empty
    labels = analysis.run_labels(analysis.runs_table(grid))
    fig = analysis.plot_curves(histories, labels=labels)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["train/loss", "val/loss"]
    lines = axes[0].get_lines()
    assert [line.get_label() for line in lines][:2] == [
        "0 (beta=0.1, margin=1.0)",
        "1 (beta=0.5, margin=1.0)",
    ]
    assert list(lines[0].get_xdata()) == [0, 1, 2] and list(axes[1].get_lines()[0].get_xdata()) == [0, 3]
    assert list(lines[1].get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3])
    fig = analysis.plot_curves(histories, ["train/lr", "train/nothing"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["train/lr"]
    with pytest.raises(ValueError, match="no step history"):
        analysis.plot_curves({"10": histories["10"]})
