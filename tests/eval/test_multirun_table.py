"""A table experiment's multirun ends with the comparison table: reference rows first, then one row per job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import REPO


@pytest.mark.slow
def test_demo_plad_multirun_ends_with_the_comparison_table(tmp_path):
    env = {
        **os.environ,
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    tiny = [
        "model=tiny", "teacher=tiny", "data.max_samples=8", "data.batch_size=2", "trainer.max_steps=2",
        "pipeline.sft.max_steps=1", "eval.data.max_samples=4", "eval.generation.max_new_tokens=4",
        "logger=none", f"paths.root_dir={tmp_path}",
    ]  # fmt: skip
    cmd = [sys.executable, "train.py", "-m", "experiment=demo_plad", "row=sft,kd", *tiny]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (table,) = tmp_path.glob("logs/demo_plad/multiruns/*/compare.md")
    main, families = table.read_text().split("\n\nExact match by task family (%):")
    labels = [line.split("|")[1].strip() for line in main.splitlines()[2:] if line.startswith("|")]
    assert labels == ["Teacher", "Base student", "Initial student", "SFT", "Standard KD"]
    header = main.splitlines()[0]
    assert "T-S WR" in header and "R-L" in header and "EM (%)" in header and "Time (s)" in header
    assert "| Standard KD " in families and "| Teacher " in families
    # the trained rows' cost: the pipeline stages they used plus their fit, recorded in metrics.json
    (run_metrics,) = [json.loads(p.read_text()) for p in tmp_path.glob("logs/demo_plad/multiruns/*/1/metrics.json")]
    cost = run_metrics["cost"]
    assert {s["name"] for s in cost["stages"]} >= {"sft-student", "sft-teacher"}
    assert cost["fit_s"] > 0 and cost["train_tokens"] > 0 and cost["total_s"] >= cost["pipeline_s"]
    # every row compared against the one fine-tuned teacher the jobs trained against
    specs = {p.read_text() for p in tmp_path.glob("logs/demo_plad/multiruns/*/*/teacher_spec.json")}
    assert len(specs) == 1 and "sft-teacher" in specs.pop()
