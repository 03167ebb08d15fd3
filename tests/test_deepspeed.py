"""DeepSpeed end to end on CPU (hardware=deepspeed_cpu): ZeRO-2/3 training, checkpoint folders,
resume, and conversion to a transformers folder equal to the trained weights.

Each run is a `python train.py` subprocess: DeepSpeed initialises torch.distributed and global
state that must not leak into other tests. The first run in a fresh environment JIT-compiles a
small DeepSpeed CPU op (~25 s, cached in $TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import REPO

pytest.importorskip("deepspeed")

pytestmark = pytest.mark.slow

TINY = [
    "model=tiny",
    "hardware=deepspeed_cpu",
    "logger=none",
    "data.max_samples=16",
    "data.batch_size=4",
    "trainer.limit_val_batches=1",
]
LORA = "model.lora={r:4,alpha:8,dropout:0.0,target_modules:[q_proj,v_proj]}"


def _train(tmp_path: Path, run: str, *overrides: str) -> tuple[Path, dict, str]:
    """Run train.py in a subprocess; return the run folder, its metrics.json and the log."""
    env = {**os.environ, "PREFDISTILL_ROOT": str(tmp_path), "PREFDISTILL_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "train.py", *TINY, f"run_name={run}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "logs" / "train" / "runs" / run
    return out, json.loads((out / "metrics.json").read_text()), proc.stderr + proc.stdout


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape and a[name].numel() > 0, name
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def _straight_and_resumed(tmp_path: Path, *overrides: str) -> tuple[Path, Path]:
    """A 4-step run keeping its step-2 checkpoint folder, and a second run resumed from that folder to
    step 4: the uninterrupted and the resumed run, both finished. Returns their run folders."""
    keep = ["callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.model_checkpoint.save_top_k=-1"]
    straight, a, _ = _train(tmp_path, "straight", "trainer.max_steps=4", *keep, *overrides)
    step2 = straight / "checkpoints" / "step000002.ckpt"
    assert step2.is_dir() and (step2 / "latest").is_file(), "DeepSpeed writes a checkpoint folder"
    resumed, b, log = _train(tmp_path, "resumed", "trainer.max_steps=4", f"ckpt_path={step2}", *overrides)
    assert "Restoring states from the checkpoint" in log and str(step2) in log
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["after"].items():
        assert b["after"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    return straight, resumed


def _assert_resumed_equals_straight(straight: Path, resumed: Path) -> dict[str, torch.Tensor]:
    """Same final weights (optimizer state, schedule and data position restored), and not the initial ones."""
    a, b = _weights(straight / "model"), _weights(resumed / "model")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7, msg=name)
    init = _weights_of_fresh_tiny()
    moved = [k for k in init if not torch.equal(a[k], init[k])]
    assert len(moved) > len(init) // 2, f"training moved only {moved}"
    return a


def test_zero2_resume_equals_an_uninterrupted_run_and_converts(tmp_path):
    from prefdistill.convert import convert_checkpoint

    straight, resumed = _straight_and_resumed(tmp_path)
    trained = _assert_resumed_equals_straight(straight, resumed)
    assert (resumed / "policy_spec.json").is_file()
    # checkpoint folder -> plain transformers folder, equal to the weights the run ended with
    converted = convert_checkpoint(resumed / "checkpoints" / "last.ckpt", tmp_path / "converted")
    _assert_equal(_weights(converted), trained)


def test_zero3_resume_equals_an_uninterrupted_run_and_gathers_weights(tmp_path):
    from prefdistill.convert import main as pd_convert

    straight, resumed = _straight_and_resumed(tmp_path, "trainer.strategy.stage=3")
    result = json.loads((straight / "metrics.json").read_text())
    assert result["before"]["val/reward/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    saved = _assert_resumed_equals_straight(straight, resumed)  # gathered from the partitioned policy
    converted = tmp_path / "converted"
    assert pd_convert([str(resumed / "checkpoints" / "last.ckpt"), str(converted)]) == 0
    _assert_equal(_weights(converted), saved)


def test_lora_checkpoint_converts_to_adapter_and_merged_model(tmp_path):
    from peft import PeftModel

    from prefdistill.convert import convert_checkpoint, policy_spec_of_run
    from prefdistill.models import load_model

    out, _, _ = _train(
        tmp_path,
        "lora",
        "trainer.max_steps=2",
        LORA,
        "save_merged=true",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    ckpt = out / "checkpoints" / "last.ckpt"
    (states,) = (ckpt / "checkpoint").glob("*model_states.pt")
    module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    # the adapters, not the frozen base (DeepSpeed keeps one alias key of a tied embedding)
    assert any("lora_" in k for k in module) and not [
        k for k in module if "layers." in k and "lora_" not in k
    ]

    converted = convert_checkpoint(ckpt, tmp_path / "converted", merge=True)
    assert (converted / "adapter_config.json").is_file()
    _assert_equal(_weights(converted / "merged"), _weights(out / "model" / "merged"))
    base = dataclasses.replace(policy_spec_of_run(out), lora=None)

    def adapter(folder: Path) -> dict[str, torch.Tensor]:
        state = PeftModel.from_pretrained(load_model(base, trainable=False), folder).state_dict()
        return {k: v for k, v in state.items() if "lora_" in k}

    trained = adapter(out / "model")
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k), "the adapter was trained"
    _assert_equal(adapter(converted), trained)


def _weights_of_fresh_tiny() -> dict[str, torch.Tensor]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from prefdistill.models import load_model

    spec = instantiate(OmegaConf.load(REPO / "configs" / "model" / "tiny.yaml"))
    return {k: v.clone() for k, v in load_model(spec, trainable=False).state_dict().items()}
