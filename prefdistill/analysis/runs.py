"""Run discovery: the run folders of a results folder, one run's config and metrics, the runs table.

A *run folder* is what ``python train.py`` writes: ``config_resolved.yaml`` (the composed config,
written first), ``metrics.json`` (held-out metrics ``before``/``after`` training, ``train`` metrics,
step count, paths; written last), ``csv/metrics.csv`` (the step history, see :mod:`.history`) and,
after ``evaluate.py run_dir=<run>`` or ``eval=<suite>``, ``eval_<suite>/eval_results.json``. A
*results folder* is a run folder, a multirun folder (one run folder per job) or any folder holding
run folders.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdistill.utils.nested import flatten

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

RESULTS_ENV = "PREFDISTILL_RESULTS"
CONFIG_FILE = "config_resolved.yaml"
METRICS_FILE = "metrics.json"

# Columns every table has before the hyper-parameters and metrics.
RUN_COLUMNS = ("run", "path", "method", "model", "finished", "global_step", "wall_time_s")
# Held-out metrics plotted and tabulated by default (those present); win rates are added when a run
# was evaluated (``eval/.../win_rate``).
SWEEP_METRICS = ("val/reward/accuracy", "val/reward/margin", "val/loss")
# Config entries that differ between the jobs of a sweep without being swept (the loggers' per-run names and ids).
_NOT_SWEPT = re.compile(
    r"(^run_name$|(^|\.)(id|group)$|_target_$|^paths\.|^hydra\.|^logger\.|^method\.name$)"
)
# Folders of a run that may hold a copy of its config without being runs themselves.
_NOT_RUNS = {"wandb", "checkpoints", "model"}

Results = str | Path | Iterable[str | Path]


# -- finding runs -------------------------------------------------------------------------------


def _repo_root() -> Path:
    """``$PREFDISTILL_ROOT`` (as configs/paths uses it), else the source checkout, else the cwd."""
    if os.environ.get("PREFDISTILL_ROOT"):
        return Path(os.environ["PREFDISTILL_ROOT"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "configs" / "train.yaml").is_file() else Path.cwd()


def latest_multirun(log_dir: str | Path | None = None) -> Path:
    """The most recent multirun folder (``<log_dir>/<task>/multiruns/<time>``) holding a run.

    ``log_dir`` defaults to ``<root>/logs`` (root: ``$PREFDISTILL_ROOT`` or the checkout).
    """
    log_dir = Path(log_dir) if log_dir is not None else _repo_root() / "logs"
    sweeps = [p for p in log_dir.glob("*/multiruns/*") if p.is_dir() and find_runs(p, missing_ok=True)]
    if not sweeps:
        raise FileNotFoundError(f"no multirun folder with runs under {log_dir} (set ${RESULTS_ENV})")
    return max(sweeps, key=lambda p: (p.name, p.stat().st_mtime))  # <time> names sort by time


def _located(path: Path) -> Path:
    """A results folder given relative to where the command was typed: the current folder, else the shell's
    (``$PWD``: a notebook's kernel, ``jupyter execute notebooks/<name>.ipynb`` too, runs in the notebook's
    folder), else the project root."""
    if path.is_absolute() or path.exists():
        return path
    for base in (os.environ.get("PWD"), _repo_root()):
        if base and (Path(base) / path).exists():
            return Path(base) / path
    raise FileNotFoundError(f"results folder {path} does not exist")


def results_dirs(value: str | None = None) -> list[Path]:
    """The results folders to analyse: ``value``, else ``$PREFDISTILL_RESULTS`` (several separated
    by ``os.pathsep``), else :func:`latest_multirun`."""
    value = value if value is not None else os.environ.get(RESULTS_ENV, "")
    paths = [_located(Path(p).expanduser()) for p in value.split(os.pathsep) if p.strip()]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"results folder {p} does not exist")
    return paths or [latest_multirun()]


def _roots(results: Results) -> list[Path]:
    return [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]


def _natural_key(path: Path) -> list:
    """Job 10 after job 2: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(results: Results, missing_ok: bool = False) -> list[Path]:
    """Run folders (holding ``config_resolved.yaml``) at or under ``results``, in job order."""
    roots = _roots(results)
    found: dict[Path, None] = {}
    for root in (r.expanduser() for r in roots):
        if (root / CONFIG_FILE).is_file():
            found[root] = None
            continue
        for cfg in sorted(root.rglob(CONFIG_FILE), key=_natural_key):
            if not _NOT_RUNS.intersection(cfg.relative_to(root).parts):
                found[cfg.parent] = None
    if not found and not missing_ok:
        raise FileNotFoundError(f"no run folder ({CONFIG_FILE}) under {[str(r) for r in roots]}")
    return list(found)


def _label(run_dir: Path, roots: Sequence[Path]) -> str:
    """A run's name in tables and legends: its path under its results folder, prefixed by that
    folder's name when there are several."""
    for root in roots:
        try:
            rel = run_dir.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        name = str(rel) if str(rel) != "." else run_dir.name
        return name if len(roots) == 1 else f"{root.name}/{name}"
    return run_dir.name


def labelled_runs(results: Results) -> dict[str, Path]:
    """``{label: run folder}`` for every run under ``results``, in job order: the one naming of runs
    the runs table and the step histories share."""
    roots = _roots(results)
    return {_label(run_dir, roots): run_dir for run_dir in find_runs(roots)}


# -- one run -----------------------------------------------------------------------------------


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """One run folder: ``{"path", "config" (nested dict), "metrics" (metrics.json or {}),
    "finished", "eval" (eval_results.json dicts)}``. A run without metrics.json is unfinished
    (still running, or stopped): its config and step history are still usable."""
    import yaml

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    metrics_file = run_dir / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    evals = [json.loads(p.read_text()) for p in sorted(run_dir.glob("eval_*/eval_results.json"))]
    finished = metrics_file.is_file()
    return {"path": run_dir, "config": config, "metrics": metrics, "finished": finished, "eval": evals}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_metrics(run: dict[str, Any]) -> dict[str, float]:
    """Flat metrics of a loaded run, named as ``train.main`` returns them: held-out metrics after
    training under their own names (``val/loss``), before training as ``before/val/loss``, training
    metrics (``train/...``), evaluation metrics as ``eval/<metric>`` (from metrics.json when train.py
    evaluated, else from the run's ``eval_<suite>/eval_results.json``) and the run's cost as
    ``cost/seconds`` and ``cost/tokens`` (pipeline stages + training, ``utils/cost.py``)."""
    m = run["metrics"]
    out: dict[str, float] = {}
    out.update({f"before/{k}": v for k, v in m.get("before", {}).items()})
    out.update(m.get("train", {}))
    cost = m.get("cost") or {}
    out.update({name: cost[key] for name, key in (("cost/seconds", "total_s"), ("cost/tokens", "total_tokens"))
                if key in cost})  # fmt: skip
    for result in run["eval"]:
        for k, v in result.get("metrics", {}).items():
            out.setdefault(f"eval/{k}", v)
    out.update(m.get("after", {}))
    return {k: v for k, v in out.items() if _number(v)}


def _run_row(run: dict[str, Any], label: str) -> dict[str, Any]:
    """The :data:`RUN_COLUMNS` of one run."""
    cfg = run["config"]
    model = (cfg.get("model") or {}).get("name_or_path")
    return {
        "run": label,
        "path": str(run["path"]),
        "method": (cfg.get("method") or {}).get("name"),
        "model": Path(str(model)).name if model else None,
        "finished": run["finished"],
        "global_step": run["metrics"].get("global_step"),
        "wall_time_s": run["metrics"].get("wall_time_s"),
    }


# -- many runs ---------------------------------------------------------------------------------


def runs_table(results: Results) -> pd.DataFrame:
    """One row per run folder under ``results``: :data:`RUN_COLUMNS`, every scalar config entry
    (dotted: ``method.beta``, ``module.optimizer.lr``) and :func:`run_metrics`. ``df.attrs``
    holds ``"swept"`` (:func:`swept_params`), ``"config_columns"``, ``"metric_columns"`` and
    ``"eval"`` (the eval_results.json dicts, for footnotes)."""
    import pandas as pd

    rows, config_cols, metric_cols, evals = [], {}, {}, []
    for label, run_dir in labelled_runs(results).items():
        run = load_run(run_dir)
        config = {
            k: v
            for k, v in flatten(run["config"]).items()
            if v is None or isinstance(v, (str, int, float, bool))
        }
        metrics = run_metrics(run)
        config_cols.update(dict.fromkeys(config))
        metric_cols.update(dict.fromkeys(metrics))
        evals += run["eval"]
        rows.append({**config, **metrics, **_run_row(run, label)})
    config_cols = [c for c in config_cols if c not in RUN_COLUMNS]
    metric_cols = [c for c in metric_cols if c not in RUN_COLUMNS and c not in config_cols]
    df = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *config_cols, *metric_cols])
    df.attrs.update(
        swept=swept_params(df, config_cols),
        config_columns=config_cols,
        metric_columns=metric_cols,
        eval=evals,
    )
    return df


def swept_params(table: pd.DataFrame, columns: Iterable[str] | None = None) -> list[str]:
    """Config entries whose value differs between the runs of ``table`` (e.g. ``method.beta``,
    ``method.margin``, ``module.optimizer.lr``), leaving out those that differ between any two jobs (run
    name, W&B id and group, absolute paths, ``_target_``), ``method.name`` and ``model.*``/
    ``teacher.*`` (the ``method`` and ``model`` columns name them)."""
    columns = table.attrs.get("config_columns", []) if columns is None else columns
    swept = []
    for col in columns:
        if col not in table or _NOT_SWEPT.search(col) or col.startswith(("model.", "teacher.")):
            continue
        values = table[col]
        if values.map(lambda v: isinstance(v, str) and os.path.isabs(v)).any():
            continue  # a path: differs per run folder
        if values.map(repr).nunique() > 1:
            swept.append(col)
    return swept


def run_labels(table: pd.DataFrame) -> dict[str, str]:
    """``{run: "run (method=..., beta=...)"}``: each run named with what sets it apart (method and
    model when they vary, then the swept entries), for legends."""
    keys = [c for c in ("method", "model") if c in table and table[c].map(repr).nunique() > 1]
    keys += table.attrs.get("swept", [])
    labels = {}
    for row in table.to_dict("records"):
        parts = [f"{k.split('.')[-1]}={row.get(k)}" for k in keys]
        labels[str(row["run"])] = f"{row['run']} ({', '.join(parts)})" if parts else str(row["run"])
    return labels


def metric_columns(table: pd.DataFrame, metrics: Iterable[str] | None = None) -> list[str]:
    """``metrics`` present in ``table``; by default :data:`SWEEP_METRICS` plus every evaluation win
    rate (``eval/.../win_rate``) and accuracy (``eval/gsm8k/accuracy``) any run has."""
    if metrics is None:
        extra = [
            c for c in table.attrs.get("metric_columns", table.columns)
            if c.startswith("eval/") and c.endswith(("win_rate", "accuracy"))
        ]  # fmt: skip
        metrics = [*SWEEP_METRICS, *extra]
    return [m for m in metrics if m in table and table[m].notna().any()]
