"""What the module tests share: the tiny policy, a shipped-data datamodule, a built module, a short fit.

    def test_x(tiny_data, tiny_module, fit):
        dm = tiny_data(record_type="sft", val_fraction=0.0)       # connected to the tiny tokenizer, set up
        module = tiny_module("kd_fkl", teacher=TEACHER, lr=0.5)   # build_module(...), then configure_model()
        trainer = fit(module, dm, steps=2)                        # CPU, no logger/checkpoints/validation

The factories are session fixtures, so module-scoped fixtures (a shared batch) can use them too.
"""

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
from prefdistill.modules import build_module

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
DATA = {"source": "shipped", "max_samples": 8, "batch_size": 4, "max_length": 96, "max_prompt_length": 64}


@pytest.fixture(scope="session")
def tiny_data():
    """``make(setup=True, **settings)``: a PreferenceDataModule of the shipped demo data (``DATA`` updated by
    ``settings``) connected to the tiny tokenizer, and set up for fit unless ``setup=False``."""

    def make(setup: bool = True, **settings) -> PreferenceDataModule:
        dm = PreferenceDataModule(**{**DATA, **settings})
        dm.connect(load_tokenizer(TINY))
        if setup:
            dm.setup("fit")
        return dm

    return make


@pytest.fixture(scope="session")
def tiny_module():
    """``make(loss, policy=TINY, lr=0.5, **settings)``: the module ``build_module`` picks for ``loss`` (a name or a
    Loss), SGD at ``lr``, its models loaded (``configure_model``)."""

    def make(loss, policy=TINY, lr: float = 0.5, **settings):
        loss = get_loss(loss) if isinstance(loss, str) else loss
        module = build_module(loss=loss, policy=policy, optimizer=partial(torch.optim.SGD, lr=lr), **settings)
        module.configure_model()
        return module

    return make


@pytest.fixture(scope="session")
def fit():
    """``run(module, dm, steps=2, read_split=None, **trainer_settings)``: ``steps`` optimizer steps on CPU without
    a logger, checkpoints, a progress bar or validation; returns the trainer. ``read_split``: the split whose
    cached tables ``module.compute`` reads afterwards (outside a trainer stage)."""

    def run(module, dm, steps: int = 2, read_split: str | None = None, **trainer_settings) -> L.Trainer:
        trainer = L.Trainer(**{
            "max_steps": steps, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
            "num_sanity_val_steps": 0, **trainer_settings,
        })  # fmt: skip
        trainer.fit(module, datamodule=dm)
        if (
            read_split is not None
        ):  # compute() called after the fit, outside a stage, reads this split's tables
            module.current_split = lambda: read_split
        return trainer

    return run
