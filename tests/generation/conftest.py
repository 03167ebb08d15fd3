"""Fixtures: the tiny spec (random init, offline) with a wider init so greedy outputs vary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))


@pytest.fixture(scope="session")
def peaky_spec():
    """tiny.yaml with initializer_range 0.2: peaked logits, so greedy text is not one repeated token."""
    spec = hydra.utils.instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
    return dataclasses.replace(spec, random_init={**spec.random_init, "initializer_range": 0.2})


@pytest.fixture(scope="session")
def tiny_gen(peaky_spec):
    from prefdistill.generation import build_generator

    return build_generator(peaky_spec, batch_size=3, progress=False)
