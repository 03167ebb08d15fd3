"""ListwiseModule (PAD): the shared-prompt forward (each prompt once per list) equals the padded B*n rows
in log-probs, loss and gradients, on the shipped demo lists; ``forward`` is validated and reaches the module."""

from __future__ import annotations

import logging
from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.losses import get_loss
from prefdistill.modules import ListwiseModule, build_module

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
SGD = partial(torch.optim.SGD, lr=0.1)
LISTS = {"name": "demo_lists", "record_type": "listwise", "max_samples": 4, "batch_size": 2, "max_length": 160,
         "max_prompt_length": 96}  # fmt: skip


def test_shared_prompt_equals_padded_logps_loss_and_grads(tiny_data, tiny_module, caplog):
    dm = tiny_data(setup=False, **LISTS)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    b, n = batch["scores"].shape
    assert n > 2 and b == 2  # lists, not pairs
    results = {}
    with caplog.at_level(logging.WARNING):
        for forward in ("shared_prompt", "padded"):
            module = tiny_module("pad_pd", lr=0.1, forward=forward)  # same seed: the same tiny weights
            logps, lengths = module.list_logps(batch)
            loss, _ = module.compute(batch)
            loss.backward()
            grads = {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}
            results[forward] = (logps.detach(), lengths, loss.detach(), grads)
    assert "shared-prompt forward unavailable" not in caplog.text
    (lp, ln, loss, grads), (want_lp, want_ln, want_loss, want_grads) = (
        results["shared_prompt"],
        results["padded"],
    )
    assert lp.shape == (b * n,) and lp.dtype == torch.float32
    assert ln.tolist() == want_ln.tolist()
    torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=1e-5)
    assert grads.keys() == want_grads.keys() and grads
    for key in grads:
        torch.testing.assert_close(grads[key], want_grads[key], atol=1e-5, rtol=1e-4, msg=key)


def test_two_training_steps_with_the_shared_prompt_forward(tiny_data, tiny_module):
    module = tiny_module("pad_pd", lr=0.1, forward="shared_prompt")
    before = {k: p.detach().clone() for k, p in module.named_parameters()}
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=tiny_data(setup=False, **LISTS))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert all(not torch.equal(before[k], p) for k, p in module.named_parameters() if p.requires_grad)


def test_forward_setting_is_validated_and_reaches_the_module():
    def module(**kw):
        return ListwiseModule(policy=TINY, loss=get_loss("pad_pd"), optimizer=SGD, **kw)

    assert module().forward_mode == module(forward="auto").forward_mode == "shared_prompt"
    built = build_module(loss=get_loss("pad_rd"), policy=TINY, optimizer=SGD, forward="padded")
    assert isinstance(built, ListwiseModule) and built.forward_mode == "padded"
    with pytest.raises(ValueError, match="forward must be one of"):
        module(forward="packed")
