"""HF backend throughput vs one-prompt-at-a-time ``model.generate`` on SmolLM2-135M (CPU by default).

    python benchmarks/generation.py                       # 24 demo prompts, greedy, 64 new tokens
    python benchmarks/generation.py --num-prompts 64 --batch-size 32

Both sides get the same prompt ids (chat template, one BOS), greedy decoding, the same max_new_tokens and
end-of-turn tokens; tokens/s counts generated tokens up to (not including) the end token. Greedy makes the
outputs comparable, so the script also reports how many of them agree token for token. The last line is
``generation_speedup=X`` (batched tokens/s over sequential tokens/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.generation import PromptSource, SamplingParams, build_generator

REPO = Path(__file__).resolve().parents[1]


def sequential(gen, prompts, max_new_tokens: int) -> tuple[list[list[int]], float]:
    """One ``model.generate`` call per prompt (greedy, KV cache, no padding)."""
    outs, started = [], time.perf_counter()
    for prompt in prompts:
        ids = torch.tensor([gen.encode(prompt)], device=gen.device)
        with torch.inference_mode():
            seq = gen.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                eos_token_id=sorted(gen.stop_ids), pad_token_id=gen.pad_id,
            )[0, ids.shape[1]:].tolist()  # fmt: skip
        cut = next((k for k, t in enumerate(seq) if t in gen.stop_ids), len(seq))
        outs.append(seq[:cut])
    return outs, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m", help="configs/model/<name>.yaml")
    ap.add_argument("--num-prompts", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = dataclasses.replace(
        instantiate(OmegaConf.load(REPO / "configs" / "model" / f"{args.model}.yaml")), lora=None
    )
    gen = build_generator(spec, backend="hf", batch_size=args.batch_size, progress=False)
    prompts = PromptSource("shipped", "test", limit=args.num_prompts).load().prompts
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    gen.generate_completions(prompts[:2], params)  # warm-up (allocator, kernels) for both sides

    started = time.perf_counter()
    batched = [row[0] for row in gen.generate_completions(prompts, params)]
    t_batched = time.perf_counter() - started
    seq_ids, t_seq = sequential(gen, prompts, args.max_new_tokens)

    n_batched, n_seq = sum(c.num_tokens for c in batched), sum(map(len, seq_ids))
    same = sum(c.token_ids == s for c, s in zip(batched, seq_ids))
    rate_b, rate_s = n_batched / t_batched, n_seq / t_seq
    print(f"model={spec.name_or_path} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} "
          f"batch_size={args.batch_size} threads={torch.get_num_threads()} device={gen.device}")  # fmt: skip
    print(f"sequential model.generate: {n_seq} tokens in {t_seq:.1f} s = {rate_s:.1f} tok/s")
    print(f"hf backend (batched):      {n_batched} tokens in {t_batched:.1f} s = {rate_b:.1f} tok/s")
    print(f"identical greedy outputs:  {same}/{len(prompts)}")
    print(f"generation_speedup={rate_b / rate_s:.2f}")


if __name__ == "__main__":
    main()
