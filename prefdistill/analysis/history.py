"""The step history of a run: ``<run>/csv/metrics.csv``, read into DataFrames and per-metric curves.

Every run with the default ``logger=wandb`` or with ``logger=csv`` writes that file beside its other
outputs (Lightning's CSV logger, :class:`prefdistill.utils.csv_logger.AppendingCSVLogger`): one row per logging call,
a ``step`` column (the optimizer step), ``epoch`` and one column per logged scalar, empty where a row
did not log it. A resumed run appends to it after dropping the rows its checkpoint does not cover, so each
step appears once (files of older versions may repeat steps: :func:`metric_curve` keeps the last).
The CSV is read rather than W&B's own ``.wandb`` files because wandb ships no reader for those.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefdistill.analysis.runs import Results, labelled_runs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

HISTORY_FILE = Path("csv") / "metrics.csv"


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """Step history of a run folder (:data:`HISTORY_FILE`) as a DataFrame with a ``step`` column and
    one column per logged scalar, rows in logging order; empty (only ``step``) when the run logged
    no CSV (``logger=none``, ``logger=tensorboard``, or a run made before the CSV was written)."""
    import pandas as pd

    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return pd.DataFrame({"step": pd.Series(dtype=float)})
    return pd.read_csv(path)


def load_histories(results: Results) -> dict[str, pd.DataFrame]:
    """``{run label: load_history(run)}`` for every run folder under ``results`` (labels as in
    :func:`.runs.runs_table`)."""
    return {label: load_history(run_dir) for label, run_dir in labelled_runs(results).items()}


def metric_curve(history: pd.DataFrame, metric: str, smooth: float = 0.0) -> pd.DataFrame:
    """``(step, metric)`` rows of one metric, sorted by step; a step logged twice (a resumed run of an
    older version repeating the steps after its last checkpoint) keeps its last value. ``smooth`` in [0, 1) is an
    exponential moving average weight (as W&B's smoothing slider)."""
    import pandas as pd

    if metric not in history or "step" not in history:
        return pd.DataFrame({"step": [], metric: []})
    curve = history[["step", metric]].dropna()
    curve = curve.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    if smooth:
        curve[metric] = curve[metric].ewm(alpha=1.0 - smooth, adjust=True).mean()
    return curve
