"""Every console script of pyproject.toml exits 0 when it did its job and non-zero when it could not.

Each runs as pip's generated script does (``sys.exit(<entry point>())``), on the tiny model: a one-step
training run (which returns a metric to Hydra), converting its checkpoint, comparing its folder and
sampling a few prompts; then each with an input it cannot use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from train_helpers import REPO

_SECTION = (REPO / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
SCRIPTS = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', _SECTION, flags=re.M))  # name -> module:function


def _script(name: str, *args: str, root) -> subprocess.CompletedProcess:
    module, function = SCRIPTS[name].split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    env = {**os.environ, "PREFDISTILL_ROOT": str(root), "PREFDISTILL_CACHE": str(root / "cache"),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_every_script_is_covered():
    assert set(SCRIPTS) == {"pd-train", "pd-eval", "pd-generate", "pd-convert"}


@pytest.mark.slow
def test_each_script_exits_0_on_success_and_1_on_failure(tmp_path):
    run = tmp_path / "logs" / "train" / "runs" / "one-step"
    train = _script("pd-train", "model=tiny", "logger=none", "trainer.max_steps=1", "data.max_samples=8",
                    "data.batch_size=4", "trainer.limit_val_batches=1", "optimized_metric=val/loss",
                    "run_name=one-step", "callbacks.model_checkpoint.every_n_train_steps=1", root=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    convert = _script(
        "pd-convert", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "converted"), root=tmp_path
    )
    assert convert.returncode == 0, convert.stderr[-2000:]
    assert (
        convert.stdout.strip().splitlines()[-1] == str(tmp_path / "converted")
        and (tmp_path / "converted" / "config.json").is_file()
    )
    compare = _script("pd-eval", f"compare=[{run}]", root=tmp_path)
    assert compare.returncode == 0, compare.stderr[-2000:]
    generate = _script("pd-generate", "model=tiny", "split=train", "limit=2", "shard_size=2",
                       "generation.params.max_new_tokens=4", f"out_dir={tmp_path / 'samples'}", root=tmp_path)  # fmt: skip
    assert generate.returncode == 0, generate.stderr[-2000:]

    failures = {
        "pd-train": ["method=no_such_method"],
        "pd-convert": [str(tmp_path / "missing.ckpt"), str(tmp_path / "out")],
        "pd-eval": [f"compare=[{tmp_path / 'missing'}]"],
        "pd-generate": ["model=tiny", "split=no_such_split"],
    }
    for name, args in failures.items():
        failed = _script(name, *args, root=tmp_path)
        assert failed.returncode == 1, (name, failed.returncode, failed.stderr[-2000:])
    missing = _script("pd-convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "out"), root=tmp_path)
    assert (
        missing.stderr.strip().splitlines()[-1].startswith("pd-convert: ")
        and "Traceback" not in missing.stderr
    )
