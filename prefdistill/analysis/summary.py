"""The table a sweep ends with, and ``evaluate.py compare=[...]`` on any results folder.

Every multirun writes ``<sweep>/summary.md`` (``SweepSummary`` below, configured for every
app in ``configs/hydra/default.yaml``): one row per job, the swept keys as columns, the held-out metrics
before and after training, the evaluation suite's columns when the jobs ran one (``eval=<suite>``), the
cost (wall-clock seconds and tokens, ``metrics.json``'s ``cost``) and, below the table, each job's run
folder and W&B run. It is rewritten as each job ends, so a sweep stopped by a failed job still has the
table of the jobs that ran.

    python train.py -m model=tiny method.beta=0.05,0.1 trainer.max_steps=2   # ends with <sweep>/summary.md
    python evaluate.py compare=[logs/train/multiruns/<time>]                 # eval_results.json: compare.md;
                                                                             # none: this summary
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from prefdistill.analysis.runs import Results, find_runs, runs_table
from prefdistill.analysis.tables import comparison_columns, comparison_table
from prefdistill.utils.errors import UsageError

log = logging.getLogger("prefdistill")

SUMMARY_FILE = "summary.md"
COST_COLUMNS = (("cost/seconds", "Time (s)"), ("cost/tokens", "Tokens"))
NO_EVAL_NOTE = (
    "no evaluation suite ran: generation metrics (exact match, ROUGE, win rates) need eval=<suite> "
    "(python train.py -m ... eval=demo, or python evaluate.py run_dir=<run> for one run)"
)


class NothingToCompare(UsageError, FileNotFoundError):
    """A results folder that does not exist or holds no run and no evaluation result."""


def _wandb(run_dir: Path) -> str:
    """Where a run's W&B run is: its URL when it was online, else its offline folder (``wandb sync``)."""
    metrics = run_dir / "metrics.json"
    paths = json.loads(metrics.read_text()).get("paths", {}) if metrics.is_file() else {}
    if paths.get("wandb_url"):
        return paths["wandb_url"]
    folders = sorted((run_dir / "wandb").glob("*run-*")) if (run_dir / "wandb").is_dir() else []
    if paths.get("wandb") or folders:
        return f"wandb sync {paths.get('wandb') or folders[-1]}"
    return "no W&B run"


def sweep_summary(results: Results, out_dir: str | Path | None = None) -> str:
    """The summary table of every run folder under ``results`` (a sweep folder, or several), with the runs'
    links below it; written to ``<out_dir>/summary.md`` when ``out_dir`` is given."""
    table = runs_table(results)
    columns = comparison_columns(table)
    columns += [(c, h) for c, h in COST_COLUMNS if c in table and table[c].notna().any()]
    text = comparison_table(table, columns)
    if not table.attrs.get("eval"):
        text += f"\n  {NO_EVAL_NOTE}"
    links = [f"- {run}: {path} ({_wandb(Path(path))})" for run, path in zip(table["run"], table["path"])]
    text += "\n\nRuns (folder; W&B):\n" + "\n".join(links)
    if out_dir is not None:
        from prefdistill.utils.atomic import atomic_write_text

        atomic_write_text(Path(out_dir) / SUMMARY_FILE, text + "\n")
    return text


def compare_runs(paths: list[str | Path], out_dir: str | Path) -> tuple[str, Path]:
    """``evaluate.py compare=[...]``: the comparison table of the evaluation results under ``paths``
    (``compare.md``, :func:`prefdistill.eval.report.compare`); when no run there was evaluated, the
    :func:`sweep_summary` of their ``metrics.json`` (``summary.md``), saying that generation metrics need
    ``eval=<suite>``. Returns the table and the file it was written to."""
    from prefdistill.eval import report

    missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
    if missing:
        raise NothingToCompare(f"compare: {', '.join(missing)} does not exist")
    if any(Path(p).expanduser().is_file() or next(Path(p).expanduser().rglob(report.RESULTS_FILE), None)
           for p in paths):  # fmt: skip
        table, _ = report.compare(paths, out_dir=out_dir)
        return table, Path(out_dir) / "compare.md"
    if not find_runs([Path(p).expanduser() for p in paths], missing_ok=True):
        raise NothingToCompare(
            f"compare: no {report.RESULTS_FILE} and no run folder (config_resolved.yaml) under {list(map(str, paths))}"
        )
    return sweep_summary([Path(p).expanduser() for p in paths], out_dir), Path(out_dir) / SUMMARY_FILE


class SweepSummary(Callback):
    """Writes ``<sweep>/summary.md`` after each job of a multirun and prints it at the end."""

    def _write(self, config: DictConfig) -> str | None:
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            return sweep_summary(sweep, out_dir=sweep)
        except FileNotFoundError:  # no job wrote a run folder (evaluate.py, generate.py sweeps)
            return None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:
            self._write(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        text = self._write(config)
        if text is not None:
            print(text, flush=True)
            log.info("sweep summary: %s", Path(str(config.hydra.sweep.dir)) / "summary.md")
