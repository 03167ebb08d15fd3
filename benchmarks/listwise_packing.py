"""Listwise (PAD) step time: the padded B*n forward vs the shared-prompt packed one, same process, CPU.

    python benchmarks/listwise_packing.py            # SmolLM2-135M, TL;DR-shaped lists of 4, batch 2
    python benchmarks/listwise_packing.py --quick    # smoke run: tiny model, short lists (seconds)

One ``ListwiseModule`` (``configs/model/<model>.yaml`` as shipped, loss ``pad_pd``) times
forward + backward of ``compute(batch)`` (log-probs + loss) with ``forward="padded"`` (every response row
carries its prompt: B*n rows, right-padded) and with ``forward="shared_prompt"`` (each prompt once:
``[prompt, r_1, ..., r_4]`` per list, ``prefdistill.models.packing``). Both run on the same weights and the
same seeded batches, alternated (padded first on even repeats, packed first on odd), after one untimed
warm-up step each; gradients are zeroed between steps and no optimizer step is taken (it does not
depend on the forward). Lists: ``--batch`` prompts of 300-500 tokens, 4 responses of 20-60 tokens each
(``--quick``: 60-100 and 4-12), random token ids, random teacher scores. Before timing, the two forwards'
log-probs of the first batch are compared (printed); ``--flops`` also counts one step's FLOPs per forward.

The last line is ``listwise_shared_prompt_speedup=<padded median step / packed median step>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"tiny": "tiny.yaml", "smollm2": "smollm2_135m.yaml"}
SHAPE = ((300, 500), (20, 60))  # (prompt, response) token length ranges, inclusive
QUICK_SHAPE = ((60, 100), (4, 12))
FORWARDS = ("padded", "shared_prompt")


def make_lists(
    n_batches: int, batch: int, list_size: int, shape: tuple, vocab: int, seed: int = 0
) -> list[dict]:
    """Seeded collated listwise batches (``prefdistill.data.collate.collate_lists``)."""
    from prefdistill.data.collate import collate_lists

    (p_lo, p_hi), (r_lo, r_hi) = shape
    rng = random.Random(seed)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randint(3, vocab - 1) for _ in range(rng.randint(lo, hi))]

    def example(i: int) -> dict:
        responses = [ids(r_lo, r_hi) for _ in range(list_size)]
        return {"prompt_ids": ids(p_lo, p_hi), "response_ids": responses,
                "scores": [rng.uniform(-1, 1) for _ in responses], "index": i}  # fmt: skip

    return [
        collate_lists([example(b * batch + i) for i in range(batch)], pad_token_id=0)
        for b in range(n_batches)
    ]


def build_module(model: str):
    """The listwise module on the shipped model config, policy loaded (fp32)."""
    import hydra
    import torch
    from omegaconf import OmegaConf

    from prefdistill.losses import get_loss
    from prefdistill.modules import ListwiseModule

    spec = hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "model" / MODELS[model]))
    spec = dataclasses.replace(spec, dtype="float32")
    module = ListwiseModule(
        policy=spec, loss=get_loss("pad_pd"), optimizer=partial(torch.optim.AdamW, lr=1e-5)
    )
    module.configure_model()
    return module


def timed_step(module, batch: dict, forward: str) -> float:
    """Seconds for one forward + backward of ``module.compute(batch)`` with the given forward."""
    module.forward_mode = forward
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss, _ = module.compute(batch)
    loss.backward()
    return time.perf_counter() - start


def step_flops(module, batch: dict, forward: str) -> int:
    """FLOPs of one forward + backward under ``forward`` (``torch.utils.flop_counter``: matmuls and
    attention), a machine-independent companion to the timings."""
    from torch.utils.flop_counter import FlopCounterMode

    module.forward_mode = forward
    module.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss, _ = module.compute(batch)
        loss.backward()
    return int(counter.get_total_flops())


def logps_difference(module, batch: dict) -> float:
    """Max |padded - packed| summed response log-prob on ``batch`` (no grad)."""
    import torch

    out = {}
    with torch.no_grad():
        for forward in FORWARDS:
            module.forward_mode = forward
            out[forward] = module.list_logps(batch)[0]
    return float((out["padded"] - out["shared_prompt"]).abs().max())


def measure(module, batches: list[dict], repeats: int) -> dict[str, list[float]]:
    """Per forward, the mean step time over ``batches`` of each repeat; forwards alternate per repeat."""
    times: dict[str, list[float]] = {f: [] for f in FORWARDS}
    for forward in FORWARDS:  # warm-up (allocator, kernels), untimed
        timed_step(module, batches[0], forward)
    for r in range(repeats):
        for forward in FORWARDS if r % 2 == 0 else FORWARDS[::-1]:
            steps = [timed_step(module, b, forward) for b in batches]
            times[forward].append(statistics.mean(steps))
            print(
                f"repeat {r} {forward:13s} {times[forward][-1]:8.3f} s/step  ({len(steps)} steps)", flush=True
            )
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=sorted(MODELS), default=None, help="default: smollm2 (--quick: tiny)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, short lists, 1 step per repeat")
    parser.add_argument("--batch", type=int, default=2, help="prompts per batch")
    parser.add_argument("--list-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 2, quick 1)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flops", action="store_true", help="also count one step's FLOPs per forward")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = args.model or ("tiny" if args.quick else "smollm2")
    steps = args.steps or (1 if args.quick else 2)
    started = time.perf_counter()
    module = build_module(model)
    vocab = module.policy.get_input_embeddings().num_embeddings
    batches = make_lists(steps, args.batch, args.list_size, QUICK_SHAPE if args.quick else SHAPE, vocab)
    tokens = {f: _tokens(batches[0], f) for f in FORWARDS}
    print(f"model={model} batch={args.batch} list_size={args.list_size} threads={args.threads} "
          f"tokens/batch padded={tokens['padded']} shared_prompt={tokens['shared_prompt']}")  # fmt: skip
    print(f"max |padded - packed| log-prob: {logps_difference(module, batches[0]):.2e}")
    flops = {f: step_flops(module, batches[0], f) for f in FORWARDS} if args.flops else None
    if flops:
        print(f"FLOPs/step padded {flops['padded'] / 1e12:.3f} T, shared_prompt {flops['shared_prompt'] / 1e12:.3f} T "
              f"(ratio {flops['padded'] / flops['shared_prompt']:.2f})")  # fmt: skip
    times = measure(module, batches, args.repeats)
    medians = {f: statistics.median(ts) for f, ts in times.items()}
    result = {"model": model, "times": times, "medians": medians, "tokens": tokens, "flops": flops,
              "speedup": medians["padded"] / medians["shared_prompt"], "wall_s": time.perf_counter() - started}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"median s/step: padded {medians['padded']:.3f}, shared_prompt {medians['shared_prompt']:.3f}; "
          f"wall {result['wall_s']:.0f} s")  # fmt: skip
    print(f"listwise_shared_prompt_speedup={result['speedup']:.2f}")
    return result


def _tokens(batch: dict, forward: str) -> int:
    """Tokens the backbone processes (padding included) for one batch under ``forward``."""
    from prefdistill.models.packing import pack_groups

    if forward == "padded":
        return int(batch["input_ids"].numel())
    packed = pack_groups(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["list_size"])
    return int(packed.input_ids.numel())


if __name__ == "__main__":
    main()
