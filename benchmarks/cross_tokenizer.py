"""Step time of cross-tokenizer KD: ``uld`` with a teacher of another tokenizer vs ``kd_fkl`` with a teacher of
the student's vocabulary, same student, data, batches and steps, CPU.

    python benchmarks/cross_tokenizer.py           # SmolLM2-135M student: uld <- Gemma-3-270M, kd_fkl <- SmolLM2 twin
    python benchmarks/cross_tokenizer.py --quick   # tiny student: uld <- tiny with a second (400-token) tokenizer

What is compared: one training step of the DistillModule (student forward on the batch's responses,
the loss, backward, AdamW step) with the teacher read from its top-k table (k = 64): for ``kd_fkl`` the
same-vocabulary top-k cache, for ``uld`` the aligned cross-tokenizer table (``teacher_cache.py``). Both
tables are built first, in a ``prepare`` subprocess per configuration (teacher pass, alignment, not timed;
its wall time and peak RSS are reported: that is where the 262k-vocabulary teacher runs, its lm_head on
256 response rows at a time). Then each configuration trains in fresh subprocesses, ``uld`` and
``kd_fkl`` alternated ``--repeats`` times: ``--warmup`` steps untimed, then ``--steps`` timed; the
median step time of each gives ``uld_over_kd_fkl_step_time`` (the issue's target: <= 1.3). Peak RSS is
``ru_maxrss`` of each child (model loading included). Data: the demo pairs' chosen responses (chat
template), ``--rows`` rows, batch ``--batch-size``, the same seeded order for both.
"""

from __future__ import annotations

import argparse
import dataclasses
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
ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "HF_HUB_OFFLINE": "1"}


def _specs(quick: bool, workdir: Path) -> dict:
    """``{config: (loss, student spec, teacher spec)}``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    def spec(group: str, name: str):
        """``model=<name>``, or ``teacher=<name>``: the same file without LoRA (as train.py's teacher group)."""
        node = OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml")
        if group == "teacher":
            node.lora, node.gradient_checkpointing = None, False
        return instantiate(node)

    if quick:
        from prefdistill.models.tiny_tokenizer import build

        student = spec("model", "tiny")
        other = workdir / "tokenizer_400"
        if not other.is_dir():
            build(other, vocab_size=400)
        twin = dataclasses.replace(student, seed=1)
        return {
            "kd_fkl": ("kd_fkl", student, twin),
            "uld": ("uld", student, dataclasses.replace(twin, tokenizer=str(other))),
        }
    student = spec("model", "smollm2_135m")
    return {"kd_fkl": ("kd_fkl", student, spec("teacher", "smollm2_135m")),
            "uld": ("uld", student, spec("teacher", "gemma3_270m"))}  # fmt: skip


def step_timer(warmup: int, times: list[float]):
    """A Lightning callback appending the wall time of every training step after the first ``warmup``."""
    import lightning as L

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step > warmup:
                times.append(time.perf_counter() - self.start)

    return StepTimer()


def child(args) -> dict:
    """One subprocess: build the table (``prepare``) or train timed steps (``train``); returns its numbers."""
    import lightning as L
    import torch

    from prefdistill.data import PreferenceDataModule
    from prefdistill.losses import get_loss
    from prefdistill.models import load_tokenizer
    from prefdistill.modules import build_module

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    loss, student, teacher = _specs(args.quick, workdir)[args.config]
    dm = PreferenceDataModule(source="shipped", max_samples=args.rows, batch_size=args.batch_size,
                              max_length=128, max_prompt_length=96, val_fraction=0.0, seed=0)  # fmt: skip
    dm.connect(load_tokenizer(student))
    dm.setup("fit")
    module = build_module(
        loss=get_loss(loss), policy=student, teacher=teacher, teacher_cache=str(workdir / "teacher_topk"),
        teacher_topk=64, cache_dir=str(workdir), optimizer=partial(torch.optim.AdamW, lr=1e-5),
    )  # fmt: skip
    times: list[float] = []
    steps = 1 if args.phase == "prepare" else args.warmup + args.steps
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[step_timer(args.warmup, times)],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    out = {"config": args.config, "phase": args.phase, "wall_s": time.perf_counter() - start,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip
    if args.phase == "train":
        out["step_s"] = statistics.median(times)
        out["loss"] = float(trainer.callback_metrics["train/loss"])
    return out


def run_child(config: str, phase: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", config, "--phase", phase, "--workdir", args.workdir,
           "--threads", str(args.threads), "--rows", str(args.rows), "--batch-size", str(args.batch_size),
           "--warmup", str(args.warmup), "--steps", str(args.steps)] + (["--quick"] if args.quick else [])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} {phase} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models, few steps (smoke run)")
    p.add_argument("--rows", type=int, default=None, help="demo pairs used (default 96, quick 16)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2, quick 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 8, quick 2)")
    p.add_argument(
        "--repeats", type=int, default=None, help="train subprocesses per config (default 2, quick 1)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workdir", default=None, help="caches and tokenizers (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--phase", default="train", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, full, quick in (("rows", 96, 16), ("warmup", 2, 1), ("steps", 8, 2), ("repeats", 2, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.child:
        args.config = args.child
        print(json.dumps(child(args)))
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="xtok_bench_")
    results = {"prepare": {c: run_child(c, "prepare", args) for c in ("kd_fkl", "uld")}, "train": []}
    for _ in range(args.repeats):
        for config in ("uld", "kd_fkl"):
            results["train"].append(run_child(config, "train", args))
    step = {
        c: statistics.median(r["step_s"] for r in results["train"] if r["config"] == c)
        for c in ("uld", "kd_fkl")
    }
    peak = {c: max(r["peak_rss_gb"] for r in results["train"] if r["config"] == c) for c in ("uld", "kd_fkl")}
    for c in ("kd_fkl", "uld"):
        prep = results["prepare"][c]
        print(f"{c}: step {step[c]:.3f} s (median), training peak RSS {peak[c]:.2f} GB; "
              f"teacher table pass {prep['wall_s']:.1f} s, peak RSS {prep['peak_rss_gb']:.2f} GB")  # fmt: skip
    results["ratio"] = step["uld"] / step["kd_fkl"]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"uld_over_kd_fkl_step_time={results['ratio']:.3f}")


if __name__ == "__main__":
    main()
