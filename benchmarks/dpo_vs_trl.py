"""DPO throughput and peak memory: prefdistill vs TRL's DPOTrainer, same model, data, batch and steps, CPU.

    python benchmarks/dpo_vs_trl.py                      # what issue #3 asks (tiny + SmolLM2-135M)
    python benchmarks/dpo_vs_trl.py --model tiny --quick # smoke run (~1-2 min)

Every configuration runs in its own fresh subprocess (so peak RSS, ``ru_maxrss`` of the child, is per
configuration, absolute, model loading included), ours and TRL alternated, ``--repeats`` times each,
all children under one environment: ``--threads`` torch threads and the glibc allocator settings
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` (both sides: glibc's allocator otherwise returns and re-faults large blocks every step).

Configurations (per model and data shape):

* ``trl_fast``  TRL at its fastest: ``precompute_ref_log_probs=True``, no gradient checkpointing;
* ``trl_lean``  TRL at its leanest: ``precompute_ref_log_probs=True`` + gradient checkpointing;
* ``ours_fast`` reference-log-prob cache + shared-prompt packed forward + chunked log-probs;
* ``ours_lean`` the same + gradient checkpointing + lm_head chunks of 256 rows (``--lean-chunk-size``)
  + the optimizer stepped in backward (``module.optimizer_in_backward``: each parameter is updated and its
  gradient freed as soon as it is complete, so the full set of gradients never exists; same updates);
* ``ours_simpo`` ours_fast with SimPO (reference-free), for the "DPO with the cache costs no more than
  SimPO" check.
* ``ours_kto``  ours_fast with KTO (β 0.1) on the same pairs cut into unpaired rows (``data.unpair``), one
  row per pair slot: each step runs B rows, each packed with its mismatched KL completion as
  ``[x, y, y']`` (the shape of a DPO pair ``[x, y_w, y_l]``), reference log-probs of both cached; the
  "KTO costs at most 1.05x DPO per step" check. Its tokens count prompt + completion + KL completion.
* ``ours_mixture`` ours_fast with the weighted mixture ``[dpo, sft]``, weights ``[1, 1]``, β 0.1 (TRL's
  ``loss_type=["sigmoid", "sft"]``, i.e. RPO) on the same pairs: the "a mixture costs at most 1.05x DPO per
  step" check (the parts share one forward; only the loss arithmetic is added).

Both sides: the policy from ``prefdistill.models.load_model`` (``configs/model/<model>.yaml``, LoRA off,
full fine-tune, fp32), AdamW at a constant lr, no grad clipping, no weight decay, DPO sigmoid with
beta 0.1, the same token-level generated pairs in the same (sequential) order. TRL gets the tokenized
pairs as ``prompt_ids/chosen_ids/rejected_ids`` (its ``_prepare_dataset`` tokenization is skipped; it
would only re-tokenize text) and, with precompute, needs no reference copy. The reference pass
(TRL's precompute, our cache fill in the first step) is excluded on both sides: ``--warmup`` steps are
run and not timed, then ``--steps`` optimizer steps are timed. Tokens/s counts unique tokens (prompt
once + chosen + rejected) on both sides, so ratios are ratios of step time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
SHAPES = {  # (prompt length range, response length range), tokens, inclusive
    "tldr": ((300, 500), (20, 60)),
    "uf": ((30, 100), (200, 400)),
}
QUICK_SHAPES = {"tldr": ((60, 100), (4, 12)), "uf": ((6, 20), (40, 80))}
CONFIGS = ("ours_fast", "trl_fast", "ours_lean", "trl_lean", "ours_simpo", "ours_kto", "ours_mixture")
LOSSES = {"ours_simpo": "simpo", "ours_kto": "kto", "ours_mixture": "mixture"}  # the rest: dpo
MODELS = {"tiny": "tiny.yaml", "smollm2": "smollm2_135m.yaml"}
BETA, LR, SEED = 0.1, 1e-5, 0


# -- data ---------------------------------------------------------------------------------------------
def make_pairs(shape: tuple, n: int, vocab: int, seed: int = SEED) -> list[dict]:
    """Seeded token-level pairs with exact lengths; the last response token is eos-like (id 2)."""
    (p_lo, p_hi), (r_lo, r_hi) = shape
    rng = random.Random(seed)
    lo, hi = 3, vocab - 1

    def ids(a, b):
        return [rng.randint(lo, hi) for _ in range(rng.randint(a, b))]

    return [
        {"prompt_ids": ids(p_lo, p_hi), "chosen_ids": ids(r_lo, r_hi), "rejected_ids": ids(r_lo, r_hi), "index": i}
        for i in range(n)
    ]  # fmt: skip


def unique_tokens(pairs: list[dict]) -> int:
    return sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)


def kto_rows(pairs: list[dict]) -> list[dict]:
    """The pairs as unpaired rows (chosen: desirable, rejected: undesirable), each with its KL completion,
    as many rows as pairs (the first half of the pairs, both halves of each), in order."""
    from prefdistill.data.collate import add_kl_completions, unpair_examples

    return add_kl_completions(unpair_examples(pairs[: (len(pairs) + 1) // 2]), seed=SEED)[: len(pairs)]


def row_tokens(rows: list[dict]) -> int:
    return sum(len(r["prompt_ids"]) + len(r["completion_ids"]) + len(r["kl_completion_ids"]) for r in rows)


# -- child: one configuration ------------------------------------------------------------------------
def _spec(model: str, checkpointing: bool):
    import dataclasses

    import hydra
    from omegaconf import OmegaConf

    spec = hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "model" / MODELS[model]))
    return dataclasses.replace(spec, lora=None, dtype="float32", gradient_checkpointing=checkpointing)


def _vocab(spec) -> int:
    from prefdistill.models import load_tokenizer

    return len(load_tokenizer(spec))


def run_ours(cfg: dict, pairs: list[dict], workdir: Path) -> dict:
    import functools

    import lightning as L
    import torch

    from prefdistill.data.datamodule import PreferenceDataModule
    from prefdistill.losses import get_loss
    from prefdistill.modules import PreferenceModule, UnpairedModule

    spec = _spec(cfg["model"], cfg["lean"])

    class Pairs(PreferenceDataModule):  # generated token-level pairs, sequential order
        def setup(self, stage=None):
            pass

        def train_dataloader(self):
            return self._loader("train", shuffle=False)

    dm = Pairs(batch_size=cfg["batch"])
    dm.datasets = {"train": pairs, "validation": []}
    dm.tokenizer = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 0})()
    loss = get_loss(cfg["loss"], **({} if cfg["loss"] == "simpo" else {"beta": BETA}))  # dpo, kto, mixture: β 0.1
    module = (UnpairedModule if loss.kind == "unpaired" else PreferenceModule)(
        policy=spec,
        loss=loss,
        optimizer=functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.0),
        scheduler=None,
        reference_cache=str(workdir / "refcache") if "reference" in loss.needs else None,
        forward="shared_prompt",
        chunk_size=cfg.get("chunk_size", 1024),
        optimizer_in_backward=cfg.get("in_backward", False),
    )
    timer = _LightningTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=cfg["warmup"] + cfg["steps"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        default_root_dir=str(workdir),
    )
    trainer.fit(module, datamodule=dm)
    return {"step_times": timer.times, "losses": timer.losses}


class _LightningTimer:
    """Per optimizer step wall time (batch start to batch end) and loss; Lightning callback duck type."""

    def __new__(cls):
        import lightning as L

        class Timer(L.Callback):
            def __init__(self):
                self.times, self.losses, self._t = [], [], 0.0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self._t = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.times.append(time.perf_counter() - self._t)
                self.losses.append(float(outputs["loss"]))

        return Timer()


def run_trl(cfg: dict, pairs: list[dict], workdir: Path) -> dict:
    import copy

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from prefdistill.models import load_model, load_tokenizer

    spec = _spec(cfg["model"], False)
    model = load_model(spec)  # gradient checkpointing: TRL's own switch below
    tokenizer = load_tokenizer(spec)

    class Trainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):  # already tokenized: ids as they are
            return dataset

        def _get_train_sampler(self, *args, **kwargs):  # same order as ours
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.losses, self._t = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    args = DPOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=1,
        max_steps=cfg["warmup"] + cfg["steps"],
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=None,
        precompute_ref_log_probs=cfg["precompute"],
        gradient_checkpointing=cfg["lean"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_cpu=True,
        bf16=False,
        fp16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    rows = [{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in pairs]
    timer = Timer()
    trainer = Trainer(
        model=model,
        ref_model=None if cfg["precompute"] else copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    return {"step_times": timer.times, "losses": timer.losses}


def child(cfg: dict) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    workdir = Path(tempfile.mkdtemp(prefix="pd_bench_"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets"))
    spec = _spec(cfg["model"], False)
    shape = (QUICK_SHAPES if cfg["quick"] else SHAPES)[cfg["shape"]]
    pairs = make_pairs(shape, cfg["batch"] * (cfg["warmup"] + cfg["steps"]), _vocab(spec))
    kto = cfg["loss"] == "kto"
    examples = kto_rows(pairs) if kto else pairs
    started = time.perf_counter()
    result = (run_trl if cfg["name"].startswith("trl") else run_ours)(cfg, examples, workdir)
    timed = examples[cfg["batch"] * cfg["warmup"] :]
    tokens = row_tokens(timed) if kto else unique_tokens(timed)
    measured = sum(result["step_times"][cfg["warmup"] :])
    result |= {
        "config": cfg,
        "wall_s": time.perf_counter() - started,
        "measured_s": measured,
        "tokens": tokens,
        "tokens_per_s": tokens / measured if measured else float("nan"),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }
    print("RESULT " + json.dumps(result), flush=True)


# -- parent ---------------------------------------------------------------------------------------------
def run_child(cfg: dict, timeout: float) -> dict:
    env = {**os.environ, **ALLOCATOR_ENV}
    env.update(
        OMP_NUM_THREADS=str(cfg["threads"]),
        MKL_NUM_THREADS=str(cfg["threads"]),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TQDM_DISABLE="1",
        WANDB_MODE="disabled",
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{cfg['name']} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def _ratio(d: dict, a: str, b: str) -> float:
    return d[a] / d[b] if a in d and b in d else float("nan")


def summarize(results: list[dict], model: str, shape: str) -> dict:
    by = {}
    for r in results:
        by.setdefault(r["config"]["name"], []).append(r)
    tps = {k: _median([r["tokens_per_s"] for r in v]) for k, v in by.items()}
    mem = {k: max(r["peak_rss_gb"] for r in v) for k, v in by.items()}
    step = {k: _median([r["measured_s"] / max(1, len(r["step_times"]) - r["config"]["warmup"]) for r in v]) for k, v in by.items()}  # fmt: skip
    first = {k: v[0]["losses"][:2] for k, v in by.items()}
    out = {
        "model": model,
        "shape": shape,
        "tokens_per_s": tps,
        "peak_rss_gb": mem,
        "step_time_s": step,
        "losses": first,
        "throughput_ratio": _ratio(tps, "ours_fast", "trl_fast"),
        "memory_ratio": _ratio(mem, "ours_lean", "trl_lean"),
    }
    if "ours_simpo" in step:
        out["dpo_over_simpo_step_time"] = _ratio(step, "ours_fast", "ours_simpo")
    if "ours_kto" in step:
        out["kto_over_dpo_step_time"] = _ratio(step, "ours_kto", "ours_fast")
    if "ours_mixture" in step:
        out["mixture_over_dpo_step_time"] = _ratio(step, "ours_mixture", "ours_fast")
    return out


def print_summary(s: dict) -> None:
    print(f"\n== {s['model']} / {s['shape']}")
    for name in s["tokens_per_s"]:
        losses = ", ".join(f"{x:.6f}" for x in s["losses"][name])
        print(
            f"  {name:10s} {s['tokens_per_s'][name]:9.1f} tok/s  step {s['step_time_s'][name]:7.2f} s  "
            f"peak {s['peak_rss_gb'][name]:6.2f} GB  losses[0:2] {losses}"
        )
    print(f"  throughput ratio ours_fast/trl_fast = {s['throughput_ratio']:.2f}")
    print(f"  peak-memory ratio ours_lean/trl_lean = {s['memory_ratio']:.2f}")
    if "dpo_over_simpo_step_time" in s:
        print(f"  DPO(cache)/SimPO step time = {s['dpo_over_simpo_step_time']:.3f}")
    if "kto_over_dpo_step_time" in s:
        print(f"  KTO/DPO step time (cached references, packed) = {s['kto_over_dpo_step_time']:.3f}")
    if "mixture_over_dpo_step_time" in s:
        print(f"  mixture([dpo, sft])/DPO step time = {s['mixture_over_dpo_step_time']:.3f}")
    if not {"trl_fast", "ours_fast"} <= set(s["losses"]):
        return
    trl0, ours0 = s["losses"]["trl_fast"][0], s["losses"]["ours_fast"][0]
    print(f"  first-step loss: ours {ours0:.6f}  TRL {trl0:.6f}  |diff| {abs(ours0 - trl0):.2e}")
    if len(s["losses"]["trl_fast"]) > 1 and len(s["losses"]["ours_fast"]) > 1:
        a, b = s["losses"]["ours_fast"][1], s["losses"]["trl_fast"][1]
        print(f"  second-step loss: ours {a:.6f}  TRL {b:.6f}  |diff| {abs(a - b):.2e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "smollm2", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="short sequences, 1 repeat, 1+1 steps, no SimPO")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2, help="pairs per optimizer step (both sides)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--lean-chunk-size", type=int, default=256, help="ours_lean: lm_head rows per log-prob chunk"
    )
    ap.add_argument(
        "--no-in-backward", action="store_true", help="ours_lean: step the optimizer after backward instead"
    )
    ap.add_argument("--shapes", default="tldr,uf")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    repeats = args.repeats or (1 if args.quick else 2)
    steps = args.steps or (1 if args.quick else 3)
    configs = [c for c in args.configs.split(",") if not (args.quick and c == "ours_simpo")]
    models = ["tiny", "smollm2"] if args.model == "both" else [args.model]
    print(f"env: {ALLOCATOR_ENV} threads={args.threads} python={sys.version.split()[0]}")
    print(
        f"batch={args.batch} pairs/step, warmup={args.warmup} (untimed), timed steps={steps}, repeats={repeats}"
    )
    started, summaries, everything = time.time(), {}, []
    for model in models:
        for shape in args.shapes.split(","):
            results = []
            for rep in range(repeats):
                order = configs if rep % 2 == 0 else configs[::-1]  # alternate who goes first
                for name in order:
                    cfg = {
                        "name": name, "model": model, "shape": shape, "quick": args.quick, "batch": args.batch,
                        "warmup": args.warmup, "steps": steps, "threads": args.threads, "lean": name.endswith("lean"),
                        "chunk_size": args.lean_chunk_size if name == "ours_lean" else 1024,
                        "in_backward": name == "ours_lean" and not args.no_in_backward,
                        "precompute": True, "loss": LOSSES.get(name, "dpo"),
                        "repeat": rep,
                    }  # fmt: skip
                    r = run_child(cfg, args.timeout)
                    print(
                        f"  [{model}/{shape} #{rep}] {name:10s} {r['tokens_per_s']:8.1f} tok/s  "
                        f"steps [{' '.join(f'{t:.2f}' for t in r['step_times'])}]  peak {r['peak_rss_gb']:.2f} GB  "
                        f"wall {r['wall_s']:.0f} s",
                        flush=True,
                    )
                    results.append(r)
            everything += results
            summaries[(model, shape)] = s = summarize(results, model, shape)
            print_summary(s)
    main_model = "smollm2" if "smollm2" in models else models[0]
    tp = {shape: summaries[(main_model, shape)]["throughput_ratio"] for shape in args.shapes.split(",")}
    mem = max(summaries[(main_model, shape)]["memory_ratio"] for shape in args.shapes.split(","))
    if args.json:
        args.json.write_text(
            json.dumps({"results": everything, "summaries": list(summaries.values())}, indent=1)
        )
    print(f"\ntotal {time.time() - started:.0f} s; final line: model={main_model}, memory = worst shape")
    print(
        f"throughput_ratio_tldr={tp.get('tldr', float('nan')):.2f} "
        f"throughput_ratio_uf={tp.get('uf', float('nan')):.2f} memory_ratio={mem:.2f}"
    )


if __name__ == "__main__":
    main()
