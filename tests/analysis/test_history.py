"""prefdistill.analysis.history: step histories from ``<run>/csv/metrics.csv`` (hand-made, and
written by a real tiny training run with the default logger), and the logger that keeps that file
across the launches of a resumed run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from run_folders import make_run, train_rows

from prefdistill import analysis


def test_load_history_resumed_run_keeps_last_value_per_step(tmp_path):
    # a first launch logs steps 0..2 and validates at 3; the resumed launch restarts from a
    # checkpoint at step 2, repeats it with another value and goes on to step 5
    run = make_run(tmp_path / "r", history=train_rows(3) + train_rows(5, start=2, scale=2.0))
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


def test_load_history_from_csv_or_nothing(tmp_path):
    run = make_run(tmp_path / "r")
    assert analysis.load_history(run).empty and list(analysis.load_history(run).columns) == ["step"]
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n0,0,,0.69\n0,0,0.7,\n0,1,0.6,\n0,2,,0.5\n"
    )
    history = analysis.load_history(run)
    assert list(analysis.metric_curve(history, "train/loss")["train/loss"]) == [0.7, 0.6]
    assert list(analysis.metric_curve(history, "val/loss")["step"]) == [0, 2]


def test_load_histories_labels_runs_as_the_runs_table(grid):
    histories = analysis.load_histories(grid)
    assert list(histories) == ["0", "1", "2", "3", "10"] and histories["10"].empty
    assert len(histories["0"]) == 5  # val before, 3 train steps, val after


def _launch(logger_cls, save_dir: Path, rows: list[tuple[int, dict]]) -> None:
    """One process's logger over ``save_dir/csv/metrics.csv``: log each (step, metrics), flush."""
    logger = logger_cls(save_dir=str(save_dir), name="csv", version="")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()


def test_a_resumed_launch_appends_to_metrics_csv(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from prefdistill.utils.csv_logger import AppendingCSVLogger

    _launch(AppendingCSVLogger, tmp_path, [(0, {"train/loss": 0.7}), (1, {"train/loss": 0.6})])
    _launch(AppendingCSVLogger, tmp_path, [(1, {"train/loss": 0.5}), (2, {"val/loss": 0.4})])  # new column
    history = analysis.load_history(tmp_path)
    assert list(history["step"]) == [0, 1, 1, 2]
    assert history["train/loss"].tolist()[:3] == [0.7, 0.6, 0.5] and history["val/loss"].iloc[3] == 0.4
    assert list(analysis.metric_curve(history, "train/loss")["train/loss"]) == [0.7, 0.5]
    # Lightning's own CSVLogger deletes the file when a new process opens the folder: why the above exists
    _launch(CSVLogger, tmp_path, [(3, {"train/loss": 0.3})])
    assert list(analysis.load_history(tmp_path)["step"]) == [3]


def test_a_tiny_run_with_the_default_logger_writes_its_curve_as_csv(tmp_path):
    """``python train.py`` (logger=wandb) on the tiny model, 2 steps: W&B's offline run and
    ``csv/metrics.csv`` side by side, the config in ``csv/hparams.yaml``. Before its first update the policy
    is the reference, so the held-out loss and the first training loss are log 2 (DPO at zero
    margin); the last training loss and the held-out loss after training are those metrics.json holds."""
    from train_helpers import TINY_OVERRIDES, compose_train

    from prefdistill.train import train

    overrides = [o for o in TINY_OVERRIDES if not o.startswith("logger=")]  # the default logger
    cfg = compose_train(tmp_path, [*overrides, "save_model=false"])
    assert set(cfg.logger) == {"wandb", "csv"}
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert "method:" in (run / "csv" / "hparams.yaml").read_text()
    result = json.loads((run / "metrics.json").read_text())
    history = analysis.load_history(run)
    loss = analysis.metric_curve(history, "train/loss")
    val = analysis.metric_curve(history, "val/loss")
    assert list(loss["step"]) == [0, 1] and list(val["step"]) == [0, 2]
    assert loss["train/loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-6)
    assert val["val/loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-6)
    assert val["val/loss"].iloc[0] == pytest.approx(result["before"]["val/loss"], rel=1e-6)
    assert loss["train/loss"].iloc[-1] == pytest.approx(result["train"]["train/loss"], rel=1e-6)
    assert val["val/loss"].iloc[-1] == pytest.approx(result["after"]["val/loss"], rel=1e-6)
