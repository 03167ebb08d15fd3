"""The PLaD and PAD chains on the tiny model: outputs the data module reads; a re-run reuses every stage."""

from __future__ import annotations

import json

from prefdistill.data import load_records
from prefdistill.data.records import ListRecord, PairRecord
from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline import Sampler, SFTStep, prepare_pad_data, prepare_plad_data

SOURCE = PromptSource("shipped", "train", limit=4)
FAST = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)


def test_plad_chain_with_sft_then_reuse(student_spec, teacher_spec, tmp_path):
    trained = []

    def fake_sft(spec, out_dir):  # stands in for train.py's SFT: saves a plain HF folder
        from prefdistill.models import load_model, load_tokenizer, merge_and_save

        trained.append(spec.seed)
        merge_and_save(load_model(spec, trainable=False), load_tokenizer(spec), out_dir)

    kw = dict(cache_dir=tmp_path, sampling=FAST, sampler=Sampler(shard_size=2), real_ratio=0.5, scorer="teacher_likelihood",
              sft_student=SFTStep(fake_sft, {"steps": 1}))  # fmt: skip
    first = prepare_plad_data(student_spec, teacher_spec, SOURCE, **kw)
    assert [s.status for s in first.stages] == ["ran"] * 4
    assert [s.name for s in first.stages] == [
        "sft-student",
        "samples-teacher",
        "samples-student",
        "plad-pairs",
    ]
    assert first.student.name_or_path.endswith("/model") and trained == [0]
    rows = load_records("local", "train", path=str(first.path))
    assert len(rows) == first.stats["pairs"] > 0 and all(isinstance(r, PairRecord) for _, r in rows)
    assert first.stats["rescored"] == round(0.5 * first.stats["pairs"])

    again = prepare_plad_data(student_spec, teacher_spec, SOURCE, **kw)
    assert [s.status for s in again.stages] == ["reused"] * 4 and trained == [0]
    assert again.path == first.path


def test_pad_chain_lists_and_reuse(student_spec, teacher_spec, tmp_path):
    kw = dict(cache_dir=tmp_path, sampling=FAST, k=3, n=2, alpha=0.5, sampler=Sampler(shard_size=4))
    first = prepare_pad_data(student_spec, teacher_spec, SOURCE, **kw)
    assert [s.status for s in first.stages] == ["ran", "ran"]
    rows = load_records("local", "train", path=str(first.path), record_type="listwise")
    assert len(rows) == first.stats["lists"] > 0 and all(isinstance(r, ListRecord) for _, r in rows)
    raw = json.loads(first.path.read_text().splitlines()[0])
    assert len(raw["responses"]) == 2 and len(set(raw["responses"])) == 2
    expected = [0.5 * a + 0.5 * m for a, m in zip(raw["scores_avglogp"], raw["scores_mcq"])]
    assert raw["scores"] == expected
    assert [s.status for s in prepare_pad_data(student_spec, teacher_spec, SOURCE, **kw).stages] == [
        "reused"
    ] * 2
