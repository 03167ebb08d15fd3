"""Secrets stay out of run folders and configs.

API keys live only in the environment; configs name the variable (``api_key_env: OPENAI_API_KEY``)
and never hold a key or interpolate one (``${oc.env:...}`` would copy it into config_resolved.yaml
and .hydra/). The judge's own handling of the key is tested in tests/eval.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf
from train_helpers import CONFIGS, REPO

SECRET = "sk-test-SECRET123"
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|credential|(access|auth|hf|api)_?token)", re.I)
_ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_VAR = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.I)


def test_a_training_run_writes_the_api_key_nowhere(tmp_path):
    env = {
        **os.environ,
        "OPENAI_API_KEY": SECRET,
        "PREFDISTILL_ROOT": str(tmp_path),
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",  # tiny model: one thread is fastest on a shared machine
    }
    cmd = [sys.executable, "train.py", "model=tiny", "hardware=cpu", "logger=csv", "run_name=secrets",
           "data.max_samples=8", "data.batch_size=4", "trainer.max_steps=2", "trainer.limit_val_batches=1",
           "callbacks.model_checkpoint.every_n_train_steps=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr

    run = tmp_path / "logs" / "train" / "runs" / "secrets"
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {str(p.relative_to(run)) for p in files}
    expected = {
        "config_resolved.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
        "metrics.json", "csv/metrics.csv", "csv/hparams.yaml", "train.log", "checkpoints/last.ckpt",
    }  # fmt: skip
    assert expected <= names, expected - names  # the check below is not vacuous
    leaked = [str(p.relative_to(run)) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"


def _walk(node, key: str = "", where: str = ""):
    """``(key, where, value)`` for every leaf of a YAML document: ``key`` is the nearest mapping key,
    ``where`` the dotted path (list items keep their parent's key)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, str(k), f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, key, f"{where}[{i}]")
    else:
        yield key, where, node


def _violations(name: str, doc) -> list[str]:
    found = []
    for key, where, value in _walk(doc):
        if key.endswith("_env"):  # the NAME of an environment variable, e.g. api_key_env: OPENAI_API_KEY
            if value is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", str(value)):
                found.append(f"{name}: {where}: {value!r} is not an environment variable name")
        elif _SECRET_KEY.search(key) and value is not None:
            found.append(f"{name}: {where} holds a value; name the variable instead ({key}_env: VAR)")
        found += [
            f"{name}: {where} interpolates ${{oc.env:{var}}}"
            for var in _ENV_INTERPOLATION.findall(str(value))
            if _SECRET_VAR.search(var)
        ]
    return found


def _load(path: Path):
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def test_configs_name_secrets_but_never_hold_them():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert [v for path in files for v in _violations(str(path.relative_to(CONFIGS)), _load(path))] == []
    # not vacuous: the scan sees the eval suites' judge settings
    assert any(key == "api_key_env" for path in files for key, _, _ in _walk(_load(path)))


def test_the_config_scan_catches_keys_and_interpolated_keys():
    doc = {
        "judge": {"api_key": "sk-abc", "api_key_env": "sk-abc", "model": "gpt-4o"},
        "callbacks": [{"hf_token": "hf_abc"}],
        "logger": {"mode": "${oc.env:WANDB_MODE,offline}", "auth": "${oc.env:OPENAI_API_KEY}"},
    }
    assert [v.split(": ")[1].split(" ")[0] for v in _violations("probe.yaml", doc)] == [
        "judge.api_key",
        "judge.api_key_env",
        "callbacks[0].hf_token",
        "logger.auth",
    ]
