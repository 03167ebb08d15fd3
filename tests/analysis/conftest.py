"""Shared fixture of the analysis tests: a hand-made 2x2 sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_folders import make_run, train_rows


@pytest.fixture
def grid(tmp_path) -> Path:
    """A 2x2 beta x margin multirun, jobs 0..3 (plus a job 10, to check the job order)."""
    sweep = tmp_path / "logs" / "train" / "multiruns" / "2026-01-02_00-00-00"
    jobs = [(0.1, 1.0), (0.5, 1.0), (0.1, 2.0), (0.5, 2.0)]
    for i, (beta, margin) in enumerate(jobs):
        make_run(sweep / str(i), "plad_margin", beta, margin, accuracy=0.5 + i / 10, history=train_rows(3))
    make_run(sweep / "10", "plad_margin", 1.0, 2.0, accuracy=0.9)
    for job in sweep.iterdir():
        (job / "checkpoints").mkdir()
    return sweep
