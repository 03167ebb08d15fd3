"""Helpers for the token-level distillation tests (imported by name: a unique module)."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))


def sft_datamodule(n: int = 8, batch_size: int = 4):
    """The shipped demo SFT rows (prompt + response) on the tiny tokenizer, set up for fit."""
    from prefdistill.data import PreferenceDataModule
    from prefdistill.models import load_tokenizer

    dm = PreferenceDataModule(
        source="shipped", record_type="sft", max_samples=n, batch_size=batch_size,
        max_length=96, max_prompt_length=64, val_fraction=0.0,
    )  # fmt: skip
    dm.connect(load_tokenizer(TINY))
    dm.setup("fit")
    return dm


def fit(module, dm, steps: int = 2, callbacks=()) -> L.Trainer:
    """``steps`` optimizer steps on CPU, nothing logged or saved, no validation."""
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return trainer
