"""A run name cannot mislabel a model: a run folder is continued only by the configuration that trained in it.

``run_name=x method=dpo``, then ``run_name=x method=simpo`` used to resume the DPO checkpoint and relabel
its metrics as SimPO's. Now the second launch is refused naming what differs and the two ways out;
``resume=force`` continues and is recorded in ``metrics.json``; settings that do not change the result
(logging, evaluation, labels, paths) may differ freely.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from prefdistill.train import train
from prefdistill.utils.errors import UsageError
from prefdistill.utils.resume import FINGERPRINT_FILE, RunConfigChanged, fingerprint


def _in(folder: Path, cfg):
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    return cfg


def test_a_changed_method_is_refused_and_resume_force_is_recorded(tiny_cfg, tmp_path):
    run = tmp_path / "named_run"
    train(_in(run, tiny_cfg("save_model=false")))  # DPO, 2 steps, last.ckpt at step 2
    assert json.loads((run / FINGERPRINT_FILE).read_text())["fingerprint"]["method.name"] == "dpo"
    first = (run / "metrics.json").read_text()

    # what does not change the result may change: logging, labels, evaluation settings, held-out limits
    same = train(_in(run, tiny_cfg("save_model=false", "logger=csv", "eval_label=again",
                                   "trainer.limit_val_batches=2", "trainer.log_every_n_steps=5")))  # fmt: skip
    assert same and json.loads((run / "metrics.json").read_text())["resume"] == {
        "started_at_step": 2,
        "forced": [],
    }

    with pytest.raises(RunConfigChanged) as refused:
        train(_in(run, tiny_cfg("save_model=false", "method=simpo")))
    message = str(refused.value)
    assert "run 'named_run'" in message and "method.name: 'dpo' -> 'simpo'" in message
    assert "method.beta: 0.1 -> 2.0" in message and "method.gamma_beta_ratio: (not set) -> 0.25" in message
    assert "run_name=named_run-2" in message and "resume=force" in message
    assert "dpo" in (run / "config_resolved.yaml").read_text()  # the refused launch wrote nothing
    assert json.loads((run / "metrics.json").read_text())["resume"]["forced"] == []

    train(_in(run, tiny_cfg("save_model=false", "method=simpo", "resume=force")))
    result = json.loads((run / "metrics.json").read_text())
    (forced,) = result["resume"]["forced"]
    assert forced["step"] == 2 and forced["changed"]["method.name"] == ["dpo", "simpo"]
    assert forced["changed"]["method.gamma_beta_ratio"] == ["(not set)", 0.25]
    assert json.loads((run / FINGERPRINT_FILE).read_text())["fingerprint"]["method.name"] == "simpo"
    assert first != (run / "metrics.json").read_text()


def test_the_fingerprint_keeps_what_determines_the_result(tiny_cfg):
    from omegaconf import OmegaConf

    def fp(*extra):
        return fingerprint(OmegaConf.to_container(tiny_cfg(*extra), resolve=True))

    base = fp()
    assert {"model.name_or_path", "data.batch_size", "method.beta", "module.optimizer.lr", "seed",
            "trainer.max_steps", "trainer.accumulate_grad_batches", "trainer.precision"} <= set(base)  # fmt: skip
    assert not [
        k for k in base if k.startswith(("logger", "paths", "callbacks", "eval", "hydra", "run_name"))
    ]
    assert (
        fp("logger=csv", "run_name=other", "ckpt_path=null", "eval=demo", "validate_before_fit=false") == base
    )
    for changed in ("seed=1", "data.batch_size=2", "module.optimizer.lr=1e-3", "trainer.max_steps=3"):
        assert fp(changed) != base, changed


def test_resume_must_be_check_or_force(tiny_cfg, tmp_path):
    with pytest.raises(UsageError, match="resume must be one of"):
        train(_in(tmp_path / "r", tiny_cfg("resume=yes")))


def test_a_finished_run_is_reused_unless_its_evaluation_differs_or_reuse_is_off(tiny_cfg, tmp_path, caplog):
    """A re-launched sweep (a search) redoes only the jobs that did not finish: a finished run with the same
    fingerprint and the same evaluation / held-out settings returns its metrics.json without training."""
    caplog.set_level("INFO", logger="prefdistill")
    run = tmp_path / "finished_run"
    metrics = train(_in(run, tiny_cfg("save_model=false")))
    written = (run / "metrics.json").stat().st_mtime_ns
    caplog.clear()
    again = train(_in(run, tiny_cfg("save_model=false", "logger=csv")))  # logging differs: still the same run
    assert again == metrics and (run / "metrics.json").stat().st_mtime_ns == written
    assert "already finished with this configuration" in caplog.text and "resuming run" not in caplog.text
    caplog.clear()
    train(
        _in(run, tiny_cfg("save_model=false", "validate_before_fit=false"))
    )  # other held-out passes: re-run
    assert "already finished" not in caplog.text and (run / "metrics.json").stat().st_mtime_ns != written
    written = (run / "metrics.json").stat().st_mtime_ns
    caplog.clear()
    train(_in(run, tiny_cfg("save_model=false", "validate_before_fit=false", "reuse_finished=false")))
    assert "already finished" not in caplog.text and (run / "metrics.json").stat().st_mtime_ns != written
