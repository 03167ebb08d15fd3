"""What a run cost: wall-clock seconds and tokens processed, per pipeline stage and in total.

Accounting, not evaluation: it reads the records finished stages leave (their ``_COMPLETE.json`` marker and
sampling shards) and the trainer's throughput totals, and writes plain JSON that training (``metrics.json``)
and the comparison table (``eval/report.py``) read. As the PAD README reports GPU-hours per stage (sampling, scoring, training), a training run's
``metrics.json`` gets a ``cost`` record (:func:`run_cost`)::

    {"stages": [{"name": "sft-student", "status": "reused", "seconds": 212.4, "tokens": null}, ...],
     "pipeline_s": ..., "pipeline_tokens": ..., "fit_s": ..., "train_tokens": ..., "policy_tokens": ...,
     "total_s": ..., "total_tokens": ..., "tokens_unknown": ["sft-student"]}

* a **stage** costs the seconds its ``_COMPLETE.json`` marker recorded when it ran -- also when this
  run reused it: the row needed that work, whoever paid for it first -- and the tokens its ``info``
  reports (``tokens``), else for a sampling stage the tokens it generated (``num_tokens`` of its
  shards); stages reporting neither are listed in ``tokens_unknown`` and count 0 tokens;
* **training** costs ``fit`` seconds and the tokens every model forwarded in it (the policy's
  forward+backward, an uncached reference's or teacher's forward: ``ThroughputMonitor.totals``, which
  the entry point passes in).

Evaluation is not part of a row's cost. :func:`table_cost` gives the two numbers of the comparison
table (``cost/seconds``, ``cost/tokens``) for an evaluated run or, for a reference row whose model is a
stage's output (the fine-tuned teacher, the SFT'd initial student), for that stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from prefdistill.utils.atomic import atomic_write_json
from prefdistill.utils.cache import MARKER

STAGE_COSTS_FILE = "stage_costs.json"  # in a run folder: the pipeline stages the run used
RUN_METRICS_FILE = "metrics.json"


def _marker(folder: Path) -> Path:
    return Path(folder) / MARKER


def sampled_tokens(folder: str | Path) -> int | None:
    """Tokens generated into a sampling stage's shards (None: the folder holds no shards)."""
    shards = sorted(Path(folder).glob("shard-*.jsonl"))
    if not shards:
        return None
    total = 0
    for shard in shards:
        with open(shard, encoding="utf-8") as fh:
            total += sum(int(json.loads(line).get("num_tokens") or 0) for line in fh if line.strip())
    return total


def stage_cost(folder: str | Path, status: str = "reused") -> dict:
    """``{name, status, seconds, tokens}`` of a finished stage folder (rules in the module docstring)."""
    marker = json.loads(_marker(folder).read_text())
    tokens = (marker.get("info") or {}).get("tokens")
    tokens = sampled_tokens(folder) if tokens is None else int(tokens)
    return {"name": marker.get("name"), "status": status, "seconds": marker.get("seconds"), "tokens": tokens}


def record_stage_costs(stages: Iterable, run_dir: str | Path) -> Path:
    """Write ``<run>/stage_costs.json`` for the pipeline's ``StageResult`` s (path, status)."""
    costs = [stage_cost(stage.path, stage.status) for stage in stages]
    return atomic_write_json(Path(run_dir) / STAGE_COSTS_FILE, costs)


def run_cost(run_dir: str | Path, totals: dict | None = None) -> dict:
    """The ``cost`` record of a training run: its recorded stages plus the trainer's throughput ``totals``
    (``ThroughputMonitor.totals()``: ``fit_s``, ``forward_tokens``, ``tokens``; None or empty: not measured)."""
    file = Path(run_dir) / STAGE_COSTS_FILE
    stages = json.loads(file.read_text()) if file.is_file() else []
    totals = totals or {}
    pipeline_s = sum(s["seconds"] or 0.0 for s in stages)
    pipeline_tokens = sum(s["tokens"] or 0 for s in stages)
    fit_s, train_tokens = totals.get("fit_s"), totals.get("forward_tokens")
    return {
        "stages": stages,
        "pipeline_s": round(pipeline_s, 1),
        "pipeline_tokens": pipeline_tokens,
        "fit_s": fit_s,
        "train_tokens": train_tokens,
        "policy_tokens": totals.get("tokens"),
        "total_s": round(pipeline_s + (fit_s or 0.0), 1),
        "total_tokens": pipeline_tokens + (train_tokens or 0),
        "tokens_unknown": [s["name"] for s in stages if s["tokens"] is None]
        + ([] if train_tokens is not None else ["training"]),
    }


def table_cost(result: dict, results_file: str | Path) -> dict:
    """``{cost/seconds (whole), cost/tokens, cost/tokens_unknown}`` of one evaluated row, or ``{}`` when
    nothing recorded it (``tokens_unknown``: the parts whose tokens are not counted, see above).

    A run's evaluation lives in ``<run>/eval_<suite>/``: the run's ``metrics.json`` has the cost. A
    reference row's model may be a stage's output (``<stage>/model``): that stage's cost."""
    run_metrics = Path(results_file).parent.parent / RUN_METRICS_FILE
    cost = json.loads(run_metrics.read_text()).get("cost") if run_metrics.is_file() else None
    if cost is None:
        model_dir = Path(str((result.get("model") or {}).get("name_or_path", "")))
        if not model_dir.name or not _marker(model_dir.parent).is_file():
            return {}
        stage = stage_cost(model_dir.parent)
        unknown = [stage["name"]] if stage["tokens"] is None else []
        cost = {"total_s": stage["seconds"], "total_tokens": stage["tokens"], "tokens_unknown": unknown}
    seconds = cost["total_s"]
    return {
        "cost/seconds": None if seconds is None else round(seconds),
        "cost/tokens": cost["total_tokens"],
        "cost/tokens_unknown": list(cost.get("tokens_unknown", [])),
    }
