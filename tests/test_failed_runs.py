"""What a run that cannot go on prints and leaves behind: one message (no traceback, not twice), exit status 1,
and no run folder of its own; ``preflight_only`` prints its plan once and keeps no folder either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import REPO
from train_helpers import good_pair as _good

LONG_PROMPT = "Please read this carefully. " * 120


def _train(tmp_path, *overrides):
    env = {**os.environ, "PREFDISTILL_ROOT": str(tmp_path), "PREFDISTILL_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}  # fmt: skip
    proc = subprocess.run([sys.executable, "train.py", "model=tiny", "logger=none", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    return proc, proc.stdout + proc.stderr


def _runs(tmp_path) -> list:
    runs = tmp_path / "logs" / "train" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def _pairs(tmp_path, rows) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.slow
def test_bad_rows_are_one_message_before_any_model_and_leave_no_folder(tmp_path):
    rows = [_good(i) for i in range(30)]
    for i in (4, 9, 21):
        rows[i]["chosen"] = ""
    proc, out = _train(tmp_path, "data=local", f"data.path={_pairs(tmp_path, rows)}")
    assert proc.returncode == 1, out[-3000:]
    assert out.count("3 bad rows") == 1 and out.count("row 9 (line 10): field 'chosen': empty string") == 1, (
        out
    )
    assert "Traceback" not in out and "reference log-probs" not in out  # refused before any model work
    assert _runs(tmp_path) == []


@pytest.mark.slow
def test_a_data_error_found_at_tokenisation_is_one_message(tmp_path):
    """A prompt leaving no room for the response needs the tokenizer, so the datamodule finds it: one line,
    logged once, no traceback (Hydra printed the task wrapper's traceback a second time before)."""
    rows = [_good(i) for i in range(12)]
    rows[2]["prompt"] = LONG_PROMPT
    proc, out = _train(tmp_path, "data=local", f"data.path={_pairs(tmp_path, rows)}", "data.max_length=48",
                       "data.max_prompt_length=48")  # fmt: skip
    assert proc.returncode == 1, out[-3000:]
    assert out.count("no room for the response") == 1 and "Traceback" not in out, out[-3000:]
    assert _runs(tmp_path) == []


@pytest.mark.slow
def test_preflight_only_prints_the_plan_once_and_keeps_no_folder(tmp_path):
    proc, out = _train(tmp_path, "preflight_only=true")
    assert proc.returncode == 0, out[-3000:]
    assert out.count("preflight plan") == 1 and "policy tiny: random init" in out
    assert _runs(tmp_path) == []
