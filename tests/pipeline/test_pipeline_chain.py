"""The chain with PLaD's and PAD's steps on the tiny model: outputs the data module reads; a re-run reuses every
stage; the plan (``Chain.stages``) names the stages that run, with the cache keys of their folders."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import load_records
from prefdistill.data.records import ListRecord, PairRecord
from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline import Chain, PadLists, PladPairs, Sampler, SFTStep

SOURCE = PromptSource("shipped", "train", limit=4)
FAST = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)


def test_plad_chain_with_sft_then_reuse(student_spec, teacher_spec, tmp_path):
    trained = []

    def fake_sft(spec, out_dir):  # stands in for train.py's SFT: saves a plain HF folder
        from prefdistill.models import load_model, load_tokenizer, merge_and_save

        trained.append(spec.seed)
        merge_and_save(load_model(spec, trainable=False), load_tokenizer(spec), out_dir)

    chain = Chain(PladPairs(real_ratio=0.5, scorer="teacher_likelihood"), sampling=FAST, sampler=Sampler(shard_size=2),
                  sft_student=SFTStep(fake_sft, {"steps": 1}))  # fmt: skip
    planned = chain.stages(student_spec, teacher_spec, SOURCE.load())
    first = chain(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [s.status for s in first.stages] == ["ran"] * 4
    assert [s.name for s in first.stages] == [
        "sft-student",
        "samples-teacher",
        "samples-student",
        "plad-pairs",
    ]
    assert [p.name for p in planned] == [s.name for s in first.stages]
    # known before anything ran: the SFT stage's key and the teacher's samples' (its model is not fine-tuned);
    # the student's samples and the pairs are keyed by the SFT'd student, which does not exist yet
    assert [p.folder_name for p in planned] == [first.stages[0].path.name, first.stages[1].path.name, None, None]
    assert [(p.name, [role for role, _ in p.models], p.trains) for p in planned] == [
        ("sft-student", ["student"], True), ("samples-teacher", ["teacher"], False),
        ("samples-student", ["student"], False), ("plad-pairs", ["teacher"], False),  # the likelihood scorer
    ]  # fmt: skip
    assert first.student.name_or_path.endswith("/model") and trained == [0]
    rows = load_records("local", "train", path=str(first.path))
    assert len(rows) == first.stats["pairs"] > 0 and all(isinstance(r, PairRecord) for _, r in rows)
    assert first.stats["rescored"] == round(0.5 * first.stats["pairs"])

    again = chain(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [s.status for s in again.stages] == ["reused"] * 4 and trained == [0]
    assert again.path == first.path


def test_pad_chain_lists_and_reuse(student_spec, teacher_spec, tmp_path):
    chain = Chain(PadLists(k=3, n=2, alpha=0.5), sampling=FAST, sampler=Sampler(shard_size=4))
    planned = chain.stages(student_spec, teacher_spec, SOURCE.load())
    first = chain(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [s.status for s in first.stages] == ["ran", "ran"]
    assert [p.folder_name for p in planned] == [s.path.name for s in first.stages]  # every key known: no SFT
    assert [(p.name, [role for role, _ in p.models]) for p in planned] == [
        ("samples-student", ["student"]), ("pad-lists", ["teacher"])
    ]
    rows = load_records("local", "train", path=str(first.path), record_type="listwise")
    assert len(rows) == first.stats["lists"] > 0 and all(isinstance(r, ListRecord) for _, r in rows)
    raw = json.loads(first.path.read_text().splitlines()[0])
    assert len(raw["responses"]) == 2 and len(set(raw["responses"])) == 2
    expected = [0.5 * a + 0.5 * m for a, m in zip(raw["scores_avglogp"], raw["scores_mcq"])]
    assert raw["scores"] == expected
    assert [s.status for s in chain(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path).stages] == ["reused"] * 2


def test_sampling_settings_have_one_source_the_pipeline_file():
    """A step that samples needs the chain's sampling settings (configs/pipeline/*.yaml write them; the code has
    no second default to drift from them); a chain that only fine-tunes needs none, and needs a teacher only
    when it fine-tunes one."""
    with pytest.raises(ValueError, match="pipeline.prepare.sampling"):
        Chain(PladPairs())
    assert not Chain().needs_teacher and Chain(sft_teacher=SFTStep(print, {})).needs_teacher
    assert Chain(PadLists(), sampling=FAST).needs_teacher  # it scores with the teacher
    assert Chain(PadLists(k=3, n=2), sampling=FAST).params("student").n == 3  # k samples of the student
