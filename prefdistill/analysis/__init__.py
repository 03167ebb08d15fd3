"""Load finished runs and sweeps, plot them, and tabulate them (the logic behind ``notebooks/``).

    from prefdistill import analysis
    results = analysis.results_dirs()                  # $PREFDISTILL_RESULTS, else the latest multirun
    table = analysis.runs_table(results)               # one row per run: config + metrics
    analysis.plot_sweep(table, "method.beta")          # held-out metrics against a swept value
    analysis.plot_curves(analysis.load_histories(results))   # loss / reward curves over steps
    print(analysis.comparison_table(table))            # method comparison, markdown

``runs`` finds run folders and reads their config and metrics (the runs table); ``history`` reads
their step history (``<run>/csv/metrics.csv``, which ``prefdistill.utils.csv_logger`` writes); ``plots`` and
``tables`` draw and tabulate them. pandas (a dependency of ``datasets``) and matplotlib
(``pip install -e ".[dev]"``) are imported when first needed.
"""

from prefdistill.analysis.history import HISTORY_FILE, load_histories, load_history, metric_curve
from prefdistill.analysis.plots import CURVE_METRICS, plot_curves, plot_sweep
from prefdistill.analysis.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_ENV,
    RUN_COLUMNS,
    SWEEP_METRICS,
    find_runs,
    flatten,
    labelled_runs,
    latest_multirun,
    load_run,
    metric_columns,
    results_dirs,
    run_labels,
    run_metrics,
    runs_table,
    swept_params,
)
from prefdistill.analysis.tables import comparison_columns, comparison_table

__all__ = [
    "CONFIG_FILE",
    "CURVE_METRICS",
    "HISTORY_FILE",
    "METRICS_FILE",
    "RESULTS_ENV",
    "RUN_COLUMNS",
    "SWEEP_METRICS",
    "comparison_columns",
    "comparison_table",
    "find_runs",
    "flatten",
    "labelled_runs",
    "latest_multirun",
    "load_histories",
    "load_history",
    "load_run",
    "metric_columns",
    "metric_curve",
    "plot_curves",
    "plot_sweep",
    "results_dirs",
    "run_labels",
    "run_metrics",
    "runs_table",
    "swept_params",
]
