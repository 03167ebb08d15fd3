"""Optimizer in backward: the same trajectory as a step after backward, with no full set of gradients."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.data import PreferenceDataModule
from prefdistill.losses import get_loss
from prefdistill.models import load_tokenizer
from prefdistill.modules import PreferenceModule
from prefdistill.modules.optim import build_scheduler

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))


class MaxGradsHeld(L.Callback):
    """The largest number of parameters holding a gradient at once, seen from the backward hooks."""

    def __init__(self):
        self.most = 0

    def on_train_start(self, trainer, module):
        params = [p for p in module.parameters() if p.requires_grad]

        def seen(_):
            self.most = max(self.most, sum(q.grad is not None for q in params))

        for p in params:
            p.register_post_accumulate_grad_hook(seen)


def _fit(in_backward: bool, **trainer_kw):
    L.seed_everything(0)
    dm = PreferenceDataModule(
        source="shipped", max_samples=12, batch_size=4, max_length=96, max_prompt_length=64
    )
    dm.connect(load_tokenizer(TINY))
    module = PreferenceModule(
        policy=TINY,
        loss=get_loss("dpo"),
        optimizer=partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
        scheduler=partial(build_scheduler, name="linear", warmup_ratio=0.0),
        reference_cache=None,
        optimizer_in_backward=in_backward,
    )
    held = MaxGradsHeld()
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[held], **trainer_kw,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return module, held.most


def test_same_parameters_as_stepping_after_backward_and_never_all_gradients():
    after, most_after = _fit(False)
    inside, most_inside = _fit(True)
    n = sum(p.requires_grad for p in after.parameters())
    assert most_after == n  # the usual step: every gradient exists at the end of backward
    assert most_inside <= 1  # in backward: at most one gradient at a time (freed as soon as it is used)
    for (name, a), b in zip(after.named_parameters(), inside.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_refuses_accumulation_and_clipping():
    with pytest.raises(ValueError, match="accumulate_grad_batches=1"):
        _fit(True, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="no gradient clipping"):
        _fit(True, gradient_clip_val=1.0)
