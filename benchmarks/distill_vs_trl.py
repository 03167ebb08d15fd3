"""Distillation throughput and peak memory: prefdistill vs TRL, same teacher, student, data, batch and steps, CPU.

    python benchmarks/distill_vs_trl.py --steps 6 --json results.json   # the measurement (idle machine, ~9 min on 2 cores)
    python benchmarks/distill_vs_trl.py --quick               # smoke (tiny models)

Teacher SmolLM2-135M-Instruct (``teacher=smollm2_135m``), student its 10-layer pruned copy
(``model=smollm2_135m_l10``, full fine-tune), fp32, AdamW at a constant lr, no clipping, no weight decay;
the demo SFT prompts/responses (chat template, ``--batch`` rows per step: 8, as ``configs/data/demo.yaml``; the
same rows in the same order on both sides). Two modes:

* offline token KD on the dataset responses, forward KL(p_T ‖ q_S): ours reads the teacher from its top-k
  table (k = 64, ``module.teacher_cache``, built once in a separate ``prepare`` process, not timed, its wall
  time and peak reported), TRL's ``GKDTrainer`` (``trl.experimental.gkd``; λ = 0, β = 0: no generation,
  forward KL) runs the teacher every step on the full vocabulary;
* on-policy distillation, reverse KL(q_S ‖ p_T) on the student's own samples (temperature 1, top-p 1,
  ``--new-tokens`` new tokens): ours ``method=gkd`` with ``on_policy.fraction=1`` and β = 1 (the objective of
  on-policy distillation), rollouts through our HF generation backend, the teacher online; TRL's
  ``DistillationTrainer`` (always on-policy; β = 1) with transformers generation.

Configurations per mode: ``*_fast`` (throughput: ours as configured, TRL without gradient checkpointing) and
``*_lean`` (memory: gradient checkpointing on both sides; ours also steps the optimizer in backward,
``module.optimizer_in_backward``). Every configuration runs in its own fresh subprocess, ours and TRL
alternated (order reversed on odd repeats), ``--repeats`` times, all children with ``--threads`` torch
threads and ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` (glibc otherwise returns and
re-faults large blocks every step: environment.md). ``--warmup`` steps untimed, then ``--steps`` timed;
tokens/s = sequence tokens (prompt + response, or prompt + generated) per second of the timed steps; peak =
``ru_maxrss`` of the child (model loading included). TRL gets our token ids (its re-tokenization skipped).

Final line: ``distill_vs_trl offline_kd_over_trl=R on_policy_over_trl=R mem_offline=M mem_on_policy=M``
(tokens/s ours_fast / trl_fast, medians; peak ours_lean / trl_lean, worst repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
MODES = ("offline", "on_policy")
CONFIGS = ("ours_fast", "trl_fast", "ours_lean", "trl_lean")
LR, SEED, TOPK = 1e-5, 0, 64


# -- shared setup -------------------------------------------------------------------------------------
def _spec(name: str, *, teacher: bool, checkpointing: bool = False):
    import dataclasses

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml")
    spec = instantiate(node)
    seed = spec.seed + 1 if teacher and spec.random_init is not None else spec.seed  # as the teacher group
    return dataclasses.replace(
        spec, lora=None, dtype="float32", gradient_checkpointing=checkpointing, seed=seed
    )


def _models(cfg: dict, checkpointing: bool = False):
    student, teacher = ("tiny", "tiny") if cfg["quick"] else ("smollm2_135m_l10", "smollm2_135m")
    return _spec(student, teacher=False, checkpointing=checkpointing), _spec(teacher, teacher=True)


def _datamodule(cfg: dict, tokenizer):
    from prefdistill.data import PreferenceDataModule

    class Sequential(PreferenceDataModule):  # the same rows in the same order as TRL's sequential sampler
        def train_dataloader(self):
            return self._loader("train", shuffle=False)

    n = cfg["batch"] * (cfg["warmup"] + cfg["steps"])
    dm = Sequential(source="shipped", record_type="sft", max_samples=n, batch_size=cfg["batch"], max_length=256,
                    max_prompt_length=192, val_fraction=0.0)  # fmt: skip
    dm.connect(tokenizer)
    dm.setup("fit")
    return dm


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _timer(times: list, tokens: list, peaks: list, cpu: list):
    """Lightning callback: wall time of every training step (batch start to end, optimizer step included), its
    process CPU time (all threads), the sequence tokens it trained on (the rollout's, on-policy) and the peak
    RSS so far (first: before training)."""
    import lightning as L

    class Timer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            peaks.append(_peak_gb())

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.start)
            cpu.append(time.process_time() - self.cpu)
            trained = pl_module._rollout if pl_module._rollout is not None else batch
            tokens.append(int(trained["chosen_attention_mask"].sum()))
            peaks.append(_peak_gb())

    return Timer()


# -- ours ---------------------------------------------------------------------------------------------------
def run_ours(cfg: dict, workdir: Path, fit_steps: int | None = None) -> dict:
    import lightning as L
    import torch

    from prefdistill.losses import get_loss
    from prefdistill.models import load_tokenizer
    from prefdistill.modules import build_module
    from prefdistill.modules.on_policy import OnPolicy
    from prefdistill.modules.optim import build_optimizer

    lean = cfg["name"].endswith("lean")
    student, teacher = _models(cfg, checkpointing=lean)
    dm = _datamodule(cfg, load_tokenizer(student))
    offline = cfg["mode"] == "offline"
    module = build_module(
        loss=get_loss("kd_fkl") if offline else get_loss("kd_jsd", beta=1.0), policy=student, teacher=teacher,
        optimizer=partial(build_optimizer, name="adamw", lr=LR, weight_decay=0.0), scheduler=None,
        teacher_cache=str(workdir / "teacher_topk") if offline else None, teacher_topk=TOPK,
        on_policy=None if offline else OnPolicy(fraction=1.0, temperature=1.0, top_p=1.0,
                                                max_new_tokens=cfg["new_tokens"]),
        optimizer_in_backward=lean,
    )  # fmt: skip
    times, tokens, peaks, cpu = [], [], [], []
    trainer = L.Trainer(
        accelerator="cpu", max_steps=fit_steps or cfg["warmup"] + cfg["steps"], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[_timer(times, tokens, peaks, cpu)], default_root_dir=str(workdir),
    )  # fmt: skip
    torch.manual_seed(SEED)
    trainer.fit(module, datamodule=dm)
    return {"step_times": times, "tokens": tokens, "peaks": peaks, "cpu_times": cpu}


# -- TRL ----------------------------------------------------------------------------------------------------
def _trl_args(cls, cfg: dict, workdir: Path, **extra):
    lean = cfg["name"].endswith("lean")
    return cls(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=cfg["batch"], gradient_accumulation_steps=1,
        max_steps=cfg["warmup"] + cfg["steps"], learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=0.0, gradient_checkpointing=lean,
        gradient_checkpointing_kwargs={"use_reentrant": False}, use_cpu=True, bf16=False, fp16=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=SEED, dataloader_num_workers=0, disable_tqdm=True,
        **extra,
    )  # fmt: skip


def _trl_timer(times: list, peaks: list, cpu: list):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            peaks.append(_peak_gb())

        def on_step_begin(self, args, state, control, **kw):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)
            cpu.append(time.process_time() - self.cpu)
            peaks.append(_peak_gb())

    return Timer()


def run_trl(cfg: dict, workdir: Path) -> dict:
    import torch
    from datasets import Dataset

    from prefdistill.data.collate import pad_rows
    from prefdistill.models import load_model, load_tokenizer

    student_spec, teacher_spec = _models(cfg)
    tokenizer = load_tokenizer(student_spec)
    student, teacher = load_model(student_spec), load_model(teacher_spec, trainable=False)
    examples = _datamodule(cfg, tokenizer).datasets["train"]  # ours, in our order
    times, tokens, peaks, cpu = [], [], [], []
    if cfg["mode"] == "offline":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        def collate(rows):
            ids, attention, labels = pad_rows([r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
                                              tokenizer.pad_token_id, max(len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in rows))  # fmt: skip
            tokens.append(int(attention.sum()))
            return {"input_ids": ids, "attention_mask": attention, "labels": labels}

        class Trainer(GKDTrainer):
            def _get_train_sampler(self, *args, **kwargs):
                return torch.utils.data.SequentialSampler(self.train_dataset)

        args = _trl_args(GKDConfig, cfg, workdir, lmbda=0.0, beta=0.0, seq_kd=False, max_length=None,
                         dataset_kwargs={"skip_prepare_dataset": True})  # fmt: skip
        rows = [{"prompt_ids": e["prompt_ids"], "chosen_ids": e["chosen_ids"]} for e in examples]
        trainer = Trainer(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, data_collator=collate, callbacks=[_trl_timer(times, peaks, cpu)])  # fmt: skip
    else:
        from trl import DistillationConfig, DistillationTrainer

        prompts = {str(e["index"]): e["prompt_ids"] for e in examples}

        class Trainer(DistillationTrainer):
            def _tokenize_prompts(self, batch):  # our prompt ids, as they are
                return [prompts[p] for p in batch], None, {}

            def _generate_and_score_completions(self, inputs):
                out = super()._generate_and_score_completions(inputs)
                tokens.append(int(out["prompt_mask"].sum() + out["completion_mask"].sum()))
                return out

        args = _trl_args(DistillationConfig, cfg, workdir, beta=1.0, temperature=1.0, top_p=1.0, top_k=0,
                         max_completion_length=cfg["new_tokens"], shuffle_dataset=False)  # fmt: skip
        rows = [{"prompt": str(e["index"])} for e in examples]
        trainer = Trainer(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[_trl_timer(times, peaks, cpu)])  # fmt: skip
    trainer.train()
    tokens = tokens[-len(times) :] if times else tokens
    return {"step_times": times, "tokens": tokens, "peaks": peaks, "cpu_times": cpu}


# -- child / parent ------------------------------------------------------------------------------------------
def child(cfg: dict) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    workdir = Path(cfg["workdir"])
    os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets"))
    started = time.perf_counter()
    if cfg["name"] == "prepare":  # our offline teacher table, before any timed run
        result = run_ours({**cfg, "name": "ours_fast"}, workdir, fit_steps=1)
    else:
        result = (run_trl if cfg["name"].startswith("trl") else run_ours)(cfg, workdir)
    timed, tokens = result["step_times"][cfg["warmup"] :], result["tokens"][cfg["warmup"] :]
    cpu = sum(result["cpu_times"][cfg["warmup"] :])
    result |= {
        "config": cfg, "wall_s": time.perf_counter() - started, "measured_s": sum(timed), "timed_tokens": sum(tokens),
        "tokens_per_s": sum(tokens) / sum(timed) if sum(timed) else float("nan"),
        "tokens_per_cpu_s": sum(tokens) / cpu if cpu else float("nan"),
        "peak_rss_gb": _peak_gb(),
    }  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


def run_child(cfg: dict, timeout: float) -> dict:
    env = {**os.environ, **ALLOCATOR_ENV, "OMP_NUM_THREADS": str(cfg["threads"]), "MKL_NUM_THREADS": str(cfg["threads"]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}  # fmt: skip
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{cfg['mode']}/{cfg['name']} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")


def summarize(results: list[dict]) -> dict:
    by: dict = {}
    for r in results:
        by.setdefault(r["config"]["name"], []).append(r)
    tps = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in by.items()}
    per_cpu = {k: statistics.median(r["tokens_per_cpu_s"] for r in v) for k, v in by.items()}
    peak = {k: max(r["peak_rss_gb"] for r in v) for k, v in by.items()}
    nan = float("nan")
    return {"tokens_per_s": tps, "peak_rss_gb": peak, "speed": tps.get("ours_fast", nan) / tps.get("trl_fast", nan),
            "tokens_per_cpu_s": per_cpu, "cpu_speed": per_cpu.get("ours_fast", nan) / per_cpu.get("trl_fast", nan),
            "memory": peak.get("ours_lean", nan) / peak.get("trl_lean", nan)}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="tiny teacher and student, 1 repeat, 1+1 steps")
    ap.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 2; --quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 3; --quick 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument(
        "--batch", type=int, default=8, help="rows per optimizer step, both sides (the demo data config: 8)"
    )
    ap.add_argument(
        "--new-tokens", type=int, default=32, help="on-policy: new tokens per rollout (demo answers: < 20)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    repeats, steps = args.repeats or (1 if args.quick else 2), args.steps or (1 if args.quick else 3)
    print(f"env: {ALLOCATOR_ENV} threads={args.threads} python={sys.version.split()[0]}; batch={args.batch}, "
          f"warmup={args.warmup}, timed steps={steps}, repeats={repeats}, new tokens={args.new_tokens}", flush=True)  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="pd_distill_bench_"))
    base = {"quick": args.quick, "batch": args.batch, "warmup": args.warmup, "steps": steps, "threads": args.threads,
            "new_tokens": args.new_tokens, "workdir": str(workdir)}  # fmt: skip
    started, summaries, everything = time.time(), {}, []
    configs = args.configs.split(",")
    for mode in args.modes.split(","):
        if mode == "offline" and any(c.startswith("ours") for c in configs):
            prep = run_child({**base, "mode": mode, "name": "prepare"}, args.timeout)
            print(f"  [{mode}] prepare: teacher top-{TOPK} table + 1 step in {prep['wall_s']:.0f} s, "
                  f"peak {prep['peak_rss_gb']:.2f} GB", flush=True)  # fmt: skip
        results = []
        for rep in range(repeats):
            for name in configs if rep % 2 == 0 else configs[::-1]:
                r = run_child({**base, "mode": mode, "name": name, "repeat": rep}, args.timeout)
                print(f"  [{mode} #{rep}] {name:9s} {r['tokens_per_s']:8.1f} tok/s {r['tokens_per_cpu_s']:6.1f} tok/cpu-s  steps "
                      f"[{' '.join(f'{t:.2f}' for t in r['step_times'])}]  peak {r['peak_rss_gb']:.2f} GB "
                      f"(loaded {r['peaks'][0]:.2f})  wall {r['wall_s']:.0f} s", flush=True)  # fmt: skip
                results.append(r)
        everything += results
        summaries[mode] = s = summarize(results)
        print(
            f"== {mode}: "
            + ", ".join(
                f"{k} {v:.1f} tok/s {s['peak_rss_gb'][k]:.2f} GB" for k, v in s["tokens_per_s"].items()
            )
        )
        print(f"   {mode}: tokens/s ours_fast/trl_fast {s['speed']:.2f}; tokens per CPU-second {s['cpu_speed']:.2f} "
              f"(less sensitive to other jobs); peak ours_lean/trl_lean {s['memory']:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"results": everything, "summaries": summaries}, indent=1))
    print(f"total {time.time() - started:.0f} s")

    def get(mode, key):
        return summaries[mode][key] if mode in summaries else float("nan")

    print(f"distill_vs_trl offline_kd_over_trl={get('offline', 'speed'):.2f} on_policy_over_trl={get('on_policy', 'speed'):.2f} "
          f"mem_offline={get('offline', 'memory'):.2f} mem_on_policy={get('on_policy', 'memory'):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
