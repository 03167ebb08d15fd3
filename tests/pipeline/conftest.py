"""Fixtures: offline, one thread, a private cache; the tiny student and a differently seeded tiny teacher."""

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


@pytest.fixture
def student_spec():
    return hydra.utils.instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))


@pytest.fixture
def teacher_spec(student_spec):
    return dataclasses.replace(student_spec, seed=1)
