"""Every sweep file runs (two trials, tiny model, offline) or composes, with its literal command."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from train_helpers import REPO, compose_train

SWEEPS = REPO / "sweeps"
TINY = [
    "model=tiny",
    "logger=none",
    "data.max_samples=8",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "save_model=false",
]


def _env(tmp_path):
    return {**os.environ, "PREFDISTILL_ROOT": str(tmp_path), "PREFDISTILL_CACHE": str(tmp_path / "cache")}


def _run_sweep(tmp_path, script: str, *overrides: str) -> Path:
    """Run sweeps/<script> with tiny-model overrides; return its (single) multirun folder."""
    proc = subprocess.run(["bash", str(SWEEPS / script), *overrides, *TINY], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep,) = sorted((tmp_path / "logs").glob("*/multiruns/*"))
    return sweep


def test_grid_sweep_runs_a_job_per_value(tmp_path):
    script = (SWEEPS / "dpo_beta_grid.sh").read_text()
    assert "python train.py -m" in script
    sweep = _run_sweep(tmp_path, "dpo_beta_grid.sh")
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2"]


def test_optuna_sweep_two_trials_returns_best(tmp_path):
    """The study's best value is the largest val/reward/accuracy the jobs wrote to metrics.json (the
    metric main() returns), and its best parameters are those of a job that reached it."""
    sweep = _run_sweep(tmp_path, "dpo_optuna.sh", "hydra.sweeper.n_trials=2")
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"method.beta", "module.optimizer.lr"}
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 2
    trials = []
    for job in jobs:
        after = json.loads((job / "metrics.json").read_text())["after"]
        cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
        params = {
            "method.beta": cfg["method"]["beta"],
            "module.optimizer.lr": cfg["module"]["optimizer"]["lr"],
        }
        trials.append((after["val/reward/accuracy"], after["val/loss"], params))
    best = max(accuracy for accuracy, _, _ in trials)
    assert result["best_value"] == pytest.approx(best)
    assert any(
        accuracy == best and all(params[k] == pytest.approx(v) for k, v in result["best_params"].items())
        for accuracy, _, params in trials
    ), (result, trials)
    assert {a for a, _, _ in trials} != {loss for _, loss, _ in trials}  # not the loss by coincidence


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_wandb_sweep_parameters_are_valid_overrides(path, tmp_path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py" and "${args_no_hyphens}" in sweep["command"]
    assert "#   wandb sweep " in path.read_text()
    fixed = [c for c in sweep["command"] if not c.startswith("${")]
    for trial in range(2):  # two trials: first and last value of each parameter
        overrides = []
        for key, spec in sweep["parameters"].items():
            values = spec.get("values") or [spec["min"], spec["max"]]
            overrides.append(f"{key}={values[-trial]}")
        cfg = compose_train(tmp_path / str(trial), fixed + overrides + ["model=tiny"])
        for override in overrides:
            key, value = override.split("=", 1)
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert float(node) == pytest.approx(float(value))


def test_every_sweep_script_states_its_command_and_hypothesis():
    for path in SWEEPS.glob("*.sh"):
        text = path.read_text()
        assert re.search(r"^# Hypothesis:", text, flags=re.M), path
        assert re.search(r"^python train.py -m ", text, flags=re.M), path
