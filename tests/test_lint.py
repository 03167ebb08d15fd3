"""ruff (configured in pyproject.toml) passes on the package, tests, benchmarks and entry shims."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from train_helpers import REPO


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the dev extra")
def test_ruff_check_passes():
    proc = subprocess.run(
        ["ruff", "check", "prefdistill", "tests", "benchmarks", "train.py", "generate.py", "evaluate.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
