"""pipeline=sft_first on the tiny model: SFT the policy (a cached stage), then DPO from it on the configured
data with the SFT model as the reference; no teacher needed; a second run reuses the SFT stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefdistill.generation import PromptSource
from prefdistill.pipeline import Chain, SFTStep
from prefdistill.train import train

SFT_FIRST = ["pipeline=sft_first", "pipeline.sft.max_steps=2", "pipeline.sft.lr=1e-2",
             "trainer.max_steps=1", "save_model=false"]  # fmt: skip


def test_a_chain_without_a_step_fine_tunes_keeps_the_data_and_reuses_the_stage(student_spec, tmp_path):
    trained = []

    def fake_sft(spec, out_dir):  # stands in for sft_step: saves a plain HF folder
        from prefdistill.models import load_model, load_tokenizer, merge_and_save

        trained.append(spec.seed)
        merge_and_save(load_model(spec, trainable=False), load_tokenizer(spec), out_dir)

    source = PromptSource("shipped", "train", limit=4)
    sft = SFTStep(fake_sft, {"steps": 1})
    first = Chain(sft_student=sft)(student_spec, None, source, cache_dir=tmp_path)
    assert first.path is None and first.teacher is None
    assert [(s.name, s.status) for s in first.stages] == [("sft-student", "ran")]
    assert first.student.name_or_path == str(first.stages[0].path / "model") and trained == [0]
    again = Chain(sft_student=sft)(student_spec, None, source, cache_dir=tmp_path)
    assert [s.status for s in again.stages] == ["reused"] and trained == [0]
    assert again.student == first.student
    untouched = Chain()(student_spec, None, source, cache_dir=tmp_path)
    assert untouched.student == student_spec and untouched.stages == []


def test_a_chain_without_a_step_fine_tunes_the_teacher_when_asked(student_spec, teacher_spec, tmp_path):
    def fake_sft(spec, out_dir):
        from prefdistill.models import load_model, load_tokenizer, merge_and_save

        merge_and_save(load_model(spec, trainable=False), load_tokenizer(spec), out_dir)

    sft = SFTStep(fake_sft, {"steps": 1})
    both = Chain(sft_student=sft, sft_teacher=sft)(student_spec, teacher_spec, None, cache_dir=tmp_path)
    assert [s.name for s in both.stages] == ["sft-teacher", "sft-student"]
    assert both.teacher.name_or_path == str(both.stages[0].path / "model") != both.student.name_or_path
    with pytest.raises(ValueError, match="teacher="):
        Chain(sft_student=sft, sft_teacher=sft)(student_spec, None, None, cache_dir=tmp_path)


def test_sft_then_dpo_from_the_sft_model_second_run_reuses_it(tiny_cfg, caplog):
    caplog.set_level("INFO", logger="prefdistill")
    base = train(tiny_cfg("trainer.max_steps=1", "save_model=false"))  # DPO from the untuned policy
    logs, results, runs = [], [], []
    for _ in range(2):
        caplog.clear()
        cfg = tiny_cfg(*SFT_FIRST)  # no teacher: this pipeline needs none
        results.append(train(cfg))
        runs.append(Path(cfg.paths.output_dir))
        logs.append([r.getMessage() for r in caplog.records if r.getMessage().startswith("pipeline:")])
    assert len(logs[0]) == len(logs[1]) == 1
    assert "sft-student ran" in logs[0][0] and "the configured data" in logs[0][0], logs[0]
    assert "sft-student reused" in logs[1][0], logs[1]
    first = results[0]
    # Before training the policy is the reference (zero margin), and it is the SFT model: the chosen
    # responses of the held-out pairs got likelier than under the untuned policy.
    assert first["before/val/reward/margin"] == pytest.approx(0.0, abs=1e-6)
    assert first["before/val/logps/chosen"] > base["before/val/logps/chosen"]
    assert results[1]["before/val/logps/chosen"] == pytest.approx(first["before/val/logps/chosen"])
    # trained on the configured data (the shipped demo pairs, data.max_samples=16), not on a made file
    data = json.loads((runs[0] / "metrics.json").read_text())["data"]
    assert data["train"]["rows_kept"] == 16, data
    resolved = (runs[0] / "config_resolved.yaml").read_text()
    assert "source: shipped" in resolved


def test_student_and_teacher_recipes_follow_pipeline_sft_unless_set_apart(tiny_cfg):
    """pipeline.sft_student / sft_teacher are pipeline.sft field by field: by default both SFT steps carry the
    same recipe (one cache key per base model, as before they were separate); one field set on the teacher's
    changes the teacher's step only, and pipeline.sft still changes both."""
    from hydra.utils import instantiate

    both = ["method=plad", "teacher=tiny", "pipeline.prepare.sft_student=${pipeline.sft_student}",
            "pipeline.prepare.sft_teacher=${pipeline.sft_teacher}"]  # fmt: skip
    chain = instantiate(tiny_cfg(*both).pipeline.prepare)
    shared = instantiate(tiny_cfg(*both[:2], "pipeline.prepare.sft_student=${pipeline.sft}").pipeline.prepare)
    assert chain.sft["student"].config == chain.sft["teacher"].config == shared.sft["student"].config
    apart = instantiate(tiny_cfg(*both, "pipeline.sft_teacher.max_steps=7", "pipeline.sft.lr=0.5").pipeline.prepare)
    student, teacher = apart.sft["student"].config, apart.sft["teacher"].config
    assert (student["max_steps"], teacher["max_steps"]) == (chain.sft["student"].config["max_steps"], 7)
    assert student["lr"] == teacher["lr"] == 0.5
