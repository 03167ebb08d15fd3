"""Hand-made run folders for the analysis tests: the files ``train.py`` writes, with chosen numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml


def write_history(run_dir: Path, rows: list[dict]) -> Path:
    """``<run>/csv/metrics.csv`` as Lightning's CSV logger writes it: sorted header, one row per
    logging call, empty cells for what a row did not log."""
    path = run_dir / "csv" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_rows(steps: int, start: int = 0, scale: float = 1.0) -> list[dict]:
    """Held-out loss before training (a first launch only), ``train/loss = scale / (step + 1)`` at
    steps ``start .. steps-1``, then a held-out loss at step ``steps``."""
    rows = [{"epoch": 0, "step": 0, "val/loss": 0.69}] if start == 0 else []
    for s in range(start, steps):
        rows.append({"epoch": 0, "step": s, "train/loss": scale / (s + 1), "train/lr": 1e-4})
    rows.append({"epoch": 1, "step": steps, "val/loss": scale / (steps + 1)})
    return rows


def make_run(
    run_dir: Path,
    method: str = "dpo",
    beta: float = 0.1,
    margin: float | None = None,
    accuracy: float = 0.75,
    finished: bool = True,
    history: list[dict] | None = None,
    evaluated: bool = False,
) -> Path:
    """A run folder: config_resolved.yaml, and metrics.json when ``finished``, csv/metrics.csv when
    ``history``, eval_demo/eval_results.json when ``evaluated``."""
    run_dir.mkdir(parents=True)
    method_cfg = {"_target_": "prefdistill.losses.get_loss", "name": method, "beta": beta}
    if margin is not None:
        method_cfg["margin"] = margin
    config = {
        "task_name": "train",
        "tags": ["dev"],
        "seed": 42,
        "run_name": run_dir.name,
        "model": {"_target_": "prefdistill.models.ModelSpec", "name_or_path": "HuggingFaceTB/SmolLM2-135M"},
        "method": method_cfg,
        "module": {"optimizer": {"lr": 5e-5, "betas": [0.9, 0.999]}},
        "trainer": {"default_root_dir": str(run_dir), "max_steps": 3},
        "logger": {"wandb": {"id": run_dir.name + "id", "group": "train-x", "save_dir": str(run_dir)}},
        "paths": {"output_dir": str(run_dir)},
    }
    (run_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if finished:
        metrics = {
            "before": {"val/loss": 0.693, "val/reward/accuracy": 0.0, "val/reward/margin": 0.0},
            "after": {
                "val/loss": 0.6 - beta / 10,
                "val/reward/accuracy": accuracy,
                "val/reward/margin": beta,
            },
            "train": {"train/loss": 0.5},
            "global_step": 3,
            "wall_time_s": 4.2,
            "paths": {"run": str(run_dir)},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if history is not None:
        write_history(run_dir, history)
    if evaluated:
        result = {
            "label": run_dir.name,
            "metrics": {"offline/win_rate": 61.5, "rouge1": 30.25, "n": 50},
            "scorers": {"offline": "all-MiniLM-L6-v2 embedding similarity"},
        }
        (run_dir / "eval_demo").mkdir()
        (run_dir / "eval_demo" / "eval_results.json").write_text(json.dumps(result))
    return run_dir
