"""prefdistill.analysis on hand-made run folders: finding runs, the runs table and its swept
hyper-parameters, W&B run files (hand-written and written by wandb itself), CSV logs, plots, tables."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import yaml

from prefdistill import analysis

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- hand-made run folders -------------------------------------------------------------------


def write_wandb(path: Path, records: list[bytes], block: int = 32768) -> Path:
    """A ``.wandb`` file in W&B's record-log format: header, then records split over blocks."""
    out = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0))
    for data in records:
        first = True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += b"\0" * left
                continue
            chunk, data = data[: left - 7], data[left - 7 :]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            crc = zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
            out += struct.pack("<IHB", crc, len(chunk), kind) + chunk
            first = False
            if not data:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


def history_record(row: dict) -> bytes:
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    for key, value in row.items():
        item = record.history.item.add()
        item.key = key
        item.value_json = json.dumps(value)
    return record.SerializeToString()


def other_record() -> bytes:
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    update = record.config.update.add()
    update.key, update.value_json = "seed", "42"
    return record.SerializeToString()


def train_rows(steps: int, start: int = 0, scale: float = 1.0) -> list[dict]:
    rows = [{"val/loss": 0.69, "trainer/global_step": start, "_step": 0}] if start == 0 else []
    for s in range(start, steps):
        rows.append(
            {"train/loss": scale / (s + 1), "train/lr": 1e-4, "trainer/global_step": s, "_step": s + 1}
        )
    rows.append({"val/loss": scale / (steps + 1), "trainer/global_step": steps, "_step": steps + 1})
    return rows


def make_run(
    run_dir: Path,
    method: str = "dpo",
    beta: float = 0.1,
    margin: float | None = None,
    accuracy: float = 0.75,
    finished: bool = True,
    history: list[dict] | None = None,
    evaluated: bool = False,
) -> Path:
    run_dir.mkdir(parents=True)
    method_cfg = {"_target_": "prefdistill.losses.get_loss", "name": method, "beta": beta}
    if margin is not None:
        method_cfg["margin"] = margin
    config = {
        "task_name": "train",
        "tags": ["dev"],
        "seed": 42,
        "run_name": run_dir.name,
        "model": {"_target_": "prefdistill.models.ModelSpec", "name_or_path": "HuggingFaceTB/SmolLM2-135M"},
        "method": method_cfg,
        "module": {"optimizer": {"lr": 5e-5, "betas": [0.9, 0.999]}},
        "trainer": {"default_root_dir": str(run_dir), "max_steps": 3},
        "logger": {"wandb": {"id": run_dir.name + "id", "group": "train-x", "save_dir": str(run_dir)}},
        "paths": {"output_dir": str(run_dir)},
    }
    (run_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if finished:
        metrics = {
            "before": {"val/loss": 0.693, "val/reward/accuracy": 0.0, "val/reward/margin": 0.0},
            "after": {
                "val/loss": 0.6 - beta / 10,
                "val/reward/accuracy": accuracy,
                "val/reward/margin": beta,
            },
            "train": {"train/loss": 0.5},
            "global_step": 3,
            "wall_time_s": 4.2,
            "paths": {"run": str(run_dir)},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if history is not None:
        wandb_dir = run_dir / "wandb" / f"offline-run-20260101_000000-{run_dir.name}id"
        write_wandb(
            wandb_dir / f"run-{run_dir.name}id.wandb", [other_record(), *map(history_record, history)]
        )
    if evaluated:
        result = {
            "label": run_dir.name,
            "metrics": {"offline/win_rate": 61.5, "rouge1": 30.25, "n": 50},
            "scorers": {"offline": "all-MiniLM-L6-v2 embedding similarity"},
        }
        (run_dir / "eval_demo").mkdir()
        (run_dir / "eval_demo" / "eval_results.json").write_text(json.dumps(result))
    return run_dir


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


# -- finding runs -----------------------------------------------------------------------------


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


# -- the runs table ---------------------------------------------------------------------------


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


def test_comparison_table(tmp_path):
    make_run(tmp_path / "0", "dpo", 0.1, accuracy=0.8, evaluated=True)
    make_run(tmp_path / "1", "simpo", 2.0, accuracy=0.9)
    make_run(tmp_path / "2", "simpo", 2.5, finished=False)
    text = analysis.comparison_table(analysis.runs_table(tmp_path))
    lines = text.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("| ")]
    assert cells[0] == ["Run", "Method", "Model", "beta", "Steps", "Acc before", "Acc", "Margin before",
                        "Margin", "Val loss before", "Val loss", "Train loss", "R-1", "offline: WR (%)"]  # fmt: skip
    assert cells[1] == ["0", "dpo", "SmolLM2-135M", "0.100", "3", "0.000", "0.800", "0.000", "0.100",
                        "0.693", "0.590", "0.500", "30.250", "61.500"]  # fmt: skip
    assert cells[3][:5] == ["2", "simpo", "SmolLM2-135M", "2.500", "-"]
    assert "offline = all-MiniLM-L6-v2 embedding similarity (offline stand-in" in text
    assert "no metrics.json yet (running or stopped): 2" in text


# -- W&B run files ----------------------------------------------------------------------------


def test_read_wandb_history_across_blocks(tmp_path):
    rows = [{"train/loss": i / 7, "nested": {"a": i}, "text": "x" * 300} for i in range(40)]
    # tiny blocks: records split into first/middle/last pieces, and padded block tails
    path = write_wandb(tmp_path / "run.wandb", [other_record(), *map(history_record, rows)], block=64)
    blocks = analysis._BLOCK
    try:
        analysis._BLOCK = 64
        assert analysis.read_wandb_history(path) == rows
    finally:
        analysis._BLOCK = blocks
    path = write_wandb(tmp_path / "big.wandb", [history_record({"text": "y" * 100_000, "step": 1})])
    assert analysis.read_wandb_history(path) == [{"text": "y" * 100_000, "step": 1}]
    assert not analysis.wandb_run_finished(path)  # no exit record: running, or not written out yet


def test_torn_wandb_file_reads_up_to_the_tear(tmp_path, caplog):
    rows = [{"train/loss": float(i)} for i in range(5)]
    path = write_wandb(tmp_path / "run.wandb", list(map(history_record, rows)))
    path.write_bytes(path.read_bytes()[:-3])
    assert analysis.read_wandb_history(path) == rows[:4]
    assert "torn or corrupt" in caplog.text
    data = bytearray(write_wandb(tmp_path / "flip.wandb", list(map(history_record, rows))).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "flip.wandb").write_bytes(bytes(data))
    assert analysis.read_wandb_history(tmp_path / "flip.wandb") == rows[:4]
    (tmp_path / "not.wandb").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a W&B run file"):
        analysis.read_wandb_history(tmp_path / "not.wandb")


def test_reads_a_run_file_written_by_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="prefdistill", config={"beta": 0.1})
    for step in range(3):
        wandb.log({"train/loss": 1.0 / (step + 1), "trainer/global_step": step, "note": "n" * 40_000})
    wandb.finish()
    wandb.teardown()  # finish() can return before W&B's service has written the file's last block
    (path,) = analysis.wandb_files(tmp_path)
    assert analysis.wandb_run_finished(path)
    assert run.id in path.name
    rows = analysis.read_wandb_history(path)
    assert [(r["train/loss"], r["trainer/global_step"], len(r["note"])) for r in rows] == [
        (1, 0, 40_000),
        (0.5, 1, 40_000),
        (pytest.approx(1 / 3), 2, 40_000),
    ]
    history = analysis.load_history(tmp_path)
    assert list(history["step"]) == [0, 1, 2] and "note" not in history


# -- step histories ---------------------------------------------------------------------------


def test_load_history_resumed_run_keeps_last_value_per_step(tmp_path):
    run = make_run(tmp_path / "r", history=train_rows(3))
    # a resumed launch: a second W&B folder (later time) repeating step 2 with another value
    later = run / "wandb" / "offline-run-20260101_010000-rid"
    write_wandb(later / "run-rid.wandb", list(map(history_record, train_rows(5, start=2, scale=2.0))))
    assert [p.parent.name for p in analysis.wandb_files(run)] == [
        "offline-run-20260101_000000-rid",
        "offline-run-20260101_010000-rid",
    ]
    history = analysis.load_history(run)
    curve = analysis.metric_curve(history, "train/loss")
    assert list(curve["step"]) == [0, 1, 2, 3, 4]
    assert list(curve["train/loss"]) == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4, 2 / 5])
    val = analysis.metric_curve(history, "val/loss")
    assert list(val["step"]) == [0, 3, 5]
    smooth = analysis.metric_curve(history, "train/loss", smooth=0.5)
    assert smooth["train/loss"].iloc[0] == 1 and smooth["train/loss"].iloc[1] == pytest.approx(
        (0.5 * 1 + 1 * 0.5) / 1.5
    )
    assert list(analysis.metric_curve(history, "nope").columns) == ["step", "nope"]


def test_load_history_from_csv_logger_or_nothing(tmp_path):
    run = make_run(tmp_path / "r")
    assert analysis.load_history(run).empty
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n0,0,,0.69\n0,0,0.7,\n0,1,0.6,\n0,2,,0.5\n"
    )
    history = analysis.load_history(run)
    assert list(analysis.metric_curve(history, "train/loss")["train/loss"]) == [0.7, 0.6]
    assert list(analysis.metric_curve(history, "val/loss")["step"]) == [0, 2]


# -- plots ------------------------------------------------------------------------------------


def test_plot_sweep_panels_lines_and_hue(grid):
    table = analysis.runs_table(grid)
    fig = analysis.plot_sweep(table, "method.beta")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["val/reward/accuracy", "val/reward/margin", "val/loss"]
    lines = axes[0].get_lines()  # margin 1.0 and 2.0, each after (solid) and before (dotted)
    assert [line.get_label() for line in lines] == [
        "method.margin=1.0",
        "method.margin=1.0 (before)",
        "method.margin=2.0",
        "method.margin=2.0 (before)",
    ]
    assert list(lines[2].get_xdata()) == [0.1, 0.5, 1.0] and axes[0].get_xscale() == "log"
    assert list(lines[2].get_ydata()) == pytest.approx([0.7, 0.8, 0.9])
    fig = analysis.plot_sweep(table, "method.margin", metrics=["val/loss"], before=False, hue="method")
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert len(ax.get_lines()) == 1 and ax.get_xscale() == "linear"
    with pytest.raises(KeyError, match="swept"):
        analysis.plot_sweep(table, "method.gamma")


def test_plot_sweep_needs_finished_runs(tmp_path):
    make_run(tmp_path / "0", finished=False)
    make_run(tmp_path / "1", beta=0.5, finished=False)
    with pytest.raises(ValueError, match="no metric to plot"):
        analysis.plot_sweep(analysis.runs_table(tmp_path), "method.beta")


def test_plot_curves_one_line_per_run(grid):
    histories = analysis.load_histories(grid)
    assert list(histories) == ["0", "1", "2", "3", "10"] and histories["10"].empty
    labels = analysis.run_labels(analysis.runs_table(grid))
    fig = analysis.plot_curves(histories, labels=labels)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["train/loss", "val/loss"]
    lines = axes[0].get_lines()
    assert [line.get_label() for line in lines][:2] == [
        "0 (beta=0.1, margin=1.0)",
        "1 (beta=0.5, margin=1.0)",
    ]
    assert list(lines[0].get_xdata()) == [0, 1, 2] and list(axes[1].get_lines()[0].get_xdata()) == [0, 3]
    fig = analysis.plot_curves(histories, ["train/lr", "train/nothing"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["train/lr"]
    with pytest.raises(ValueError, match="no step history"):
        analysis.plot_curves({"10": histories["10"]})
