"""Shared fixtures: offline environment, and the real train config composed with Hydra on tiny settings."""

from __future__ import annotations

import os

import pytest

# Tests never touch the network, and W&B stays offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from train_helpers import TINY_OVERRIDES, compose_train  # noqa: E402

# Tiny models: one thread is fastest, and two threads oversubscribe a 2-core machine badly
# when anything else runs.
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*extra: str):
        return compose_train(tmp_path, TINY_OVERRIDES + list(extra))

    return make


@pytest.fixture(autouse=True)
def _no_inherited_wandb_service():
    """A W&B run made in this process starts a service and exports ``WANDB_SERVICE``; a train.py launched
    later by another test would join that service, where a run id of a killed launch stays "in use".
    Each test's subprocesses start their own service."""
    os.environ.pop("WANDB_SERVICE", None)
    yield
    os.environ.pop("WANDB_SERVICE", None)
