"""Every sweep file runs (two trials, tiny model, offline) or composes, with its literal command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


def _run_sweep(tmp_path, script: str, *overrides: str) -> tuple[Path, str]:
    """Run sweeps/<script> with tiny-model overrides; return its (single) multirun folder and its output."""
    proc = subprocess.run(["bash", str(SWEEPS / script), *overrides, *TINY], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep,) = sorted((tmp_path / "logs").glob("*/multiruns/*"))
    return sweep, proc.stdout + proc.stderr


def _table(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]


def test_grid_sweep_ends_in_its_table(tmp_path):
    """The path sweeps/dpo_beta_grid.sh and docs/usage.md describe: a run folder per value, named by it; the
    sweep prints its table and saves it in <sweep>/summary.md; evaluate.py compare=[<sweep>] prints it again
    (no job ran an evaluation suite: it says what generation metrics need)."""
    script = (SWEEPS / "dpo_beta_grid.sh").read_text()
    assert "python train.py -m" in script and "summary.md" in script and "evaluate.py compare=" in script
    sweep, output = _run_sweep(tmp_path, "dpo_beta_grid.sh")
    jobs = ["0_method.beta=0.05", "1_method.beta=0.1", "2_method.beta=0.5"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs
    summary = (sweep / "summary.md").read_text()
    table = _table(summary)
    assert table[0][:4] == ["Run", "Method", "Model", "beta"] and "Acc (ties 1/2) before" in table[0]
    assert "Time (s)" in table[0] and "Tokens" in table[0]
    assert [row[:4] for row in table[1:]] == [[job, "dpo", "tiny", beta] for job, beta in
                                               zip(jobs, ["0.050", "0.100", "0.500"])]  # fmt: skip
    assert all(f"- {job}: {sweep / job} (no W&B run)" in summary for job in jobs)  # logger=none here
    assert summary.splitlines()[2] in output  # printed when the sweep ended
    compare = subprocess.run([sys.executable, "evaluate.py", f"compare=[{sweep}]"], cwd=REPO, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert _table(compare.stdout) == table and "need eval=<suite>" in compare.stdout


def test_optuna_sweep_two_trials_returns_best(tmp_path):
    """The study's best value is the largest val/reward/accuracy the jobs wrote to metrics.json (the
    metric main() returns), and its best parameters are those of a job that reached it."""
    sweep, _ = _run_sweep(tmp_path, "dpo_optuna.sh", "hydra.sweeper.n_trials=2")
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"method.beta", "module.optimizer.lr"}
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split(",")[0].split("=")[0] for p in jobs] == ["0_method.beta", "1_method.beta"]
    assert all(",module.optimizer.lr=" in p.name for p in jobs)  # the searched values name the folders
    assert len(_table((sweep / "summary.md").read_text())) == 3
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
        assert re.search(r"^\s*python train.py -m ", text, flags=re.M), path
