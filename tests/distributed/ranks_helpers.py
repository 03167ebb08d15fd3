"""Runs on one and on two CPU ranks for the multi-rank tests, and what they leave behind.

Two ranks are launched as users launch them on one node: ``python train.py ... hardware=ddp_cpu`` (or
``hardware=deepspeed_cpu trainer.devices=2``), Lightning's launcher starting the second process with the
same command (torchrun and srun start both processes themselves and reach the same code from
``start_ranks`` on). Every process runs one thread. One rank runs in this process (``train()`` on the
composed config), where nothing process-global would leak; DeepSpeed runs always in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from train_helpers import REPO, compose_train

TWO_RANKS = ["hardware=ddp_cpu", "save_model=false"]  # DDP on two CPU ranks; these tests compare metrics
# 16 rows: 2 ranks x batch 2 = 1 rank x batch 4 = 4 steps an epoch; 6 steps cross into the second epoch.
COMMON = [
    "model=tiny",
    "data.max_samples=16",
    "trainer.max_steps=6",
    "trainer.max_epochs=2",
]


@dataclass
class Run:
    folder: Path
    log: str
    returncode: int

    def metrics(self) -> dict:
        return json.loads((self.folder / "metrics.json").read_text())


def launch(
    tmp_path: Path, run: str, *overrides: str, expect: int | tuple[int, ...] = 0, timeout: int = 300
) -> Run:
    """``python train.py`` (every process's output in ``log``); the run folder is ``<tmp>/logs/train/runs/<run>``.
    ``expect``: the exit status, or the statuses a run may end with."""
    env = {
        **os.environ,
        "PREFDISTILL_ROOT": str(tmp_path),
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    cmd = [sys.executable, "train.py", *COMMON, f"run_name={run}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode in ((expect,) if isinstance(expect, int) else expect), log[-4000:]
    return Run(tmp_path / "logs" / "train" / "runs" / run, log, proc.returncode)


def in_process(tmp_path: Path, *overrides: str) -> Run:
    """The same run on one rank, in this process, with its own cache folder (``<tmp>/cache``)."""
    from prefdistill.train import train

    cfg = compose_train(tmp_path, [*COMMON, "logger=csv", "save_model=false", *overrides])
    train(cfg)
    return Run(Path(cfg.paths.output_dir), "", 0)


def curve(run: Run, name: str) -> dict[int, float]:
    """``{step: value}`` of a metric in the run's ``csv/metrics.csv`` (each step must appear once)."""
    out: dict[int, float] = {}
    with open(run.folder / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get(name):
                step = int(row["step"])
                assert step not in out, f"{name} logged twice at step {step}"
                out[step] = float(row[name])
    return out


def assert_same_training(one: Run, two: Run, *, rel: float, abs: float) -> None:
    """The same training curve (every train/ metric but timings, every step) and the same held-out metrics
    before and after training, within ``rel``/``abs``."""
    a, b = one.metrics(), two.metrics()
    assert a["global_step"] == b["global_step"] == 6
    for when in ("before", "after"):
        assert a[when] and a[when].keys() == b[when].keys(), when
        for key, value in a[when].items():
            assert b[when][key] == pytest.approx(value, rel=rel, abs=abs), (when, key)
    names = [k for k in a["train"] if "/perf/" not in k]
    assert "train/loss" in names
    for name in names:
        x, y = curve(one, name), curve(two, name)
        assert list(x) == list(y) == list(range(6)), name
        assert list(y.values()) == pytest.approx(list(x.values()), rel=rel, abs=abs), name


def lines(log: str, pattern: str) -> list[str]:
    """The log lines matching ``pattern`` (a regular expression)."""
    return [line for line in log.splitlines() if re.search(pattern, line)]


def assert_cached_once_by_two_ranks(log: str, label: str, rows: int = 8) -> None:
    """The cache ``label`` (a regular expression) was computed once by each of 2 ranks, ``rows`` rows each,
    and its parts merged once."""
    for rank in (0, 1):
        assert len(lines(log, label + rf": rank {rank} of 2 computed {rows} rows")) == 1, (label, rank)
    assert len(lines(log, label + ": merged 2 ranks' parts")) == 1, label


def recorded(path: Path) -> list[tuple[int, int, list[int]]]:
    """``(rank, step, rows)`` lines a ``train_helpers.RecordRankBatches`` wrote, sorted by (step, rank)."""
    rows = [tuple(json.loads(line)) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda r: (r[1], r[0]))


def wait_gone(pids_file: Path, timeout: float = 30.0) -> None:
    """Wait until every process listed by ``RecordRankBatches`` has ended (killed ranks release the run)."""
    pids = [pid for _, pid in (json.loads(line) for line in pids_file.read_text().splitlines())]
    deadline = time.time() + timeout
    while any(_running(pid) for pid in pids):
        assert time.time() < deadline, f"rank processes {pids} still running"
        time.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a killed orphan may linger as a zombie until reaped
