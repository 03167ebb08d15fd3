"""CUDA paths, marked ``gpu``: the GPU check (``benchmarks/gpu/check.sh``) runs them with ``pytest -m gpu``;
without a CUDA GPU they skip. Tiny models: each takes seconds on a GPU."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, TINY_OVERRIDES, assert_sane_losses, compose_train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
PEAKED = dataclasses.replace(TINY, random_init={**TINY.random_init, "initializer_range": 0.2})


def _gpu_cfg(tmp_path, *extra: str):
    """The tiny test run on ``hardware=gpu`` (one CUDA GPU, bf16-true)."""
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("hardware=")]
    return compose_train(tmp_path, [*overrides, "hardware=gpu", *extra])


def test_log_probs_on_cuda_equal_cpu():
    """Chunked fp32 log-probs of the same fp32 model agree across devices (kernel rounding only)."""
    from prefdistill.models import load_model, response_logps

    model = load_model(PEAKED, trainable=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 600, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :25] = -100  # a 25-token prompt, 15 response tokens
    cpu_sums, cpu_counts = response_logps(model, ids, mask, labels)
    model.cuda()
    gpu_sums, gpu_counts = response_logps(model, ids.cuda(), mask.cuda(), labels.cuda())
    assert torch.equal(gpu_counts.cpu(), cpu_counts) and (cpu_counts == 15).all()
    torch.testing.assert_close(gpu_sums.cpu(), cpu_sums, rtol=1e-4, atol=1e-3)


def test_bf16_dpo_trains_on_one_gpu_and_logs_mfu(tmp_path):
    """hardware=gpu: bf16 weights on CUDA, finite losses, the policy moved (margin != 0 after, 0 before),
    and the throughput monitor logs MFU against the profile's peak."""
    from prefdistill.train import train

    cfg = _gpu_cfg(tmp_path, "logger=csv", "save_model=false", "trainer.max_steps=3")
    metrics = train(cfg)
    assert_sane_losses(metrics, cfg.paths.output_dir)
    result = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert result["global_step"] == 3
    assert result["before"]["val/reward/margin"] == pytest.approx(0.0, abs=1e-6)
    assert result["after"]["val/reward/margin"] != 0.0
    rows = list(csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")))
    mfu = [float(r["train/perf/mfu"]) for r in rows if r.get("train/perf/mfu")]
    assert len(mfu) == 3 and all(0.0 < m < 1.0 for m in mfu), mfu


def test_hf_generator_greedy_on_cuda_equals_cpu():
    """Batched, left-padded greedy decoding gives the same tokens on CUDA as on CPU (fp32 tiny model)."""
    from prefdistill.generation import SamplingParams, build_generator

    prompts = ["What is two plus two?", "Name a colour.", "Say hello to a friend who lives far away."]
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    cpu = build_generator(PEAKED, batch_size=2, device="cpu", progress=False).generate_completions(
        prompts, params
    )
    gpu = build_generator(PEAKED, batch_size=2, device="cuda", progress=False).generate_completions(
        prompts, params
    )
    assert [[c.token_ids for c in row] for row in gpu] == [[c.token_ids for c in row] for row in cpu]
    assert all(row[0].num_tokens > 0 for row in gpu)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_one_step_on_one_gpu(stage, tmp_path):
    """hardware=deepspeed_zero{2,3} with one device: one optimizer step, finite loss."""
    pytest.importorskip("deepspeed")
    import os
    import subprocess
    import sys

    from train_helpers import REPO

    env = {**os.environ, "PREFDISTILL_ROOT": str(tmp_path), "PREFDISTILL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "train.py", "model=tiny", f"hardware=deepspeed_zero{stage}", "trainer.devices=1",
           "trainer.max_steps=1", "logger=none", "data.max_samples=8", "data.batch_size=4",
           "trainer.limit_val_batches=1", "save_model=false", "run_name=z"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "logs" / "train" / "runs" / "z"
    result = json.loads((run / "metrics.json").read_text())
    assert result["global_step"] == 1 and result["skipped_nonfinite_steps"] == 0
