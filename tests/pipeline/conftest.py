"""Fixtures: offline, one thread, a private cache; the tiny student and a differently seeded tiny teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf
from train_helpers import offline_private_cache

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


_offline = pytest.fixture(autouse=True)(offline_private_cache)  # every test here


@pytest.fixture
def student_spec():
    return hydra.utils.instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))


@pytest.fixture
def teacher_spec(student_spec):
    return dataclasses.replace(student_spec, seed=1)
