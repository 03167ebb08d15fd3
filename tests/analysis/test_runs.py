"""prefdistill.analysis.runs on hand-made run folders: finding runs, the runs table, its swept
hyper-parameters, labels and metric columns."""

from __future__ import annotations

import json
import os

import pytest
from run_folders import make_run

from prefdistill import analysis


def test_find_runs_in_job_order_and_not_inside_wandb(grid):
    (grid / "0" / "wandb" / "files").mkdir(parents=True, exist_ok=True)
    (grid / "0" / "wandb" / "files" / "config_resolved.yaml").write_text("{}")
    assert [p.name for p in analysis.find_runs(grid)] == ["0", "1", "2", "3", "10"]
    assert analysis.find_runs(grid / "1") == [grid / "1"]
    with pytest.raises(FileNotFoundError, match="no run folder"):
        analysis.find_runs(grid / "0" / "checkpoints")
    assert analysis.find_runs(grid / "0" / "checkpoints", missing_ok=True) == []


def test_results_dirs_from_env_else_latest_multirun(grid, tmp_path, monkeypatch):
    older = tmp_path / "logs" / "train" / "multiruns" / "2026-01-01_00-00-00"
    make_run(older / "0")
    (tmp_path / "logs" / "train" / "multiruns" / "2026-01-03_00-00-00").mkdir()  # newest, but empty
    monkeypatch.delenv(analysis.RESULTS_ENV, raising=False)
    monkeypatch.setenv("PREFDISTILL_ROOT", str(tmp_path))
    assert analysis.results_dirs() == [grid]
    monkeypatch.setenv(analysis.RESULTS_ENV, f"{older}{os.pathsep}{grid / '1'}")
    assert analysis.results_dirs() == [older, grid / "1"]
    assert analysis.results_dirs(str(older)) == [older]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analysis.results_dirs(str(tmp_path / "nope"))
    monkeypatch.setenv("PREFDISTILL_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.delenv(analysis.RESULTS_ENV)
    with pytest.raises(FileNotFoundError, match="PREFDISTILL_RESULTS"):
        analysis.results_dirs()


def test_labelled_runs_name_runs_by_path_under_their_results_folder(tmp_path):
    make_run(tmp_path / "a" / "x")
    make_run(tmp_path / "b" / "sweep" / "0")
    assert analysis.labelled_runs(tmp_path / "b") == {"sweep/0": tmp_path / "b" / "sweep" / "0"}
    assert list(analysis.labelled_runs([tmp_path / "a", tmp_path / "b"])) == ["a/x", "b/sweep/0"]
    assert list(analysis.labelled_runs(tmp_path / "a" / "x")) == ["x"]  # a run folder itself


def test_runs_table_reads_config_and_metrics(grid):
    table = analysis.runs_table(grid)
    assert list(table["run"]) == ["0", "1", "2", "3", "10"]
    assert table.attrs["swept"] == ["method.beta", "method.margin"]  # not run_name, ids, paths
    row = table.iloc[1]
    assert (row["method"], row["model"], row["finished"], row["global_step"]) == (
        "plad_margin",
        "SmolLM2-135M",
        True,
        3,
    )
    assert (row["method.beta"], row["method.margin"], row["module.optimizer.lr"]) == (0.5, 1.0, 5e-5)
    assert row["val/reward/accuracy"] == pytest.approx(0.6)
    assert row["before/val/loss"] == 0.693 and row["train/loss"] == 0.5
    assert "module.optimizer.betas" not in table  # lists are not columns
    assert analysis.metric_columns(table) == ["val/reward/accuracy", "val/reward/margin", "val/loss"]


def test_runs_table_across_folders_methods_unfinished_and_evaluated(tmp_path):
    make_run(tmp_path / "a" / "dpo-run", "dpo", 0.1, evaluated=True)
    make_run(tmp_path / "b" / "simpo-run", "simpo", 2.0)
    make_run(tmp_path / "b" / "crashed", "simpo", 2.5, finished=False)
    table = analysis.runs_table([tmp_path / "a", tmp_path / "b"])
    assert list(table["run"]) == ["a/dpo-run", "b/crashed", "b/simpo-run"]
    assert list(table["finished"]) == [True, False, True]
    assert table.attrs["swept"] == ["method.beta"]  # method.name is the method column
    assert table.loc[0, "eval/offline/win_rate"] == 61.5 and table.loc[0, "eval/n"] == 50
    assert analysis.metric_columns(table)[-1] == "eval/offline/win_rate"
    labels = analysis.run_labels(table)
    assert labels["a/dpo-run"] == "a/dpo-run (method=dpo, beta=0.1)"


def test_eval_metrics_of_train_run_win_over_eval_results(tmp_path):
    run = make_run(tmp_path / "r", evaluated=True)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["after"]["eval/offline/win_rate"] = 70.0
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert analysis.run_metrics(analysis.load_run(run))["eval/offline/win_rate"] == 70.0
