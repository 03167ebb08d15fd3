"""Fixtures: the tiny spec (random init, offline) with a wider init so greedy outputs vary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf
from train_helpers import offline_private_cache

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


_offline = pytest.fixture(autouse=True)(offline_private_cache)  # every test here


@pytest.fixture(scope="session")
def peaky_spec():
    """tiny.yaml with initializer_range 0.2: peaked logits, so greedy text is not one repeated token."""
    spec = hydra.utils.instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
    return dataclasses.replace(spec, random_init={**spec.random_init, "initializer_range": 0.2})


@pytest.fixture(scope="session")
def tiny_gen(peaky_spec):
    from prefdistill.generation import build_generator

    return build_generator(peaky_spec, batch_size=3, progress=False)
