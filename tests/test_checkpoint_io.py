"""Atomic checkpoints: a crash or kill while ``last.ckpt`` is being written leaves the previous one.

``AtomicCheckpointIO`` (wired in configs/trainer/default.yaml) writes a hidden temporary sibling and
renames it; these tests break a save half-way -- an exception, and a SIGKILL that leaves no chance
to clean up -- and check that the previous checkpoint still loads, resume picks it, and the
half-written temporary file is never taken for a checkpoint.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from prefdistill.train import train
from prefdistill.utils.checkpoint_io import AtomicCheckpointIO
from prefdistill.utils.run import resolve_ckpt_path


def _write_half_then(crash):
    """A ``torch.save`` that writes the first half of the real bytes to its target, then ``crash()``es."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
        if hasattr(f, "write"):
            f.write(data)
            f.flush()
        else:  # a path: an in-place writer would tear the target here
            with open(f, "wb") as fh:
                fh.write(data)
        crash()

    return save


def _step(path: Path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def test_trainer_config_wires_the_atomic_checkpoint_io(tiny_cfg):
    trainer = instantiate(tiny_cfg().trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("hardware", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_profiles_drop_the_plugin(tiny_cfg, hardware):
    """DeepSpeed saves through its engine and never calls a CheckpointIO."""
    assert tiny_cfg(f"hardware={hardware}").trainer.plugins is None


def test_crash_mid_save_keeps_the_previous_last_ckpt_and_resume_uses_it(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("save_model=false", "validate_before_fit=false", "validate_after_fit=false")
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    saves = []

    def crash():
        raise OSError("simulated crash mid-save")

    half_save = _write_half_then(crash)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "global_step" in obj:  # a Lightning checkpoint
            saves.append(obj["global_step"])
            if len(saves) == 2:
                return half_save(obj, f, *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg)  # saves last.ckpt after step 1, crashes while saving it after step 2
    monkeypatch.setattr(torch, "save", real_save)

    assert saves == [1, 2]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # the temporary file is gone
    assert _step(ckpt_dir / "last.ckpt") == 1
    assert resolve_ckpt_path("auto", cfg.paths.output_dir) == str(ckpt_dir / "last.ckpt")

    resumed = tiny_cfg("save_model=false", "validate_before_fit=false", "validate_after_fit=false",
                       f"ckpt_path={ckpt_dir / 'last.ckpt'}")  # fmt: skip
    train(resumed)
    assert _step(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt") == 2


_KILLED_WRITER = """
import io, os, signal, sys, torch
from prefdistill.utils.checkpoint_io import AtomicCheckpointIO

ckpt = AtomicCheckpointIO()
ckpt.save_checkpoint({"global_step": 1, "w": torch.ones(4096)}, sys.argv[1])
torch.save = _write_half_then(lambda: os.kill(os.getpid(), signal.SIGKILL))
ckpt.save_checkpoint({"global_step": 2, "w": torch.zeros(4096)}, sys.argv[1])
"""


def test_killed_writer_leaves_the_previous_checkpoint_and_no_false_checkpoint(tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    script = inspect.getsource(_write_half_then) + textwrap.dedent(_KILLED_WRITER)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(last)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    assert _step(last) == 1  # the previous checkpoint, complete
    leftovers = [p for p in last.parent.iterdir() if p != last]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.tmp-"), leftovers
    assert leftovers[0].stat().st_size > 0  # the killed writer really had written part of it
    # nothing that looks for checkpoints takes it for one: resume=auto picks last.ckpt, and
    # Lightning's ckpt_path="last" only considers last*.ckpt files
    assert resolve_ckpt_path("auto", str(run)) == str(last)
    assert not leftovers[0].name.endswith(".ckpt")

    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, last)  # the next save tidies up
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"] and _step(last) == 3


def test_live_writers_temporary_files_are_left_alone(tmp_path):
    last = tmp_path / "last.ckpt"
    live = tmp_path / f".last.ckpt.tmp-{os.getppid()}-0123abcd"  # our parent is alive
    live.write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, last)
    assert live.exists() and _step(last) == 1
