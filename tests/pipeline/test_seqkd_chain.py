"""SeqKD chain on the tiny model: the teacher's samples become SFT rows; reuse; shared with PLaD."""

from __future__ import annotations

from prefdistill.data import load_records
from prefdistill.data.records import SFTRecord
from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline import Chain, PladPairs, SeqKDRecords
from prefdistill.pipeline.steps import read_samples

SOURCE = PromptSource("shipped", "train", limit=4)
FAST = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)


def test_seqkd_rows_are_the_teacher_samples_and_stages_are_reused(student_spec, teacher_spec, tmp_path):
    seqkd = Chain(SeqKDRecords(), sampling=FAST)
    planned = seqkd.stages(student_spec, teacher_spec, SOURCE.load())
    first = seqkd(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [p.folder_name for p in planned] == [s.path.name for s in first.stages]
    assert [(s.name, s.status) for s in first.stages] == [
        ("samples-teacher", "ran"),
        ("seqkd-records", "ran"),
    ]
    rows = load_records("local", "train", path=str(first.path), record_type="sft")
    assert all(isinstance(r, SFTRecord) for _, r in rows)
    teacher = [draws[0] for draws in read_samples(first.stages[0])]
    prompts = SOURCE.load().prompts
    kept = [(p, t) for p, t in zip(prompts, teacher) if t.strip()]
    assert [(r.prompt, r.response.strip()) for _, r in rows] == [(p, t.strip()) for p, t in kept]
    assert first.stats == {"rows": len(kept), "empty_teacher_responses_dropped": len(teacher) - len(kept)}
    again = seqkd(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [s.status for s in again.stages] == ["reused", "reused"] and again.path == first.path
    # PLaD with the same settings samples the teacher identically: the stage is shared
    plad = Chain(PladPairs(), sampling=FAST)(student_spec, teacher_spec, SOURCE, cache_dir=tmp_path)
    assert [(s.name, s.status) for s in plad.stages][0] == ("samples-teacher", "reused")
