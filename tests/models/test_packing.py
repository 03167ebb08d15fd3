"""Shared-prompt packed forward == separate padded forwards (values and gradients), per model family."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from prefdistill.data.collate import collate_pairs
from prefdistill.models import load_model, packing, response_logps
from prefdistill.models.packing import block_mask, pack_pairs, shared_prompt_logps, unique_tokens

V = 624
TINY = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
# Tiny random-init configs (2 layers) of every family we ship configs for. Windows are set small
# so the sliding-window masks are exercised (pairs below are up to ~20 tokens).
CONFIGS = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
    "gpt_neo": dict(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
                    window_size=64, max_position_embeddings=128, intermediate_size=64),
    "gemma2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=8, intermediate_size=64, sliding_window=5, max_position_embeddings=128),
    "gemma3_text": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=8, intermediate_size=64, sliding_window=5, max_position_embeddings=128,
                        layer_types=["sliding_attention", "full_attention"]),
    "mistral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=64, sliding_window=5, max_position_embeddings=128),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=128),
}  # fmt: skip


def _random_model(model_type: str, attn: str = "sdpa", **extra):
    config = AutoConfig.for_model(model_type, **{**TINY, **CONFIGS.get(model_type, {}), **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model.eval()  # no dropout: the two paths must see the same network


def _pairs(n: int = 3, seed: int = 0, prompt=(3, 7), response=(2, 8)) -> dict:
    rng = random.Random(seed)

    def ids(lo, hi):
        return [rng.randrange(3, V) for _ in range(rng.randint(lo, hi))]

    examples = [
        {"prompt_ids": ids(*prompt), "chosen_ids": ids(*response), "rejected_ids": ids(*response), "index": i}
        for i in range(n)
    ]
    return collate_pairs(examples, pad_token_id=0)


def _padded(model, batch):
    keys = ("input_ids", "attention_mask", "labels")
    ids, mask, labels = (torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys)
    return response_logps(model, ids, mask, labels, chunk_size=7)


def _grads(model, logps) -> dict[str, torch.Tensor]:
    weights = torch.linspace(-1.0, 1.5, logps.shape[0])
    model.zero_grad(set_to_none=True)
    (logps * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, batch, layout, grads=True):
    got, got_n = shared_prompt_logps(model, batch, chunk_size=7, layout=layout)
    want, want_n = _padded(model, batch)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert got_n.tolist() == want_n.tolist()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    if grads:
        g_got, g_want = _grads(model, got), _grads(model, _padded(model, batch)[0])
        assert g_got.keys() == g_want.keys() and g_got
        for name in g_got:
            torch.testing.assert_close(g_got[name], g_want[name], atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_tiny_llama_values_and_grads(tiny_spec, layout, caplog):
    model = load_model(tiny_spec)  # the shipped tiny config (sdpa)
    model.eval()
    with caplog.at_level(logging.WARNING):
        _assert_same(model, _pairs(), layout)
    assert "shared-prompt forward unavailable" not in caplog.text


def test_tiny_llama_lora(tiny_lora_spec):
    model = load_model(tiny_lora_spec).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    _assert_same(model, _pairs(seed=3), "rows")


@pytest.mark.parametrize("model_type", list(CONFIGS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_families_match_padded(model_type, attn, caplog):
    try:
        model = _random_model(model_type, attn)
    except ValueError as err:  # gpt_neo and gemma2 have no sdpa attention in transformers 5.x
        pytest.skip(str(err).splitlines()[0][:80])
    with caplog.at_level(logging.WARNING):
        _assert_same(model, _pairs(seed=1), "flat" if attn == "eager" else "rows")
    assert "shared-prompt forward unavailable" not in caplog.text


def test_gpt_neo_local_window_too_short_falls_back(caplog):
    model = _random_model("gpt_neo", "eager", window_size=6)
    with caplog.at_level(logging.WARNING):
        _assert_same(model, _pairs(seed=2), "rows", grads=False)  # equal, via the padded fallback
    assert "'gpt_neo'" in caplog.text and "local window" in caplog.text


def test_unsupported_family_warns_once_and_falls_back(caplog):
    model = _random_model("opt", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                          word_embed_proj_dim=32, max_position_embeddings=128)  # fmt: skip
    packing._warned.clear()
    with caplog.at_level(logging.WARNING):
        _assert_same(model, _pairs(), "rows", grads=False)
        shared_prompt_logps(model, _pairs(seed=5))
    hits = [r for r in caplog.records if "shared-prompt forward unavailable" in r.getMessage()]
    assert len(hits) == 1 and "'opt'" in hits[0].getMessage()


def test_padding_free_flat_equals_rows_and_padded(tiny_spec):
    """Very unequal lengths: the flat layout has no padding at all, and the same numbers."""
    model = load_model(tiny_spec).eval()
    batch = _pairs(n=4, seed=7, prompt=(2, 12), response=(1, 15))
    packed = pack_pairs(batch, "flat")
    assert packed.input_ids.shape == (1, unique_tokens(batch))  # every token is a real, unique token
    assert (packed.segment >= 0).all()
    with torch.no_grad():
        flat, _ = shared_prompt_logps(model, batch, layout="flat")
        rows, _ = shared_prompt_logps(model, batch, layout="rows")
        want, _ = _padded(model, batch)
    torch.testing.assert_close(flat, want, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rows, want, atol=1e-4, rtol=1e-5)


def test_pack_layout_and_mask():
    examples = [{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10], "index": 0}]
    batch = collate_pairs(examples, pad_token_id=0)
    packed = pack_pairs(batch, "rows")
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2]]  # rejected restarts at the prompt end
    # chosen tokens 7,8,9 predicted from offsets 1,2,3; rejected 10 from the last prompt token (offset 1)
    assert packed.source.tolist() == [1, 2, 3, 1] and packed.targets.tolist() == [7, 8, 9, 10]
    assert packed.owner.tolist() == [0, 0, 0, 1]
    m = block_mask(packed)[0, 0].int().tolist()
    assert m[5] == [1, 1, 0, 0, 0, 1]  # rejected sees prompt and itself, not chosen
    assert m[4] == [1, 1, 1, 1, 1, 0]


def test_different_prompts_fall_back(tiny_spec, caplog):
    model = load_model(tiny_spec).eval()
    batch = _pairs()
    batch["rejected_input_ids"][0, 0] += 1  # not a shared prompt any more
    with caplog.at_level(logging.WARNING), torch.no_grad():
        got, _ = shared_prompt_logps(model, batch)
        want, _ = _padded(model, batch)
    torch.testing.assert_close(got, want)
    assert "prompts differ" in caplog.text
