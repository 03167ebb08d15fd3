"""Throughput callback: the FLOP formula by hand on a small config, and metrics logged in a tiny fit."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from prefdistill.callbacks import ThroughputMonitor, step_flops
from prefdistill.callbacks.throughput import BatchTokens, ModelShape, batch_tokens
from prefdistill.data.collate import collate_pairs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))


def _llama():
    # hidden 64, 2 layers, 4 heads (head_dim 16), 2 kv heads, mlp 128, vocab 624, untied head
    config = AutoConfig.for_model(
        "llama", vocab_size=624, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=False,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config)


def test_model_shape_by_hand():
    shape = ModelShape.of(_llama())
    # per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12288; mlp 3*64*128 = 24576; 2 norms 128
    assert shape.n_trainable == 2 * (12288 + 24576 + 128) + 64 and shape.n_frozen == 0
    assert (shape.d_model, shape.vocab, shape.n_layers, shape.d_attn) == (64, 624, 2, 64)
    assert shape.head_trainable


def test_flops_formula_by_hand():
    shape = ModelShape(n_trainable=74048, n_frozen=0, d_model=64, vocab=624, n_layers=2, d_attn=64,
                       head_trainable=True)  # fmt: skip
    tokens = BatchTokens(tokens=10, scored=4, attended=55)
    # 6 N T + 6 d V M + 12 L d_attn ctx
    want = 6 * 74048 * 10 + 6 * 64 * 624 * 4 + 12 * 2 * 64 * 55
    assert step_flops(shape, tokens) == want == 4_442_880 + 958_464 + 84_480 == 5_485_824
    # LoRA-like split: frozen weights cost 4 per token, trainable 6; frozen head 4 d V per scored token
    lora = dataclasses.replace(shape, n_trainable=1000, n_frozen=74048, head_trainable=False)
    assert step_flops(lora, tokens) == 4 * 74048 * 10 + 6 * 1000 * 10 + 4 * 64 * 624 * 4 + 12 * 2 * 64 * 55
    # a reference forward adds a forward-only third
    ref = 2 * 74048 * 10 + 2 * 64 * 624 * 4 + 4 * 2 * 64 * 55
    assert step_flops(shape, tokens, reference_forward=True) == want + ref


def test_batch_tokens_shared_prompt_vs_padded():
    examples = [
        {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10], "index": 0},
        {"prompt_ids": [5], "chosen_ids": [8, 9, 10], "rejected_ids": [11, 12], "index": 1},
    ]
    batch = collate_pairs(examples, pad_token_id=0)
    padded = batch_tokens(batch)
    assert padded.tokens == (5 + 4) + (4 + 3) and padded.scored == 2 + 3 + 1 + 2
    assert padded.attended == sum(s * (s + 1) // 2 for s in (5, 4, 4, 3))
    shared = batch_tokens(batch, shared_prompt=True)
    assert shared.tokens == (3 + 2 + 1) + (1 + 3 + 2) and shared.scored == padded.scored
    # prompt causal + each response sees the prompt and its own causal prefix
    assert shared.attended == (6 + 2 * 3 + 3 + 1 * 3 + 1) + (1 + 3 * 1 + 6 + 2 * 1 + 3)


def test_metrics_logged_in_tiny_fit(tmp_path):
    from prefdistill.losses import get_loss
    from prefdistill.modules import PreferenceModule

    spec = hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "model" / "tiny.yaml"))
    examples = [
        {
            "prompt_ids": list(range(3, 9 + i)),
            "chosen_ids": [20, 21, 22 + i],
            "rejected_ids": [30, 31],
            "index": i,
        }
        for i in range(4)
    ]
    loader = torch.utils.data.DataLoader(
        examples, batch_size=2, collate_fn=functools.partial(collate_pairs, pad_token_id=0)
    )
    module = PreferenceModule(
        policy=spec, loss=get_loss("simpo"), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        forward="shared_prompt",
    )  # fmt: skip
    monitor = ThroughputMonitor(peak_flops=1e9)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[monitor], default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    metrics = trainer.callback_metrics
    for key in ("tokens_per_s", "step_time_s", "mfu", "tflops"):
        assert f"train/perf/{key}" in metrics and float(metrics[f"train/perf/{key}"]) > 0
    assert len(monitor.history) == 2
    last = monitor.last
    tokens = sum(len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples[2:])
    assert last["train/perf/tokens_per_s"] == pytest.approx(tokens / last["train/perf/step_time_s"])
    assert last["train/perf/mfu"] == pytest.approx(last["train/perf/tflops"] * 1e12 / 1e9)
    # run totals (cost): every example's prompt + chosen + rejected once (shared prompt), one model (SimPO)
    all_tokens = sum(len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
    totals = monitor.totals()
    assert totals["tokens"] == totals["forward_tokens"] == all_tokens == 4 * 11 + 6  # 6..9 prompt ids
    assert totals["fit_s"] >= sum(h["train/perf/step_time_s"] for h in monitor.history) > 0
    resumed = ThroughputMonitor()
    resumed.load_state_dict(monitor.state_dict())  # a checkpoint carries the totals
    assert resumed.totals() == totals


def test_forward_tokens_count_an_uncached_reference(tmp_path):
    """DPO without a reference cache runs the reference on every batch: twice the policy's tokens."""
    from prefdistill.losses import get_loss
    from prefdistill.modules import PreferenceModule

    spec = hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "model" / "tiny.yaml"))
    examples = [
        {"prompt_ids": [3, 4, 5], "chosen_ids": [20, 21], "rejected_ids": [30], "index": i} for i in range(2)
    ]
    loader = torch.utils.data.DataLoader(
        examples, batch_size=2, collate_fn=functools.partial(collate_pairs, pad_token_id=0)
    )
    module = PreferenceModule(
        policy=spec,
        loss=get_loss("dpo"),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        forward="padded",
    )
    monitor = ThroughputMonitor(peak_flops=1e9)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[monitor], default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    totals = monitor.totals()
    assert totals["tokens"] == 2 * (5 + 4)  # padded layout: prompt + chosen, prompt + rejected
    assert totals["forward_tokens"] == 2 * totals["tokens"]


def test_measured_peak_on_cpu():
    from prefdistill.callbacks.throughput import _PEAK_CACHE, measured_peak_flops

    _PEAK_CACHE.clear()
    peak = measured_peak_flops(size=256, repeats=2)
    assert 1e8 < peak < 1e14 and measured_peak_flops() == peak  # cached in-process


def test_totals_survive_a_resume(tmp_path):
    """Stopped after 2 steps and resumed from its checkpoint to 4, a run counts the tokens of 4 steps."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from prefdistill.losses import get_loss
    from prefdistill.modules import PreferenceModule

    spec = hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "model" / "tiny.yaml"))
    examples = [
        {"prompt_ids": [3, 4], "chosen_ids": [20, 21], "rejected_ids": [30, 31], "index": i} for i in range(8)
    ]
    loader = torch.utils.data.DataLoader(
        examples, batch_size=2, collate_fn=functools.partial(collate_pairs, pad_token_id=0)
    )

    def fit(max_steps: int, ckpt_path=None) -> ThroughputMonitor:
        module = PreferenceModule(
            policy=spec, loss=get_loss("simpo"), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
            forward="padded",
        )  # fmt: skip
        monitor = ThroughputMonitor(peak_flops=1e9)
        checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2, save_top_k=0)
        trainer = L.Trainer(
            accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[monitor, checkpoint], default_root_dir=str(tmp_path),
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
        return monitor

    per_step = 2 * (4 + 4)  # two pairs, each prompt + chosen and prompt + rejected (padded layout)
    assert fit(2).totals()["tokens"] == 2 * per_step
    resumed = fit(4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert len(resumed.history) == 2  # this process trained steps 3-4 only ...
    assert resumed.totals()["tokens"] == 4 * per_step  # ... and counts all four
