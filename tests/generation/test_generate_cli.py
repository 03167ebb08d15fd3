"""``generate.py``: every generation config composes; a SIGKILLed run resumes without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[2]
GENERATION = sorted((REPO / "configs" / "generation").rglob("*.yaml"))


def compose_generate(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from prefdistill.utils.config_groups import register_config_groups
    from prefdistill.utils.run import register_resolvers

    register_config_groups()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("generate", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("path", GENERATION, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_generation_configs_compose(path):
    group = path.parent.relative_to(REPO / "configs").as_posix()
    cfg = compose_generate(["model=tiny", f"{group}={path.stem}"])
    params = instantiate(cfg.generation.params)
    assert params.max_new_tokens > 0
    assert cfg.generation.generator.backend in ("hf", "vllm")


def _run(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prefdistill.generate", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_with_exactly_one_record_per_prompt_and_sample(tmp_path):
    out = tmp_path / "samples"
    args = ["model=tiny", "split=train", "limit=16", "shard_size=2", f"out_dir={out}",
            "generation.params.max_new_tokens=200", "generation.params.n=3", "generation.generator.progress=false",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PREFDISTILL_CACHE": str(tmp_path / "c"),
    }
    proc = _run(args, env)
    first = out / "shard-00000.jsonl"
    deadline = time.time() + 90
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*.jsonl")}
    assert first.name in finished and len(finished) < 8, f"kill came too late: {sorted(finished)}"

    proc = _run(args, env)
    log = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, log
    assert f"{len(finished)}/8 shards of rank 0 of 1 done" in log
    for name, stamp in finished.items():  # finished shards were kept, not regenerated
        assert ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) == stamp
    lines = [
        json.loads(line) for p in sorted(out.glob("shard-*.jsonl")) for line in p.read_text().splitlines()
    ]
    keys = [(r["index"], r["sample"]) for r in lines]
    assert sorted(keys) == [(i, j) for i in range(16) for j in range(3)]  # none lost, none duplicated
    assert not list(out.glob(".shard-*"))  # the killed run's temporary file is gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["config"]["model"]["name_or_path"] == "tiny"

    # the resumed records equal those of an uninterrupted run with the same seed
    from prefdistill.generation import read_shards, sample_split
    from prefdistill.generation.base import SamplingParams
    from prefdistill.generation.shards import PromptSource

    cfg = compose_generate(["model=tiny"])
    ref = sample_split(instantiate(cfg.model), PromptSource("shipped", "train", limit=16), tmp_path / "ref",
                       SamplingParams(max_new_tokens=200, n=3), shard_size=2, progress=False)  # fmt: skip
    assert [r["response"] for r in read_shards(ref)] == [
        r["response"] for r in sorted(lines, key=lambda r: (r["index"], r["sample"]))
    ]
