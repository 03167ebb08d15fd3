"""Loading the tiny model offline: vocab, LoRA, frozen copies, checkpointing, save round trip."""

from __future__ import annotations

import dataclasses

import torch
from peft import PeftModel
from train_helpers import perturb_lora
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from prefdistill.models import load_model, load_tokenizer, merge_and_save


def _batch(vocab: int, n: int = 2, t: int = 12) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(0, vocab, (n, t), generator=g),
        "attention_mask": torch.ones(n, t, dtype=torch.long),
    }


def test_tiny_loads_offline_with_matching_vocab(tiny_spec):
    tok = load_tokenizer(tiny_spec)
    model = load_model(tiny_spec)
    assert isinstance(model, PreTrainedModel) and model.training
    assert len(tok) == 624 == model.config.vocab_size == model.get_input_embeddings().num_embeddings
    assert tok.padding_side == "right" and tok.pad_token is not None
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    assert model.config.num_hidden_layers == 2 and model.config.tie_word_embeddings
    assert all(p.requires_grad for p in model.parameters())


def test_random_init_is_seeded(tiny_spec):
    a, b = load_model(tiny_spec), load_model(tiny_spec)
    c = load_model(dataclasses.replace(tiny_spec, seed=1))
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_dtype_applies(tiny_spec):
    assert load_model(dataclasses.replace(tiny_spec, dtype="bfloat16")).dtype == torch.bfloat16


def test_lora_wraps_and_only_adapters_train(tiny_lora_spec):
    model = load_model(tiny_lora_spec)
    assert isinstance(model, PeftModel)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen)


def test_frozen_copy_has_no_grads_and_no_lora(tiny_lora_spec):
    model = load_model(tiny_lora_spec, trainable=False)
    assert not isinstance(model, PeftModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_with_lora_backprops(tiny_lora_spec):
    spec = dataclasses.replace(tiny_lora_spec, gradient_checkpointing=True)
    model = load_model(spec)
    hf = model.get_base_model()
    assert any(getattr(m, "gradient_checkpointing", False) for m in hf.modules())
    batch = _batch(624)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)


def test_merge_and_save_round_trip(tiny_lora_spec, tmp_path):
    model, tok = load_model(tiny_lora_spec), load_tokenizer(tiny_lora_spec)
    perturb_lora(model)
    model.eval()
    batch = _batch(len(tok))
    with torch.no_grad():
        want = model(**batch).logits
    out = merge_and_save(model, tok, tmp_path / "ckpt", merge=True)
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert not list(tmp_path.glob(".ckpt.tmp-*"))  # temp folder renamed away
    assert isinstance(model, PeftModel) and any("lora_" in n for n, _ in model.named_parameters())

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")  # plain transformers
    base = load_model(tiny_lora_spec, trainable=False)  # same seed -> same base weights
    adapter = PeftModel.from_pretrained(base, out)  # plain peft
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(adapter(**batch).logits, want, atol=1e-6, rtol=1e-6)
    assert len(AutoTokenizer.from_pretrained(out)) == len(tok)


def test_merge_and_save_plain_model_overwrites_atomically(tiny_spec, tmp_path):
    model = load_model(tiny_spec)
    merge_and_save(model, None, tmp_path / "full")
    (tmp_path / "full" / "stale.txt").write_text("old")
    merge_and_save(model, None, tmp_path / "full", merge=True)
    assert not (tmp_path / "full" / "stale.txt").exists() and not (tmp_path / "full" / "merged").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert torch.equal(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
