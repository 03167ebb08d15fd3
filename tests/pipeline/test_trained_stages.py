"""Stages that train a model record what they cost: the SFT stage and the reward-model stage count their
tokens (by hand: one epoch of 4 rows), the reward model's held-out accuracy is the one its saved folder
gives, and a second call with the same recipe reuses the folder without training."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import load_records
from prefdistill.data.templates import PromptEncoder
from prefdistill.models import load_tokenizer
from prefdistill.pipeline import reward_model
from prefdistill.pipeline.sft import sft_step
from prefdistill.pipeline.steps import finetuned
from prefdistill.utils.cost import stage_cost

DATA = {"source": "shipped", "path": None, "name": None, "splits": {"train": "train", "validation": "validation",
        "test": None}, "template": "auto", "max_length": 128, "max_prompt_length": 96, "max_samples": 4,
        "val_fraction": 0.0}  # fmt: skip


def _pairs(split: str) -> list:
    return [r for _, r in load_records("shipped", split)][:4]


def _length(encoder, prompt, response) -> int:
    prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
    return len(prompt_ids) + len(response_ids)


def test_sft_stage_records_the_tokens_it_trained_on(student_spec, tmp_path, capfd):
    """max_samples 4, batch 2, 2 steps: one epoch, every row once: tokens = sum of prompt + response lengths.
    Its progress shows in a log file too (a tqdm bar, not a rich one that draws only on a terminal)."""
    encoder = PromptEncoder(load_tokenizer(student_spec), "auto")
    expected = sum(_length(encoder, r.prompt, r.chosen) for r in _pairs("train"))
    sft = sft_step(data=DATA, max_steps=2, batch_size=2, lr=1e-3)
    _, result = finetuned("student", student_spec, sft, tmp_path)
    assert result.info["tokens"] == expected
    assert stage_cost(result.path)["tokens"] == expected
    assert "Epoch 0: 100%" in capfd.readouterr().out


def test_reward_model_stage_trains_once_and_reports_its_held_out_accuracy(student_spec, tmp_path, monkeypatch):
    """Tokens: both sides of the 4 training pairs (padded forward, no shared prompt). Held-out accuracy:
    the share of the 4 validation pairs whose chosen response the saved model scores higher."""
    encoder = PromptEncoder(load_tokenizer(student_spec), "auto")
    expected = sum(_length(encoder, r.prompt, r.chosen) + _length(encoder, r.prompt, r.rejected) for r in _pairs("train"))
    recipe = dict(base=student_spec, data=DATA, cache_dir=tmp_path, max_steps=2, lr=1e-2, batch_size=2, seed=0)
    rm = reward_model.trained_reward_model(**recipe)
    assert not rm.ready and not (tmp_path / "stages").exists()  # built, nothing trained yet
    planned = rm.planned_stage()
    info = rm.stage.info
    assert planned.folder_name == rm.stage.path.name and planned.trains and rm.ready
    assert rm.stage.status == "ran" and info["tokens"] == expected and info["val_pairs"] == 4
    held_out = _pairs("validation")
    prompts = [r.prompt for r in held_out]
    chosen = rm.score(prompts, [r.chosen for r in held_out])
    rejected = rm.score(prompts, [r.rejected for r in held_out])
    assert info["val_accuracy"] == pytest.approx(sum(c > r for c, r in zip(chosen, rejected)) / 4)
    assert f"{info['val_accuracy']:.3f}" in rm.name and rm.stage.path.name in rm.name
    marker = json.loads((rm.stage.path / "_COMPLETE.json").read_text())
    assert marker["inputs"]["max_steps"] == 2 and marker["name"] == "reward-model"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished reward-model stage must be reused")

    monkeypatch.setattr(reward_model, "train_reward_model", no_training)
    again = reward_model.trained_reward_model(**recipe)
    assert again.stage.status == "reused" and again.stage.path == rm.stage.path
    assert again.score(prompts, [r.chosen for r in held_out]) == pytest.approx(chosen)
    with pytest.raises(AssertionError, match="reused"):  # another recipe is another stage
        assert reward_model.trained_reward_model(**{**recipe, "max_steps": 3}).stage is None  # trains: raises


def test_a_lora_reward_model_and_a_full_one_are_two_stages(student_spec, tmp_path):
    import dataclasses

    adapter = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}
    recipe = {"data": {"source": "shipped"}, "max_steps": 1, "lr": 1e-3, "batch_size": 2, "seed": 0}
    full = reward_model.trained_reward_model(base=student_spec, cache_dir=tmp_path, **recipe)
    lora = reward_model.trained_reward_model(base=dataclasses.replace(student_spec, lora=adapter), cache_dir=tmp_path, **recipe)
    assert full.key != lora.key and full.planned_stage().key == full.key
    assert reward_model.trained_reward_model(base=student_spec, cache_dir=tmp_path, **recipe).key == full.key


def test_a_reward_model_of_a_frozen_teacher_spec_trains_the_adapter_it_is_given(student_spec, tmp_path):
    import dataclasses

    adapter = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]}
    recipe = {"data": {"source": "shipped"}, "max_steps": 1, "lr": 1e-3, "batch_size": 2, "seed": 0}
    given = reward_model.trained_reward_model(base=student_spec, cache_dir=tmp_path, lora=adapter, **recipe)
    spec_own = dataclasses.replace(student_spec, lora=adapter)
    assert given.base.lora == spec_own.lora and given.key == reward_model.trained_reward_model(
        base=spec_own, cache_dir=tmp_path, **recipe
    ).key  # fmt: skip
    with pytest.raises(ValueError, match="use 'inherit', null"):
        reward_model.trained_reward_model(base=student_spec, cache_dir=tmp_path, lora="r8", **recipe)
