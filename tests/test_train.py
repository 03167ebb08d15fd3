"""The entry point end to end on the tiny model: fast_dev_run per method, a real short run, a sweep."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from train_helpers import CONFIGS, REPO, assert_plan_is_what_ran, assert_sane_losses, method_loss, record_run

from prefdistill.losses import list_losses
from prefdistill.train import train

METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))


def _loss(method: str):
    return method_loss(method)


def _extra_overrides(method: str) -> list[str]:
    """Inputs a loss needs beyond the demo pairs: a teacher, scored pairs, scored lists, unpaired rows."""
    loss = _loss(method)
    extra = []
    # methods whose file selects a pipeline build their data with a teacher first (plad, pad, seqkd)
    pipeline = "override /pipeline" in (CONFIGS / "method" / f"{method}.yaml").read_text()
    if "teacher" in loss.needs or pipeline:
        extra.append("teacher=tiny")
    if pipeline:
        extra += ["pipeline.prepare.sampling.max_new_tokens=8", "data.max_samples=12"]
    elif loss.kind == "listwise":
        extra.append("data=demo_lists")
    elif loss.kind == "unpaired":
        extra.append("data=demo_unpaired")
    elif "scores" in loss.needs:
        extra.append("data=demo_scored")
    return extra


def test_every_registered_loss_has_a_method_file():
    names = {_loss(m).name for m in METHODS}
    assert set(list_losses()) <= names, set(list_losses()) - names


@pytest.mark.parametrize("method", METHODS)
def test_fast_dev_run(method, tiny_cfg, monkeypatch):
    """Every method file runs a step, and preflight's plan (models held per rank, the chain's stages) is what the
    run loaded (``assert_plan_is_what_ran``)."""
    cfg = tiny_cfg(f"method={method}", "debug=fdr", *_extra_overrides(method))
    seen = record_run(monkeypatch)
    assert_sane_losses(train(cfg), cfg.paths.output_dir)
    assert_plan_is_what_ran(seen)


def test_short_run_writes_model_metrics_and_config(tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg("logger=csv")
    with caplog.at_level(logging.INFO, logger="prefdistill.train"):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "metrics.json").read_text())
    assert result["global_step"] == 2
    assert "train/loss" in result["train"], result["train"]  # stopped mid-epoch: kept despite validate()
    assert "val/reward/accuracy" in result["before"] and "val/reward/accuracy" in result["after"]
    assert result["before"]["val/reward/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    # every pair a tie before training: TRL's accuracy 0, the tie-aware one 1/2, shown in the logged table
    assert result["before"]["val/reward/accuracy"] == 0.0 and result["before"]["val/reward/ties"] == 1.0
    assert result["before"]["val/reward/accuracy_ties_half"] == 0.5
    assert re.search(r"val/reward/accuracy_ties_half +before +0\.5000 +after", caplog.text), caplog.text
    assert (
        result["model"]["format"] == "full model"
        and "model:   " + str(out / "model") + " (full model)" in caplog.text
    )
    assert (out / "config_resolved.yaml").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(result["paths"]["model"])
    assert model.config.vocab_size > 0


def test_the_command_line_exits_0_for_a_method_without_reward_metrics(tmp_path):
    """A plain run of a distillation method has no val/reward/*: nothing to return, no error."""
    env = {**os.environ, "PREFDISTILL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "train.py", "method=kd_fkl", "model=tiny", "teacher=tiny", "debug=fdr",
           "logger=none", f"paths.root_dir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_main_returns_the_optimized_metric(tiny_cfg):
    from prefdistill.utils.run import metric_value

    cfg = tiny_cfg("save_model=false", "optimized_metric=val/reward/accuracy")
    value = metric_value(train(cfg), cfg.optimized_metric)
    assert isinstance(value, float) and 0.0 <= value <= 1.0
    with pytest.raises(KeyError, match="optimized_metric"):
        metric_value({"val/loss": 1.0}, "val/nope")


def test_multirun_sweep_separate_dirs_one_wandb_group(tmp_path):
    env = {
        **os.environ,
        "PREFDISTILL_ROOT": str(tmp_path),
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
    }
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "model=tiny",
        "method.beta=0.1,0.5",
        "trainer.max_steps=2",
        "data.max_samples=8",
        "data.batch_size=4",
        "trainer.limit_val_batches=1",
        "save_model=false",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "logs" / "train" / "multiruns").glob("*/*") if p.is_dir())
    assert [p.name for p in jobs] == ["0_method.beta=0.1", "1_method.beta=0.5"]  # named by the swept value
    betas, groups = set(), set()
    for job in jobs:
        cfg = OmegaConf.load(job / "config_resolved.yaml")
        betas.add(cfg.method.beta)
        groups.add(cfg.logger.wandb.group)
        assert cfg.logger.wandb.name == job.name  # the W&B run carries it too
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, job
        assert (job / "csv" / "metrics.csv").is_file(), job  # the step history, beside W&B's run
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 2
    assert betas == {0.1, 0.5}
    assert len(groups) == 1


PIPELINE_TINY = ["teacher=tiny", "pipeline.prepare.sampling.max_new_tokens=8", "data.max_samples=12",
                 "trainer.max_steps=1", "save_model=false"]  # fmt: skip


def _pipeline_logs_of_two_runs(tiny_cfg, caplog, overrides) -> tuple[list[str], list[str]]:
    """The `pipeline:` log lines of a first run and of the same run repeated."""
    caplog.set_level("INFO", logger="prefdistill")
    logs = []
    for _ in range(2):
        caplog.clear()
        train(tiny_cfg(*overrides))
        logs.append([r.getMessage() for r in caplog.records if r.getMessage().startswith("pipeline:")])
    return logs[0], logs[1]


@pytest.mark.parametrize("method", ["plad", "pad"])
def test_pipeline_stages_run_once_then_are_reused(method, tiny_cfg, caplog):
    first, second = _pipeline_logs_of_two_runs(tiny_cfg, caplog, [f"method={method}", *PIPELINE_TINY])
    assert first and second
    assert "ran" in first[0] and "ran" not in second[0], (first, second)


def test_pipeline_fine_tunes_student_and_teacher_when_configured(tiny_cfg, caplog):
    overrides = ["method=plad", *PIPELINE_TINY, "pipeline.prepare.sft_student=${pipeline.sft}",
                 "pipeline.prepare.sft_teacher=${pipeline.sft}", "pipeline.sft.max_steps=2"]  # fmt: skip
    first, second = _pipeline_logs_of_two_runs(tiny_cfg, caplog, overrides)
    assert "sft" in first[0].lower(), first
    assert "ran" not in second[0], second
