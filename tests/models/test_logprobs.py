"""``response_logps`` (chunked, hidden-state gather) against the full-logits reference."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from train_helpers import perturb_lora
from transformers import AutoConfig, AutoModelForCausalLM

from prefdistill.models import load_model, response_logps, response_token_logps
from prefdistill.models.logprobs import (
    naive_response_logps,
    naive_response_token_logps,
    selective_log_softmax,
)

V = 624


def _batch(n: int = 3, t: int = 14, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded rows of different lengths; prompts (first 3-5 tokens) masked out of labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    labels = ids.clone()
    for i in range(n):
        length = t - 3 * i
        mask[i, length:] = 0
        labels[i, length:] = -100
        labels[i, : 3 + i] = -100
    return ids, mask, labels


@pytest.fixture
def lora_model(tiny_lora_spec):
    model = load_model(dataclasses.replace(tiny_lora_spec, lora={**tiny_lora_spec.lora, "dropout": 0.0}))
    perturb_lora(model)
    return model.eval()


def _lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
def test_matches_naive_values_and_grads(lora_model, chunk_size):
    ids, mask, labels = _batch()
    logps, counts = response_logps(lora_model, ids, mask, labels, chunk_size=chunk_size)
    want_logps, want_counts = naive_response_logps(lora_model, ids, mask, labels)
    assert logps.dtype == torch.float32 and counts.dtype == torch.long and logps.shape == (3,)
    torch.testing.assert_close(logps, want_logps, atol=1e-5, rtol=1e-5)
    assert counts.tolist() == want_counts.tolist() == [11, 7, 3]

    (logps * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    got = _lora_grads(lora_model)
    (want_logps * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    want = _lora_grads(lora_model)
    assert got.keys() == want.keys() and any("lora_A" in k for k in got)
    for name in got:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def test_token_logps_aligned_with_labels(lora_model):
    ids, mask, labels = _batch()
    token_logps, tmask = response_token_logps(lora_model, ids, mask, labels, chunk_size=5)
    want, want_mask = naive_response_token_logps(lora_model, ids, mask, labels)
    assert token_logps.shape == tmask.shape == ids.shape and tmask.dtype == torch.bool
    assert torch.equal(tmask, labels != -100)
    assert torch.all(token_logps[~tmask] == 0) and torch.all(token_logps[tmask] < 0)
    torch.testing.assert_close(token_logps, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(tmask, want_mask)


def test_position_shift_by_hand(tiny_spec):
    """One row, labels at t=2,3: sum_t log_softmax(logits[t-1])[ids[t]]; a label at t=0 is ignored."""
    model = load_model(tiny_spec, trainable=False)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    labels = torch.tensor([[5, -100, 42, 99, -100]])
    logits = model(input_ids=ids).logits[0].float()
    want = torch.log_softmax(logits[1], -1)[42] + torch.log_softmax(logits[2], -1)[99]
    logps, counts = response_logps(model, ids, torch.ones_like(ids), labels, chunk_size=1)
    torch.testing.assert_close(logps, want.reshape(1), atol=1e-6, rtol=1e-6)
    assert counts.tolist() == [2]


def test_no_grad_reference_pass(lora_model):
    ids, mask, labels = _batch()
    with torch.no_grad():
        logps, _ = response_logps(lora_model, ids, mask, labels, chunk_size=2)
    assert not logps.requires_grad
    torch.testing.assert_close(logps, naive_response_logps(lora_model, ids, mask, labels)[0].detach())


def test_position_ids_are_used(tiny_spec):
    model = load_model(tiny_spec, trainable=False)
    ids, mask, labels = _batch(n=1)
    pos = (torch.arange(ids.shape[1]) % 5).unsqueeze(0)  # packed-style resets
    got = response_logps(model, ids, mask, labels, position_ids=pos)[0]
    torch.testing.assert_close(got, naive_response_logps(model, ids, mask, labels, position_ids=pos)[0])
    assert not torch.allclose(got, response_logps(model, ids, mask, labels)[0])


def _tiny_arch(model_type: str, **extra) -> torch.nn.Module:
    common = {"vocab_size": V, "num_attention_heads": 4}
    sizes = {
        "gpt2": {"n_embd": 32, "n_layer": 2, "n_positions": 64},
        "gemma2": {"hidden_size": 32, "num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 8,
                   "intermediate_size": 64, "final_logit_softcapping": 2.0},
    }  # fmt: skip
    config = AutoConfig.for_model(model_type, **common, **sizes[model_type], **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


@pytest.mark.parametrize("model_type", ["gpt2", "gemma2"])
def test_other_architectures(model_type):
    """GPT-2 (``transformer`` prefix) and Gemma-2 (final-logit soft-capping at 2.0, so it matters)."""
    model = _tiny_arch(model_type)
    ids, mask, labels = _batch()
    got = response_logps(model, ids, mask, labels, chunk_size=4)[0]
    torch.testing.assert_close(got, naive_response_logps(model, ids, mask, labels)[0], atol=1e-5, rtol=1e-5)


def test_unknown_architecture_falls_back_with_warning(tiny_spec, caplog):
    class Wrapper(torch.nn.Module):  # no base_model_prefix / get_output_embeddings
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return self.inner(**kw)

    model = Wrapper(load_model(tiny_spec, trainable=False))
    ids, mask, labels = _batch()
    with caplog.at_level(logging.WARNING, logger="prefdistill.models.logprobs"):
        got = response_logps(model, ids, mask, labels)[0]
        response_logps(model, ids, mask, labels)
    assert sum("full logits" in r.message for r in caplog.records) == 1
    torch.testing.assert_close(got, naive_response_logps(model, ids, mask, labels)[0])


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces, forward and backward."""

    def __init__(self):
        super().__init__()
        self.numel, self.vocab_numel = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
                if t.dim() == 2 and t.shape[-1] == V:
                    self.vocab_numel = max(self.vocab_numel, t.numel())
        return out


def test_never_materialises_full_logits(lora_model):
    n, t, chunk, hidden = 4, 40, 8, 64
    ids, mask, labels = _batch(n=n, t=t)
    with _LargestTensor() as chunked:
        logps, _ = response_logps(lora_model, ids, mask, labels, chunk_size=chunk)
        logps.sum().backward()
    with _LargestTensor() as naive:
        naive_response_logps(lora_model, ids, mask, labels)[0].sum().backward()
    assert naive.numel >= n * t * V  # the probe sees the full logits when they exist
    assert chunked.numel < n * t * V // 2
    assert chunked.vocab_numel <= max(chunk, hidden) * V  # (chunk, V) logits, or the (H, V) lm_head.T


def test_selective_log_softmax():
    logits = torch.randn(2, 3, 11, dtype=torch.bfloat16)
    targets = torch.randint(0, 11, (2, 3))
    want = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    got = selective_log_softmax(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
