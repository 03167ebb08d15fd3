"""bf16 end to end on CPU: ``hardware=cpu trainer.precision=bf16-mixed`` (autocast over fp32 weights) and a
``dtype: bfloat16`` model train DPO, token KD and PAD through ``train()``; the log-probs and the loss the
modules hand over stay float32 (``prefdistill.models.logprobs``: lm_head in the model's dtype, then a
float32 log-softmax). The per-family bf16-vs-fp32 bound: ``tests/models/test_families.py``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.models import load_model, response_logps, response_token_logps
from prefdistill.models.logprobs import naive_response_token_logps
from prefdistill.modules.base import PolicyModule
from prefdistill.train import train

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
PEAKED = dataclasses.replace(TINY, random_init={**TINY.random_init, "initializer_range": 0.2})
RUNS = {
    "dpo_autocast": ["method=dpo", "trainer.precision=bf16-mixed"],
    "kd_fkl_autocast": ["method=kd_fkl", "teacher=tiny", "trainer.precision=bf16-mixed"],
    "pad_autocast": ["method=pad_pd", "data=demo_lists", "trainer.precision=bf16-mixed"],
    "dpo_bf16_weights": ["method=dpo", "model.dtype=bfloat16"],
    "dpo_bf16_weights_autocast": ["method=dpo", "model.dtype=bfloat16", "trainer.precision=bf16-mixed"],
    "dpo_bf16_lora": [
        "method=dpo",
        "model.dtype=bfloat16",
        "model.lora={r: 4, alpha: 8}",
        "module.reference_cache=null",
    ],
}


def _rows(n: int = 4, length: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 600, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, length - 5 :] = 0  # ragged: every other row right-padded
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :8] = -100  # an 8-token prompt
    return ids, mask, labels


@pytest.mark.parametrize("run", sorted(RUNS))
def test_trains_end_to_end_with_float32_logps_and_loss(run, tiny_cfg, monkeypatch):
    seen = []
    call_loss = PolicyModule.call_loss

    def spy(self, inputs):
        out = call_loss(self, inputs)
        dtypes = {k: v.dtype for k, v in vars(inputs).items() if torch.is_tensor(v) and v.is_floating_point()}
        weights = next(self.policy.parameters()).dtype
        seen.append((dtypes, out.loss.dtype, torch.is_autocast_enabled("cpu"), weights))
        return out

    monkeypatch.setattr(PolicyModule, "call_loss", spy)
    result = train(tiny_cfg("save_model=false", *RUNS[run]))
    assert seen and math.isfinite(result["train/loss"]) and math.isfinite(result["val/loss"])
    for dtypes, loss_dtype, autocast, weights in seen:
        assert loss_dtype == torch.float32
        assert all(dtypes[k] == torch.float32 for k in dtypes if k.endswith("logps")), dtypes
        assert autocast == ("trainer.precision=bf16-mixed" in RUNS[run])
        assert weights == (torch.bfloat16 if "model.dtype=bfloat16" in RUNS[run] else torch.float32)


def test_log_softmax_of_bf16_logits_runs_in_float32():
    """A bf16 model's chunked log-probs == float32 log-softmax of its own bf16 logits (to 1e-5); a bf16
    log-softmax would be off by ~1e-2 (checked, so this test can tell the two apart)."""
    model = load_model(dataclasses.replace(PEAKED, dtype="bfloat16"), trainable=False)
    rows = _rows()
    with torch.no_grad():
        got, mask = response_token_logps(model, *rows, chunk_size=16)
        want, _ = naive_response_token_logps(model, *rows)  # logits in bf16, log-softmax in fp32
        logits = model(input_ids=rows[0], attention_mask=rows[1]).logits[:, :-1]
        in_bf16 = torch.log_softmax(logits, -1).gather(-1, rows[0][:, 1:, None]).squeeze(-1).float()
    assert got.dtype == torch.float32 and logits.dtype == torch.bfloat16
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=0)
    assert (in_bf16 - want[:, 1:])[mask[:, 1:]].abs().max() > 1e-3


def test_autocast_logps_are_float32_and_near_fp32():
    """Under CPU bf16 autocast (``bf16-mixed``) over fp32 weights: float32 log-probs within the rounding
    bound of ``test_families.py`` summed over each row (8 u max|z| per token, u = 2^-8)."""
    model = load_model(PEAKED, trainable=False)
    rows = _rows(seed=1)
    with torch.no_grad():
        want, counts = response_logps(model, *rows)
        z_max = model(input_ids=rows[0], attention_mask=rows[1]).logits[:, :-1].abs().amax(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = response_logps(model, *rows)
    scored = rows[2][:, 1:] != -100
    bound = (8 * 2.0**-8 * z_max * scored).sum(-1)
    assert got.dtype == torch.float32 and counts.tolist() == scored.sum(-1).tolist()
    assert ((got - want).abs() <= bound).all() and (got - want).abs().max() > 0
