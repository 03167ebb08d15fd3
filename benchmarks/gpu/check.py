"""One GPU check: a single summary line from one run on a machine with one CUDA GPU, offline.

    benchmarks/gpu/check.sh              # the GPU machine (missing wheels installed privately first)
    benchmarks/gpu/check.sh --dry-run    # any CPU machine: the same steps on the tiny model, CUDA ones skipped

Steps, each in its own subprocess under its own time limit, all within ``--budget`` seconds (8 minutes):

1. ``pytest -m gpu``: the tests marked ``gpu`` (CUDA paths) -> passed / collected.
2. DPO through ``train.py`` on ``model=llama_1b_random`` (random init, no weights), ``hardware=gpu`` (bf16),
   reference log-probs cached, on seeded TL;DR-shaped pairs (prompts of 300-500 words, responses of 20-60)
   written as a local JSONL: tokens/s and MFU from ``ThroughputMonitor`` (csv log), over the steps after
   the warm-up ones (which include the reference-cache pass).
3. TRL's ``DPOTrainer`` in the same run on the same model (same seed), the same pairs as our data module
   tokenizes them, the same batch and steps, bf16, ``precompute_ref_log_probs=True`` (its reference pass is
   outside the timed steps too). Tokens are counted alike (prompt once + chosen + rejected); FLOPs by the
   same formula (``prefdistill.callbacks.throughput.step_flops``) for the work TRL does (the prompt twice).
4. One optimizer step of ``hardware=deepspeed_zero2`` and ``deepspeed_zero3`` on one GPU: ok and seconds.
5. Generation tokens/s of the HF backend (batched greedy) on the same model.

``--dry-run`` runs 1 on the CUDA test file only (its tests skip without CUDA), 2, 3 and 5 on ``model=tiny``
on CPU in fp32 (MFU against the measured fp32 matmul peak), and skips 4. The last line is always::

    gpu_check dry_run=0 pytest_gpu=P/T dpo_tok_s=X dpo_mfu=Y trl_tok_s=X trl_mfu=Y dpo_over_trl=R
    zero2=ok(S) zero3=ok(S) gen_tok_s=G wall_s=W

(one line), a field being ``skipped(<why>)`` or ``fail(<why>)`` where it did not run or failed; the exit
status is 1 when any step that ran failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("summary post reddit title friend money advice job week month city house car dog cat family "
         "school work problem help think feel want know time year people thing way day good bad new").split()  # fmt: skip
BETA, LR = 0.1, 1e-6


# -- settings -----------------------------------------------------------------------------------------
def settings(dry_run: bool) -> dict:
    """Model, hardware and sizes of each step; the dry run shrinks everything to seconds on CPU."""
    if dry_run:
        return {"model": "tiny", "hardware": "cpu", "batch": 2, "warmup": 1, "steps": 2, "prompt": (30, 50),
                "response": (4, 8), "gen_prompts": 8, "gen_tokens": 8, "pytest": ["tests/benchmarks/test_cuda.py"]}  # fmt: skip
    return {"model": "llama_1b_random", "hardware": "gpu", "batch": 8, "warmup": 2, "steps": 8,
            "prompt": (300, 500), "response": (20, 60), "gen_prompts": 64, "gen_tokens": 128, "pytest": ["tests"]}  # fmt: skip


def write_pairs(
    path: Path, n: int, prompt: tuple[int, int], response: tuple[int, int], seed: int = 0
) -> Path:
    """``n`` seeded pairs of words with the given length ranges (in words), chosen != rejected."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"s{i}", "prompt": text(*prompt), "chosen": f"yes {text(*response)}",
                   "rejected": f"no {text(*response)}"}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=max(1.0, timeout))  # fmt: skip


def tail(proc: subprocess.CompletedProcess) -> str:
    """The failing run's cause: its last error line (a run's last line says only that its folder was removed)."""
    lines = [x for x in (proc.stderr + proc.stdout).strip().splitlines() if x.strip()]
    errors = [x for x in lines if "Error" in x or "error:" in x]
    line = (errors or lines or [f"rc={proc.returncode}"])[-1]
    return line[:160].replace(" ", "_")


# -- 1. pytest -m gpu ---------------------------------------------------------------------------------
def step_pytest(s: dict, dry_run: bool, timeout: float) -> str:
    proc = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *s["pytest"]], timeout
    )
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", proc.stdout)}
    total = sum(counts.values())
    if dry_run:  # without CUDA every gpu test skips: the selection is what runs
        return f"skipped(no-cuda,{counts.get('skipped', 0)}_tests)"
    ok = proc.returncode == 0 and counts.get("passed", 0) > 0
    return (
        f"{counts.get('passed', 0)}/{total}"
        if ok
        else f"fail({counts.get('passed', 0)}/{total}:{tail(proc)})"
    )


# -- 2. DPO through train.py ----------------------------------------------------------------------------
def train_overrides(s: dict, data: Path, steps: int, run_name: str) -> list[str]:
    return [f"model={s['model']}", f"hardware={s['hardware']}", "method=dpo", f"method.beta={BETA}",
            "data=local", f"data.path={data}", "data.max_length=1024", "data.max_prompt_length=896",
            f"data.batch_size={s['batch']}", "data.max_samples=null", "data.val_fraction=0.0",
            f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "validate_before_fit=false",
            "validate_after_fit=false", "save_model=false", "ckpt_path=null", f"run_name={run_name}",
            f"module.optimizer.lr={LR}", "~callbacks.model_checkpoint", "~callbacks.timed_checkpoint",
            "+trainer.enable_checkpointing=false"]  # fmt: skip


def throughput_from_csv(run_dir: Path, warmup: int) -> tuple[float, float]:
    """(tokens/s, MFU) over the logged steps after ``warmup``: total tokens (or FLOPs) over total time."""
    rows = [
        r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("train/perf/step_time_s")
    ]
    timed = sorted(rows, key=lambda r: int(r["step"]))[warmup:]
    if not timed:
        raise ValueError(f"no step after the {warmup} warm-up ones in {run_dir}/csv/metrics.csv")
    seconds = sum(float(r["train/perf/step_time_s"]) for r in timed)
    tokens = sum(float(r["train/perf/tokens_per_s"]) * float(r["train/perf/step_time_s"]) for r in timed)
    mfu = sum(float(r.get("train/perf/mfu") or "nan") * float(r["train/perf/step_time_s"]) for r in timed)
    return tokens / seconds, mfu / seconds


def step_ours(
    s: dict, data: Path, work: Path, timeout: float, peak: float | None
) -> tuple[str, float | None, float | None]:
    """``peak``: FLOP/s of one GPU for the MFU (None on CPU: the monitor measures an fp32 matmul)."""
    name = "gpu-check-dpo"
    overrides = train_overrides(s, data, s["warmup"] + s["steps"], name) + ["logger=csv"]
    overrides += [f"hardware.peak_flops_per_device={peak}"] if peak else []
    proc = run([sys.executable, "train.py", *overrides], timeout, {"PREFDISTILL_ROOT": str(work)})
    if proc.returncode != 0:
        return f"fail({tail(proc)})", None, None
    tps, mfu = throughput_from_csv(work / "logs" / "train" / "runs" / name, s["warmup"])
    return "ok", tps, mfu


# -- 3. TRL's DPOTrainer, same model/data/batch (run in a child: python check.py --trl <json>) ----------------
def trl_child(cfg: dict) -> dict:
    import torch
    from datasets import Dataset
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from prefdistill.callbacks.throughput import ModelShape, batch_tokens, measured_peak_flops, step_flops
    from prefdistill.data.collate import collate_pairs
    from prefdistill.data.datamodule import PreferenceDataModule
    from prefdistill.models import load_model, load_tokenizer

    cuda = torch.cuda.is_available() and not cfg["dry_run"]
    spec = instantiate(OmegaConf.load(ROOT / "configs" / "model" / f"{cfg['model']}.yaml"))
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    dm = PreferenceDataModule(source="local", path=cfg["data"], max_length=1024, max_prompt_length=896,
                              batch_size=cfg["batch"], val_fraction=0.0)  # fmt: skip
    dm.connect(tokenizer)
    dm.setup("fit")
    n_steps = cfg["warmup"] + cfg["steps"]
    examples = dm.datasets["train"][: cfg["batch"] * n_steps]
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")

    class Trainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):  # already tokenized by our data module
            return dataset

        def _get_train_sampler(self, *args, **kwargs):  # batch k = examples[k*B:(k+1)*B]
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize() if cuda else None
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize() if cuda else None
            self.times.append(time.perf_counter() - self._t)

    args = DPOConfig(
        output_dir=str(Path(cfg["work"]) / "trl"), per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=LR, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"], max_length=None,
        precompute_ref_log_probs=True, gradient_checkpointing=False, use_cpu=not cuda, bf16=cuda, fp16=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    timer = Timer()
    trainer = Trainer(model=model, ref_model=None, args=args, processing_class=tokenizer, callbacks=[timer],
                      train_dataset=Dataset.from_list([{k: ex[k] for k in keys} for ex in examples]))  # fmt: skip
    trainer.train()
    shape, pad = ModelShape.of(trainer.model), dm.pad_token_id
    tokens = flops = 0.0
    for k in range(cfg["warmup"], n_steps):
        batch = collate_pairs(examples[k * cfg["batch"] : (k + 1) * cfg["batch"]], pad)
        tokens += batch_tokens(batch, shared_prompt=True).tokens  # unique tokens, as ours counts them
        flops += step_flops(shape, batch_tokens(batch, shared_prompt=False))  # TRL runs the prompt twice
    seconds = sum(timer.times[cfg["warmup"] :])
    peak = cfg["peak_flops"] if cuda else measured_peak_flops()
    return {"tokens_per_s": tokens / seconds, "mfu": flops / seconds / peak}


def child_result(proc: subprocess.CompletedProcess) -> dict | None:
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return None


def step_child(kind: str, cfg: dict, timeout: float) -> tuple[str, dict | None]:
    try:
        proc = run([sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(cfg)], timeout)
    except subprocess.TimeoutExpired:
        return f"fail(timeout_{timeout:.0f}s)", None
    result = child_result(proc)
    return ("ok", result) if proc.returncode == 0 and result else (f"fail({tail(proc)})", None)


# -- 4. one ZeRO step -------------------------------------------------------------------------------------
def step_zero(stage: int, s: dict, data: Path, work: Path, timeout: float) -> str:
    name = f"gpu-check-zero{stage}"
    overrides = train_overrides({**s, "hardware": f"deepspeed_zero{stage}"}, data, 1, name)
    started = time.perf_counter()
    try:
        proc = run([sys.executable, "train.py", *overrides, "trainer.devices=1", "logger=none"], timeout,
                   {"PREFDISTILL_ROOT": str(work)})  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"fail(timeout_{timeout:.0f}s)"
    metrics = work / "logs" / "train" / "runs" / name / "metrics.json"
    if proc.returncode != 0 or json.loads(metrics.read_text())["global_step"] != 1:
        return f"fail({tail(proc)})"
    return f"ok({time.perf_counter() - started:.0f}s)"


# -- 5. generation (child: python check.py --generate <json>) -----------------------------------------
def generate_child(cfg: dict) -> dict:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from prefdistill.generation import SamplingParams, build_generator

    device = "cuda" if torch.cuda.is_available() and not cfg["dry_run"] else "cpu"
    spec = instantiate(OmegaConf.load(ROOT / "configs" / "model" / f"{cfg['model']}.yaml"))
    gen = build_generator(spec, backend="hf", batch_size=cfg["batch"], device=device, progress=False)
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 80))) for _ in range(cfg["n"])]
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg["max_new_tokens"])
    gen.generate_completions(prompts[:2], params)  # warm-up
    torch.cuda.synchronize() if device == "cuda" else None
    started = time.perf_counter()
    rows = gen.generate_completions(prompts, params)
    torch.cuda.synchronize() if device == "cuda" else None
    tokens = sum(c.num_tokens for row in rows for c in row)
    return {"tokens_per_s": tokens / (time.perf_counter() - started), "tokens": tokens}


# -- the run ------------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, CUDA steps skipped")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for all steps together")
    ap.add_argument("--peak-flops", type=float, default=9.89e14, help="per GPU (H100/H200 dense bf16)")
    ap.add_argument("--trl", help=argparse.SUPPRESS)
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for kind, fn in (("trl", trl_child), ("generate", generate_child)):
        if getattr(args, kind):
            print("RESULT " + json.dumps(fn(json.loads(getattr(args, kind)))), flush=True)
            return 0
    started = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - started)  # noqa: E731
    s = settings(args.dry_run)
    work = Path(os.environ.get("PREFDISTILL_ROOT") or Path.cwd() / "gpu_check")
    work.mkdir(parents=True, exist_ok=True)
    data = write_pairs(
        work / "pairs.jsonl", s["batch"] * (s["warmup"] + s["steps"]) + 8, s["prompt"], s["response"]
    )
    fields: dict[str, str] = {"dry_run": str(int(args.dry_run))}
    try:
        fields["pytest_gpu"] = step_pytest(s, args.dry_run, min(180, left()))
    except subprocess.TimeoutExpired:
        fields["pytest_gpu"] = "fail(timeout)"
    try:
        status, tps, mfu = step_ours(
            s, data, work, min(150, left()), None if args.dry_run else args.peak_flops
        )
    except (subprocess.TimeoutExpired, OSError, ValueError) as err:
        status, tps, mfu = f"fail({type(err).__name__})", None, None
    fields.update(dpo_tok_s=fmt(tps, 1) if status == "ok" else status, dpo_mfu=fmt(mfu, 4))
    cfg = {**s, "dry_run": args.dry_run, "data": str(data), "work": str(work), "peak_flops": args.peak_flops}
    status, trl = step_child("trl", cfg, min(150, left()))
    fields.update(
        trl_tok_s=fmt(trl["tokens_per_s"], 1) if trl else status, trl_mfu=fmt(trl and trl["mfu"], 4)
    )
    fields["dpo_over_trl"] = fmt(tps / trl["tokens_per_s"], 2) if tps and trl else "nan"
    for stage in (2, 3):
        fields[f"zero{stage}"] = (
            "skipped(no-cuda)" if args.dry_run else step_zero(stage, s, data, work, min(120, left()))
        )
    gen_cfg = {
        **cfg,
        "n": s["gen_prompts"],
        "max_new_tokens": s["gen_tokens"],
        "batch": min(32, s["gen_prompts"]),
    }
    status, gen = step_child("generate", gen_cfg, min(90, left()))
    fields["gen_tok_s"] = fmt(gen["tokens_per_s"], 1) if gen else status
    fields["wall_s"] = f"{time.perf_counter() - started:.0f}"
    print("gpu_check " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    return int(any(v.startswith("fail") for v in fields.values()))


if __name__ == "__main__":
    sys.exit(main())
