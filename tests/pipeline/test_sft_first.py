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


def test_an_sft_recipe_trains_its_own_adapter_and_keys_it(student_spec, tmp_path):
    """`lora` of an SFT recipe sets how the SFT trains apart from the run: full fine-tuning of a spec that
    carries an adapter (PLaD: full SFT, then LoRA distillation), an adapter for a spec without one; and a LoRA
    SFT and a full one of the same model are two cache entries (identity() leaves adapters out)."""
    import dataclasses

    from prefdistill.pipeline.sft import sft_step
    from prefdistill.pipeline.steps import sft_key

    seen = []
    adapter = {"r": 8, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    with_lora = dataclasses.replace(student_spec, lora=adapter)
    data = {"source": "shipped", "max_samples": 4, "max_length": 64, "max_prompt_length": 48}
    full = sft_step(data=data, max_steps=1, lora=None)
    inherit = sft_step(data=data, max_steps=1)
    assert "lora" not in inherit.config and full.config["lora"] is None
    assert sft_key(with_lora, inherit) != sft_key(student_spec, inherit)  # the spec's adapter is in the key
    assert sft_key(with_lora, full) == sft_key(student_spec, full)  # the recipe decides: full either way
    assert sft_key(student_spec, inherit) == sft_key(student_spec, SFTStep(None, dict(inherit.config)))

    def record(spec, out_dir):
        seen.append(spec.lora)
        from prefdistill.models import load_model, load_tokenizer, merge_and_save

        merge_and_save(load_model(spec, trainable=False), load_tokenizer(spec), out_dir)

    from prefdistill.pipeline.steps import sft_spec

    for step in (full, inherit):
        record(sft_spec(with_lora, step.config.get("lora", "inherit")), tmp_path / str(len(seen)))
    assert seen == [None, with_lora.lora]
    planned = Chain(sft_student=full).stages(with_lora, None)
    assert planned[0].models[0][1].lora is None  # preflight sizes the full fine-tuning the SFT will run
    with pytest.raises(ValueError, match="use 'inherit', null"):
        sft_step(data=data, lora="yes")


def test_a_full_fine_tuning_recipe_moves_weights_an_adapter_sft_leaves_alone(student_spec, tmp_path):
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from prefdistill.models import load_model
    from prefdistill.pipeline.sft import sft_step

    adapter = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    spec = dataclasses.replace(student_spec, lora=adapter)
    data = {"source": "shipped", "max_samples": 4, "max_length": 64, "max_prompt_length": 48}
    base = {k: v for k, v in load_model(student_spec, trainable=False).state_dict().items() if "embed" in k}
    for lora, moved in ((None, True), ("inherit", False)):
        out = tmp_path / str(lora)
        sft_step(data=data, max_steps=1, lr=0.05, batch_size=2, lora=lora).fn(spec, out)
        saved = load_file(str(out / "model.safetensors"))
        embed = next(k for k in saved if "embed" in k)
        same = torch.equal(saved[embed], base[next(k for k in base if k.endswith(embed.split("model.")[-1]))])
        assert same is not moved, (lora, embed)  # only full fine-tuning trains the embeddings
