"""Shared fixtures: the shipped ``tiny`` spec (random init, offline), with and without LoRA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models: with a busy 2-core machine, 2 OpenMP threads made each op ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test here may touch the network or the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))


@pytest.fixture
def tiny_spec():
    return hydra.utils.instantiate(OmegaConf.load(CONFIG_DIR / "tiny.yaml"))


@pytest.fixture
def tiny_lora_spec(tiny_spec):
    return dataclasses.replace(tiny_spec, lora=LORA)
