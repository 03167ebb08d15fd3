"""A table experiment's multirun ends with the comparison table: reference rows first, then one row per job;
with several seeds, one row per label with mean ± std, reference rows evaluated per seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import REPO, tiny_study_overrides


@pytest.mark.slow
def test_study_multirun_ends_with_the_comparison_table(tmp_path):
    env = {
        **os.environ,
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    cmd = [sys.executable, "train.py", "-m", "experiment=distill_study", "row=sft,kd", *tiny_study_overrides(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (table,) = tmp_path.glob("logs/distill_study/multiruns/*/compare.md")
    main, families = table.read_text().split("\n\nExact match by task family (%):")
    labels = [line.split("|")[1].strip() for line in main.splitlines()[2:] if line.startswith("|")]
    assert labels == ["Teacher", "Base student", "Initial student", "SFT", "Standard KD"]
    header = main.splitlines()[0]
    assert "T-S WR" in header and "RM WR" in header and "EM (%)" in header and "Time (s)" in header
    assert "RM = rm:" in main and "held-out pair accuracy" in main  # the reward model trained by the stage
    assert "| Standard KD " in families and "| Teacher " in families
    # the trained rows' cost: the pipeline stages they used plus their fit, recorded in metrics.json
    (run_metrics,) = [json.loads(p.read_text()) for p in tmp_path.glob("logs/distill_study/multiruns/*/1_row=kd/metrics.json")]
    cost = run_metrics["cost"]
    assert {s["name"] for s in cost["stages"]} >= {"sft-student", "sft-teacher"}
    assert cost["fit_s"] > 0 and cost["train_tokens"] > 0 and cost["total_s"] >= cost["pipeline_s"]
    # every row compared against the one fine-tuned teacher the jobs trained against
    specs = {p.read_text() for p in tmp_path.glob("logs/distill_study/multiruns/*/*/teacher_spec.json")}
    assert len(specs) == 1 and "sft-teacher" in specs.pop()


@pytest.mark.slow
def test_several_seeds_give_mean_and_std_and_reference_rows_per_seed(tmp_path):
    env = {**os.environ, "PREFDISTILL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "train.py", "-m", "experiment=distill_study", "row=sft", "seed=1,2", *tiny_study_overrides(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = tmp_path.glob("logs/distill_study/multiruns/*")
    main, families = (sweep / "compare.md").read_text().split("\n\nExact match by task family (%), mean over seeds:")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in main.splitlines()[2:] if line.startswith("|")]
    assert [r[0] for r in rows] == ["Teacher", "Base student", "Initial student", "SFT"]
    assert all(r[-1] == "2" for r in rows)  # every row: two seeds
    assert "mean ± std" in main
    assert "| SFT " in families
    per_seed = (sweep / "compare_per_seed.md").read_text().split("\n\nExact match by task family")[0]
    assert per_seed.count("| SFT ") == 2 and per_seed.count("| Teacher ") == 2
    assert {p.parent.name for p in sweep.glob("reference_rows/seed_*/teacher")} == {"seed_1", "seed_2"}
    # one reward model for every job and seed: one reward-model stage in the cache
    assert len(list((tmp_path / "cache" / "stages").glob("reward-model*"))) == 1


def test_jobs_are_listed_in_job_order_whatever_the_subdir_pattern():
    from pathlib import Path

    from prefdistill.eval.multirun_table import job_order

    paths = ["s1_10/eval_demo/r.json", "s1_2/eval_demo/r.json", "s2_11/eval_demo/r.json", "10/r.json", "2/r.json"]
    ordered = sorted(map(Path, paths), key=job_order)
    assert [p.parts[0] for p in ordered] == ["2", "10", "s1_2", "s1_10", "s2_11"]
