"""kill -9 mid-epoch, run the same command again: it resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import REPO

from prefdistill.analysis import load_history, metric_curve

COMMON = [
    "model=tiny",
    "logger=wandb",
    "data.max_samples=16",
    "data.batch_size=2",
    "trainer.max_steps=12",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=2",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "save_model=false",
]


def _train(tmp_path, *overrides, env=None):
    extra = env or {}
    env = {
        **os.environ,
        "PREFDISTILL_ROOT": str(tmp_path),
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WANDB_MODE": "offline",
        **extra,
    }
    return subprocess.run(
        [sys.executable, "train.py", *COMMON, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_to_the_same_result(tmp_path):
    straight = _train(tmp_path, "run_name=straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _train(
        tmp_path,
        "run_name=resumed",
        "+callbacks.killer._target_=train_helpers.KillAtStep",
        "+callbacks.killer.step=5",
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "logs" / "train" / "runs" / "resumed"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "metrics.json").exists()
    wandb_id = (run / "wandb_id").read_text().strip()

    resumed = _train(tmp_path, "run_name=resumed")  # the same command, without the kill
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    a = json.loads((tmp_path / "logs" / "train" / "runs" / "straight" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["after"].items():
        assert b["after"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for key, value in a["train"].items():
        if "perf" not in key:
            assert b["train"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the resumed process continued the same W&B run
    runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(wandb_id) for name in runs), runs
    # ... and appended to the step history: the same training curve as the uninterrupted run (steps
    # 0-3 only the killed launch logged: the resumed one starts from the step-4 checkpoint)
    curves = [metric_curve(load_history(r), "train/loss") for r in (run.parent / "straight", run)]
    assert list(curves[0]["step"]) == list(curves[1]["step"]) == list(range(12))
    assert list(curves[1]["train/loss"]) == pytest.approx(list(curves[0]["train/loss"]), rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_slurm_preemption_requeue_resumes_from_the_hpc_checkpoint(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "dpo",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
    }
    straight = _train(tmp_path, "run_name=straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    # no periodic checkpoint before the preemption: only the HPC checkpoint can carry the run
    common = ["run_name=slurm", "callbacks.model_checkpoint.every_n_train_steps=100"]
    preempted = _train(
        tmp_path,
        *common,
        "+callbacks.preempt._target_=train_helpers.PreemptAtStep",
        "+callbacks.preempt.step=5",
        env=slurm,
    )
    assert preempted.returncode == -9, preempted.stderr[-2000:]
    run = tmp_path / "logs" / "train" / "runs" / "slurm"
    assert list(run.glob("hpc_ckpt_*.ckpt"))
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    requeued = _train(tmp_path, *common, env=slurm)  # SLURM re-runs the same command
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    a = json.loads((tmp_path / "logs" / "train" / "runs" / "straight" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["global_step"] == 12
    for key, value in a["after"].items():
        assert b["after"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
