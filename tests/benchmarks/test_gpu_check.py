"""The GPU check (``benchmarks/gpu/check.sh``) on CPU: ``--dry-run`` runs every step but the CUDA ones on the
tiny model and prints the summary line; its pieces (pinned wheels, the 1B config, throughput from the csv
log, the synthetic pairs) are checked by hand."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest
from train_helpers import CONFIGS, REPO

GPU = REPO / "benchmarks" / "gpu"


def _module(name: str):
    """``benchmarks/gpu/<name>.py`` as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check, wheels = _module("check"), _module("wheels")

NUMBER = r"\d+(?:\.\d+)?"
SUMMARY = re.compile(
    rf"^gpu_check dry_run=1 pytest_gpu=skipped\(no-cuda,(\d+)_tests\) dpo_tok_s=({NUMBER}) dpo_mfu=({NUMBER}) "
    rf"trl_tok_s=({NUMBER}) trl_mfu=({NUMBER}) dpo_over_trl=({NUMBER}) zero2=skipped\(no-cuda\) "
    rf"zero3=skipped\(no-cuda\) gen_tok_s=({NUMBER}) wall_s=(\d+)$"
)


@pytest.mark.slow  # ~50 s on 2 idle cores: train.py, TRL and generation each in a fresh process
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is in the bench extra")
def test_dry_run_prints_the_summary_line(tmp_path):
    proc = subprocess.run(["bash", str(GPU / "check.sh"), "--dry-run"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "GPU_CHECK_DIR": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, last
    cuda_tests, dpo, dpo_mfu, trl, trl_mfu, ratio, gen, wall = (float(x) for x in match.groups())
    assert cuda_tests >= 5  # tests/benchmarks/test_cuda.py, all skipped on CPU
    assert dpo > 0 and trl > 0 and gen > 0 and 0 < dpo_mfu < 1 and 0 < trl_mfu < 1
    assert ratio == pytest.approx(dpo / trl, rel=0.02)
    assert wall <= 480
    # ours ran through train.py with the csv log the numbers come from
    assert (tmp_path / "logs" / "train" / "runs" / "gpu-check-dpo" / "csv" / "metrics.csv").is_file()


def test_throughput_from_the_csv_log_by_hand(tmp_path):
    """Steps 0..2, one warm-up: tokens/s = (100*2 + 300*1) / (2 + 1) = 166.7; MFU time-weighted
    (0.1*2 + 0.4*1) / 3 = 0.2. Validation rows (no step time) are ignored."""
    run = tmp_path / "csv"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "step,train/perf/step_time_s,train/perf/tokens_per_s,train/perf/mfu,val/loss\n"
        "0,9.0,1.0,0.9,\n1,2.0,100.0,0.1,\n2,1.0,300.0,0.4,\n2,,,,0.69\n"
    )
    tps, mfu = check.throughput_from_csv(tmp_path, warmup=1)
    assert tps == pytest.approx(500 / 3) and mfu == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no step after the 3 warm-up"):
        check.throughput_from_csv(tmp_path, warmup=3)


def test_synthetic_pairs_are_seeded_distinct_and_sized(tmp_path):
    a = check.write_pairs(tmp_path / "a.jsonl", 20, (30, 50), (4, 8)).read_text()
    assert a == check.write_pairs(tmp_path / "b.jsonl", 20, (30, 50), (4, 8)).read_text()
    rows = [json.loads(line) for line in a.splitlines()]
    assert len(rows) == 20 and all(r["chosen"] != r["rejected"] for r in rows)
    assert all(30 <= len(r["prompt"].split()) <= 50 and 5 <= len(r["chosen"].split()) <= 9 for r in rows)


def test_wheels_are_pinned_and_meet_the_project_requirements():
    """wheels.txt pins every package as name==version; each pin the project declares a range for (its
    installed metadata: pyproject's dependencies and extras) lies in that range; no vLLM and no torch travel."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    reqs = wheels.requirements()
    pins = {canonicalize_name(r.split("==")[0]): r.split("==")[1] for r, _ in reqs}
    assert {"hydra-core", "omegaconf", "datasets", "trl", "deepspeed", "transformers"} <= set(pins)
    assert "vllm" not in pins and "torch" not in pins
    assert {r.split("==")[0] for r, sdist in reqs if sdist} == {"antlr4-python3-runtime", "deepspeed"}
    declared = [Requirement(d) for d in importlib.metadata.requires("prefdistill") or []]
    checked = 0
    for req in declared:
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])
            checked += 1
    assert checked >= 6
    assert wheels.missing([("no-such-package==1.0", False)]) == ["no-such-package==1.0"]


def test_llama_1b_random_has_the_stated_size():
    """hidden 2048, 16 layers, 32 heads of 64, 8 KV heads, MLP 8192, vocabulary 32000, untied head:
    layer = 2048*2048*2 (q, o) + 2048*512*2 (k, v) + 3*2048*8192 + 2*2048 = 60,821,504;
    16 layers + 2 * 32000*2048 (embeddings, head) + 2048 = 1,104,218,112."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from prefdistill.memory import meta_size
    from prefdistill.preflight import _config

    spec = instantiate(OmegaConf.load(CONFIGS / "model" / "llama_1b_random.yaml"))
    assert (
        meta_size(_config(spec, None), None).params
        == 1_104_218_112
        == 16 * 60_821_504 + 2 * 32000 * 2048 + 2048
    )
