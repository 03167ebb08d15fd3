"""Tiny random-init models of every family we ship a config for, and ragged batches for them.

Each config is 2 layers, hidden 32, vocabulary 624 (the shipped tiny tokenizer's). Windows are 8 tokens
while sequences below reach ~35, so sliding-window (mistral, gemma2, qwen2, gemma3) and local (gpt_neo)
attention cut real context. Gemma-2's soft-caps are small (attention 1.0, final logits 2.0) and its
weights larger than the default init, so capping changes the numbers (``test_softcaps_matter``).
"""

from __future__ import annotations

import random

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from prefdistill.data.collate import collate_lists, collate_pairs

V = 624
WINDOW = 8
SPECIAL = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
_DECODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, max_position_embeddings=256)  # fmt: skip
CONFIGS = {
    "llama": _DECODER,
    "mistral": {**_DECODER, "sliding_window": WINDOW},
    "gemma2": {**_DECODER, "head_dim": 8, "sliding_window": WINDOW, "query_pre_attn_scalar": 8,
               "attn_logit_softcapping": 1.0, "final_logit_softcapping": 2.0, "initializer_range": 0.2},
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=256),
    "gpt_neo": dict(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
                    window_size=WINDOW, max_position_embeddings=256, intermediate_size=64),
    "qwen2": {**_DECODER, "use_sliding_window": True, "sliding_window": WINDOW,
              "layer_types": ["sliding_attention", "full_attention"]},
    "gemma3_text": {**_DECODER, "head_dim": 8, "sliding_window": WINDOW, "query_pre_attn_scalar": 8,
                    "layer_types": ["sliding_attention", "full_attention"]},
}  # fmt: skip
# transformers 5.x has no SDPA attention for these (Gemma-2: SDPA cannot soft-cap attention logits;
# GPT-Neo: eager and flash only); from_config raises this error for them with "sdpa".
NO_SDPA = {"gemma2", "gpt_neo"}
NO_SDPA_ERROR = "does not support an attention implementation through torch.nn.functional.scaled_dot_product"


def default_attn(model_type: str) -> str:
    return "eager" if model_type in NO_SDPA else "sdpa"


def random_model(model_type: str, attn: str | None = None, dtype=torch.float32, **extra):
    """Seeded tiny model of ``model_type`` in eval mode (no dropout: two paths must see one network)."""
    config = AutoConfig.for_model(model_type, **{**SPECIAL, **CONFIGS.get(model_type, {}), **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        config, attn_implementation=attn or default_attn(model_type), dtype=dtype
    )
    return model.eval()


def _ids(rng: random.Random, lo: int, hi: int) -> list[int]:
    return [rng.randrange(3, V) for _ in range(rng.randint(lo, hi))]


def pair_batch(n: int = 3, seed: int = 0, prompt=(3, 12), response=(2, 12)) -> dict:
    """Collated pairs with ragged prompt and response lengths."""
    rng = random.Random(seed)
    examples = [
        {"prompt_ids": _ids(rng, *prompt), "chosen_ids": _ids(rng, *response),
         "rejected_ids": _ids(rng, *response), "index": i}
        for i in range(n)
    ]  # fmt: skip
    return collate_pairs(examples, pad_token_id=0)


def list_batch(b: int = 2, n: int = 4, seed: int = 0, prompt=(3, 12), response=(1, 12)) -> dict:
    """Collated lists (``b`` prompts x ``n`` responses of ragged lengths) with random scores."""
    rng = random.Random(seed)
    examples = [
        {"prompt_ids": _ids(rng, *prompt), "response_ids": [_ids(rng, *response) for _ in range(n)],
         "scores": [rng.uniform(-1, 1) for _ in range(n)], "index": i}
        for i in range(b)
    ]  # fmt: skip
    return collate_lists(examples, pad_token_id=0)


def grads(model, logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of a fixed weighted sum of ``logps`` (weights of both signs)."""
    weights = torch.linspace(-1.0, 1.5, logps.shape[0])
    model.zero_grad(set_to_none=True)
    (logps * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
