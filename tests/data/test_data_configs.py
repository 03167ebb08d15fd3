"""Every configs/data/*.yaml instantiates PreferenceDataModule (its keys are constructor args)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.data import PreferenceDataModule

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "data").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_data_config_instantiates(path, fixtures):
    cfg = OmegaConf.load(path)
    assert cfg.on_bad_row == "error"
    if OmegaConf.is_missing(cfg, "path"):
        cfg.path = str(fixtures / "orca_sample.jsonl")
    dm = instantiate(cfg)
    assert isinstance(dm, PreferenceDataModule) and dm.policy.max_prompt_length < dm.policy.max_length


def test_demo_config_runs(tok):
    dm = instantiate(OmegaConf.load(CONFIGS[0].parent / "demo.yaml"))
    dm.connect(tok)
    dm.setup("test")
    assert dm.stats["test"]["rows_kept"] == 100 and dm.stats["test"]["prompts_truncated"] == 0
