"""Load finished runs and sweeps, plot them, and tabulate them (the logic behind ``notebooks/``).

A *run folder* is what ``python train.py`` writes: ``config_resolved.yaml`` (the composed config,
written first), ``metrics.json`` (held-out metrics ``before``/``after`` training, ``train`` metrics,
step count, paths; written last), ``wandb/`` (the offline W&B run, or ``csv/metrics.csv`` with
``logger=csv``) and, after ``evaluate.py run_dir=<run>`` or ``eval=<suite>``,
``eval_<suite>/eval_results.json``. A *results folder* is a run folder, a multirun folder (one run
folder per job) or any folder holding run folders.

    from prefdistill import analysis
    results = analysis.results_dirs()                  # $PREFDISTILL_RESULTS, else the latest multirun
    table = analysis.runs_table(results)               # one row per run: config + metrics
    analysis.plot_sweep(table, "method.beta")          # held-out metrics against a swept value
    analysis.plot_curves(analysis.load_histories(results))   # loss / reward curves over steps
    print(analysis.comparison_table(table))            # method comparison, markdown

Step histories are read from the W&B run files themselves (``run-<id>.wandb``, W&B's record log
of protobuf ``Record`` messages; see :func:`read_wandb_history`), so nothing is synced or uploaded.

pandas (a dependency of ``datasets``) and matplotlib (``pip install -e ".[dev]"``) are imported
when first needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

RESULTS_ENV = "PREFDISTILL_RESULTS"
CONFIG_FILE = "config_resolved.yaml"
METRICS_FILE = "metrics.json"

# Columns every table has before the hyper-parameters and metrics.
RUN_COLUMNS = ("run", "path", "method", "model", "finished", "global_step", "wall_time_s")
# Held-out metrics plotted and tabulated by default (those present); win rates are added when a run
# was evaluated (``eval/.../win_rate``).
SWEEP_METRICS = ("val/reward/accuracy", "val/reward/margin", "val/loss")
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
# Config entries that differ between the jobs of a sweep without being swept.
_NOT_SWEPT = re.compile(r"(^run_name$|(^|\.)(id|group)$|_target_$|^paths\.|^hydra\.|^method\.name$)")


# -- finding runs -------------------------------------------------------------------------------


def _repo_root() -> Path:
    """``$PREFDISTILL_ROOT`` (as configs/paths uses it), else the source checkout, else the cwd."""
    if os.environ.get("PREFDISTILL_ROOT"):
        return Path(os.environ["PREFDISTILL_ROOT"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
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


def results_dirs(value: str | None = None) -> list[Path]:
    """The results folders to analyse: ``value``, else ``$PREFDISTILL_RESULTS`` (several separated
    by ``os.pathsep``), else :func:`latest_multirun`."""
    value = value if value is not None else os.environ.get(RESULTS_ENV, "")
    paths = [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"results folder {p} does not exist")
    return paths or [latest_multirun()]


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(results: str | Path | Iterable[str | Path], missing_ok: bool = False) -> list[Path]:
    """Run folders (holding ``config_resolved.yaml``) at or under ``results``, in job order."""
    roots = [results] if isinstance(results, (str, Path)) else list(results)
    found: dict[Path, None] = {}
    for root in map(Path, roots):
        root = root.expanduser()
        if (root / CONFIG_FILE).is_file():
            found[root] = None
            continue
        for cfg in sorted(root.rglob(CONFIG_FILE), key=_natural_key):
            if not any(part in {"wandb", "checkpoints", "model"} for part in cfg.relative_to(root).parts):
                found[cfg.parent] = None
    if not found and not missing_ok:
        raise FileNotFoundError(f"no run folder ({CONFIG_FILE}) under {[str(r) for r in roots]}")
    return list(found)


# -- one run -----------------------------------------------------------------------------------


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _eval_results(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("eval_*/eval_results.json"))]


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """One run folder: ``{"path", "config" (nested dict), "metrics" (metrics.json or {}),
    "finished", "eval" (eval_results.json dicts)}``. A run without metrics.json is unfinished
    (still running, or stopped): its config and step history are still usable."""
    import yaml

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    metrics_file = run_dir / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return {
        "path": run_dir,
        "config": config,
        "metrics": metrics,
        "finished": metrics_file.is_file(),
        "eval": _eval_results(run_dir),
    }


def run_metrics(run: dict[str, Any]) -> dict[str, float]:
    """Flat metrics of a loaded run, named as ``train.main`` returns them: held-out metrics after
    training under their own names (``val/loss``), before training as ``before/val/loss``, training
    metrics (``train/...``), and evaluation metrics as ``eval/<metric>`` (from metrics.json when
    train.py evaluated, else from the run's ``eval_<suite>/eval_results.json``)."""
    m = run["metrics"]
    out: dict[str, float] = {}
    out.update({f"before/{k}": v for k, v in m.get("before", {}).items()})
    out.update(m.get("train", {}))
    for result in run["eval"]:
        for k, v in result.get("metrics", {}).items():
            out.setdefault(f"eval/{k}", v)
    out.update(m.get("after", {}))
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _run_row(run: dict[str, Any], label: str) -> dict[str, Any]:
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


def _label(run_dir: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            rel = run_dir.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        name = str(rel) if str(rel) != "." else run_dir.name
        return name if len(roots) == 1 else f"{root.name}/{name}"
    return run_dir.name


# -- many runs ---------------------------------------------------------------------------------


def runs_table(results: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder under ``results``: :data:`RUN_COLUMNS`, every scalar config entry
    (dotted: ``method.beta``, ``module.optimizer.lr``) and :func:`run_metrics`. ``df.attrs``
    holds ``"swept"`` (:func:`swept_params`), ``"config_columns"``, ``"metric_columns"`` and
    ``"eval"`` (the eval_results.json dicts, for footnotes)."""
    import pandas as pd

    roots = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    rows, config_cols, metric_cols, evals = [], {}, {}, []
    for run_dir in find_runs(roots):
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
        rows.append({**config, **metrics, **_run_row(run, _label(run_dir, roots))})
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


# -- W&B offline run files ---------------------------------------------------------------------

# W&B's record log (``run-<id>.wandb``): a 7-byte file header (b":W&B", magic 0xBEE1, version 0),
# then 32 KiB blocks of records, each a 7-byte header (CRC-32 of type byte + data, length, type:
# full / first / middle / last piece) and data; a block's tail shorter than a header is zero
# padding. The data of a full record is one serialized ``wandb_internal_pb2.Record``.
_WANDB_IDENT, _WANDB_MAGIC = b":W&B", 0xBEE1
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_wandb_records(path: str | Path) -> Iterator[bytes]:
    """Serialized protobuf records of a ``.wandb`` file, in order. A torn or corrupt tail (a run
    killed mid-write) ends the iteration with a warning instead of an error."""
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER]) if len(data) >= _HEADER else (b"", 0, 0)
    if ident != _WANDB_IDENT or magic != _WANDB_MAGIC:
        raise ValueError(f"{path} is not a W&B run file (header {data[:_HEADER]!r})")
    if version != 0:
        log.warning("%s: W&B run file version %d, read as version 0", path, version)
    pos, pieces = _HEADER, None
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0 and crc == 0:  # zero padding of a preallocated tail
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            log.warning("%s: torn or corrupt record at byte %d; read up to it", path, pos)
            return
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pieces = [chunk]
        elif kind == _MIDDLE and pieces is not None:
            pieces.append(chunk)
        elif kind == _LAST and pieces is not None:
            yield b"".join([*pieces, chunk])
            pieces = None
        else:
            log.warning("%s: unexpected record type %d at byte %d; read up to it", path, kind, pos)
            return


def read_wandb_history(path: str | Path) -> list[dict[str, Any]]:
    """The ``wandb.log`` rows of a ``.wandb`` file: one dict per history record, keys as logged
    (``train/loss``, ``trainer/global_step``, ``_step``, ...), values decoded from JSON."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in iter_wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            try:
                row[key] = json.loads(item.value_json)
            except ValueError:
                row[key] = item.value_json
        rows.append(row)
    return rows


def wandb_run_finished(path: str | Path) -> bool:
    """Whether a ``.wandb`` file holds its run's exit record: the run ended and W&B wrote the file
    to the end. (W&B writes it in 32 KiB blocks from a service process, which can finish writing
    after ``wandb.finish()`` returns; ``wandb.teardown()`` or the end of the process waits for it.)"""
    from wandb.proto import wandb_internal_pb2

    for raw in iter_wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


def wandb_files(run_dir: str | Path) -> list[Path]:
    """The W&B run files of a run folder (``wandb/{offline-,}run-<time>-<id>/run-<id>.wandb``),
    oldest first: a resumed run adds one folder per launch."""
    files = [p for p in Path(run_dir).glob("wandb/*run-*/run-*.wandb") if not p.parent.is_symlink()]

    def started(path: Path) -> str:
        match = re.search(r"\d{8}_\d{6}", path.parent.name)
        return match.group(0) if match else path.parent.name

    return sorted(files, key=lambda p: (started(p), p.parent.name))


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """Step history of a run folder as a DataFrame with a ``step`` column (the optimizer step,
    ``trainer/global_step``) and one column per logged scalar. Read from the W&B run files
    (default ``logger=wandb``), else Lightning's CSV log (``logger=csv``: ``csv/metrics.csv``);
    empty when the run logged neither. Rows are in logging order: a resumed run can log a step
    twice (see :func:`metric_curve`)."""
    import pandas as pd

    run_dir = Path(run_dir)
    rows = []
    for f in wandb_files(run_dir):
        for row in read_wandb_history(f):
            row = {k: v for k, v in row.items() if _scalar(v)}
            row["step"] = row.get("trainer/global_step", row.get("_step"))
            rows.append(row)
    if rows:
        return pd.DataFrame(rows)
    csvs = sorted(run_dir.glob("csv/**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if csvs:
        return pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    return pd.DataFrame({"step": pd.Series(dtype=float)})


def load_histories(results: str | Path | Iterable[str | Path]) -> dict[str, pd.DataFrame]:
    """``{run label: load_history(run)}`` for every run folder under ``results`` (labels as in
    :func:`runs_table`)."""
    roots = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    return {_label(run_dir, roots): load_history(run_dir) for run_dir in find_runs(roots)}


def metric_curve(history: pd.DataFrame, metric: str, smooth: float = 0.0) -> pd.DataFrame:
    """``(step, metric)`` rows of one metric, sorted by step; a step logged twice (a resumed run
    repeating the steps after its last checkpoint) keeps its last value. ``smooth`` in [0, 1) is an
    exponential moving average weight (as W&B's smoothing slider)."""
    if metric not in history or "step" not in history:
        import pandas as pd

        return pd.DataFrame({"step": [], metric: []})
    curve = history[["step", metric]].dropna()
    curve = curve.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    if smooth:
        curve[metric] = curve[metric].ewm(alpha=1.0 - smooth, adjust=True).mean()
    return curve


# -- plots -------------------------------------------------------------------------------------


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.2)):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_sweep(
    table: pd.DataFrame,
    x: str,
    metrics: Iterable[str] | None = None,
    hue: str | None = None,
    before: bool = True,
    logx: bool | None = None,
) -> Figure:
    """One panel per metric (default :func:`metric_columns`) against the config entry ``x`` (e.g.
    ``method.beta``, ``method.margin``): one line per value of ``hue`` (default: ``method`` when
    runs differ in method, else the first other swept entry). ``before`` adds the held-out value
    before training as a dotted line; ``logx`` defaults to a log axis when x spans 10x or more."""
    import pandas as pd

    if x not in table:
        raise KeyError(f"{x!r} is not a column of the runs table; swept: {table.attrs.get('swept')}")
    metrics = metric_columns(table, metrics)
    if not metrics:
        raise ValueError("no metric to plot: no run has finished (metrics.json) with held-out metrics")
    if hue is None:
        others = [c for c in ["method", "model", *table.attrs.get("swept", [])] if c != x and c in table]
        hue = next((c for c in others if table[c].map(repr).nunique() > 1), None)
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
    steps, one line per run (``histories``: :func:`load_histories`); held-out points are marked.
    ``smooth`` applies to training curves (:func:`metric_curve`); ``labels`` renames runs in the
    legend (e.g. :func:`run_labels`)."""
    labels = labels or {}
    if metrics is None:
        metrics = CURVE_METRICS
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


# -- tables ------------------------------------------------------------------------------------


def comparison_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """``(column, header)`` pairs of the method comparison table: run identity, the swept
    hyper-parameters, held-out metrics before -> after, the training loss, and every evaluation
    column of :data:`prefdistill.eval.report.COLUMNS` any run has (as ``eval/<metric>``)."""
    from prefdistill.eval.report import COLUMNS

    cols = [("run", "Run"), ("method", "Method"), ("model", "Model")]
    cols += [(p, p.split(".")[-1]) for p in table.attrs.get("swept", [])]
    cols += [("global_step", "Steps")]
    for metric, header in (
        ("val/reward/accuracy", "Acc"),
        ("val/reward/margin", "Margin"),
        ("val/loss", "Val loss"),
    ):
        if f"before/{metric}" in table:
            cols.append((f"before/{metric}", f"{header} before"))
        cols.append((metric, header))
    cols.append(("train/loss", "Train loss"))
    cols += [(f"eval/{key}", header) for key, header in COLUMNS if key != "n"]
    return [(c, h) for c, h in cols if c in table and table[c].notna().any()]


def _cell(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or column in ("global_step", "eval/n") or abs(value) >= 1000:
        return str(int(value))
    return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"


def comparison_table(table: pd.DataFrame, columns: Sequence[tuple[str, str]] | None = None) -> str:
    """The method comparison as a markdown table, one row per run (columns:
    :func:`comparison_columns`), formatted like ``evaluate.py compare=...`` with its footnotes
    naming the evaluation scorers."""
    from prefdistill.eval.report import footnotes, markdown_table

    columns = comparison_columns(table) if columns is None else list(columns)
    header = [h for _, h in columns]
    body = [[_cell(row.get(c), c) for c, _ in columns] for row in table.to_dict("records")]
    left = [j for j, (c, _) in enumerate(columns) if c in ("run", "method", "model")]
    notes = footnotes(table.attrs.get("eval", []))
    unfinished = [r for r, done in zip(table["run"], table["finished"]) if not done]
    if unfinished:
        notes.append(f"no metrics.json yet (running or stopped): {', '.join(map(str, unfinished))}")
    return markdown_table(header, body, left, notes)
