"""kill -9 mid-epoch, run the same command again: it resumes and ends where an uninterrupted run ends, says
from which step, sees exactly the batches an uninterrupted run sees and logs every step once."""

from __future__ import annotations

import csv
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


def _record(tmp_path, name: str) -> list[str]:
    """Overrides that append every train batch's (step, dataset rows) to ``<tmp>/<name>.jsonl``."""
    return [
        "+callbacks.batches._target_=train_helpers.RecordBatches",
        f"+callbacks.batches.path={tmp_path / name}.jsonl",
    ]


def _batches(tmp_path, name: str) -> list[tuple[int, list[int]]]:
    return [tuple(json.loads(line)) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]


def _csv_rows(run) -> list[dict]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_each_step_once(rows: list[dict]) -> None:
    """No (step, logged metrics) row twice: a resumed launch does not repeat rows of the one it continues."""
    keys = [
        (row["step"], tuple(sorted(k for k, v in row.items() if v and k not in ("epoch", "step"))))
        for row in rows
    ]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_to_the_same_result(tmp_path):
    straight = _train(tmp_path, "run_name=straight", *_record(tmp_path, "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _train(
        tmp_path,
        "run_name=resumed",
        "+callbacks.killer._target_=train_helpers.KillAtStep",
        "+callbacks.killer.step=5",
        *_record(tmp_path, "killed"),
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "logs" / "train" / "runs" / "resumed"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "metrics.json").exists()
    wandb_id = (run / "wandb_id").read_text().strip()

    resumed = _train(tmp_path, "run_name=resumed", *_record(tmp_path, "resumed"))  # the same command, no kill
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    output = resumed.stderr + resumed.stdout
    assert "resuming run resumed from step 4 of 12" in output  # the step-4 checkpoint (every 2 steps)
    # the loader is resumable in Lightning's sense (no "unreliable results" warning), and it is: the resumed
    # launch takes exactly the batches the uninterrupted run took from step 4 on
    assert "not resumable" not in output
    seen = [b for b in _batches(tmp_path, "killed") if b[0] < 4] + _batches(tmp_path, "resumed")
    assert seen == _batches(tmp_path, "straight") and len(seen) == 12
    assert_each_step_once(_csv_rows(run))
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


@pytest.mark.slow
def test_killed_before_its_first_checkpoint_restarts_saying_so_and_logs_each_step_once(tmp_path):
    """No step checkpoint yet (every 100 steps) and the timed one 5 minutes away: the same command starts
    again from step 0 and says so, and the step history holds each step once."""
    common = ["run_name=early", "callbacks.model_checkpoint.every_n_train_steps=100"]
    kill = ["+callbacks.killer._target_=train_helpers.KillAtStep", "+callbacks.killer.step=3"]
    killed = _train(tmp_path, *common, *kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "logs" / "train" / "runs" / "early"
    assert not (run / "checkpoints").exists() and _csv_rows(run)
    again = _train(tmp_path, *common)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "no checkpoint for run early: starting from step 0 of 12" in again.stderr + again.stdout
    rows = _csv_rows(run)
    assert_each_step_once(rows)
    assert sorted(int(r["step"]) for r in rows if r.get("train/loss")) == list(range(12))


@pytest.mark.slow
def test_a_timed_checkpoint_carries_a_run_killed_between_step_checkpoints(tmp_path):
    """last.ckpt on a wall-clock interval as well (here 0 s: after every step): a run killed at step 5 (before
    that step's checkpoint: Lightning runs checkpoint callbacks last), long before its first 100-step
    checkpoint, resumes from step 4."""
    common = ["run_name=timed", "callbacks.model_checkpoint.every_n_train_steps=100",
              "callbacks.timed_checkpoint.train_time_interval.minutes=0"]  # fmt: skip
    kill = ["+callbacks.killer._target_=train_helpers.KillAtStep", "+callbacks.killer.step=5"]
    assert _train(tmp_path, *common, *kill).returncode == -9
    resumed = _train(tmp_path, *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming run timed from step 4 of 12" in resumed.stderr + resumed.stdout
    run = tmp_path / "logs" / "train" / "runs" / "timed"
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 12
    assert_each_step_once(_csv_rows(run))
