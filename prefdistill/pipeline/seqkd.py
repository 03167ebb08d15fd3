"""SeqKD data chain (Kim & Rush 2016): [SFT teacher] -> [SFT student] -> teacher samples -> SFT records.

    prepared = prepare_seqkd_data(student_spec, teacher_spec, PromptSource("shipped", "train"),
                                  cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path), record_type="sft")

The student is then fine-tuned (``sft`` loss: NLL) on the teacher's responses to the training
prompts. Only the teacher's text is used, so any teacher works (another tokenizer, a black box).
By default the teacher is sampled with PLaD's teacher settings (temperature 1, seed + 1), so a
PLaD run and a SeqKD run on the same data share one cached teacher-sampling stage. Empty teacher
responses are dropped and counted; if every one is empty the chain fails loudly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline.plad import Prepared, write_jsonl
from prefdistill.pipeline.stages import Stage, summarize
from prefdistill.pipeline.steps import (
    Sampler,
    SFTStep,
    data_key,
    finetuned,
    read_samples,
    sample_stage,
    teacher_stream,
)
from prefdistill.utils.cache import hash_inputs

log = logging.getLogger("prefdistill.pipeline")


def prepare_seqkd_data(
    student,
    teacher,
    source: PromptSource,
    *,
    cache_dir: str | os.PathLike,
    sampler: Sampler | None = None,
    sampling: SamplingParams | None = None,
    teacher_sampling: SamplingParams | None = None,
    sft_teacher: SFTStep | None = None,
    sft_student: SFTStep | None = None,
    seed: int = 0,
) -> Prepared:
    """Run (or reuse) the SeqKD chain; returns :class:`Prepared` with ``path`` = ``sft.jsonl``.

    ``teacher_sampling`` defaults to ``sampling`` (default T=1, 128 new tokens) on seed + 1, the
    teacher stream of :func:`~prefdistill.pipeline.plad.prepare_plad_data`; with ``n > 1`` every
    sample becomes a training row.
    """
    sampling = sampling or SamplingParams(temperature=1.0, max_new_tokens=128, seed=seed)
    teacher_sampling = teacher_sampling or teacher_stream(sampling)
    teacher, sft_t = finetuned("teacher", teacher, sft_teacher, cache_dir)
    student, sft_s = finetuned("student", student, sft_student, cache_dir)  # the run starts from it
    stages = [r for r in (sft_t, sft_s) if r is not None]
    data = source.load()
    samples = sample_stage(
        "teacher", teacher, data, data_key(data), teacher_sampling, sampler or Sampler(), cache_dir
    )
    stages.append(samples)

    def build(folder: Path) -> dict:
        rows, empty = [], 0
        for i, draws in enumerate(read_samples(samples)):
            for j, response in enumerate(draws):
                if not response.strip():
                    empty += 1
                    continue
                rid = data.ids[i] if len(draws) == 1 else f"{data.ids[i]}-{j}"
                rows.append({"id": rid, "prompt": data.prompts[i], "response": response})
        stats = {"rows": len(rows), "empty_teacher_responses_dropped": empty}
        if not rows:
            raise ValueError(f"SeqKD: every teacher response was empty ({stats}); nothing to train on")
        write_jsonl(folder / "sft.jsonl", rows)
        log.info("SeqKD rows: %s", stats)
        return stats

    key = hash_inputs({"teacher": samples.path.name, "format": 1})
    records = Stage("seqkd-records", key, build, description={"teacher_samples": samples.path.name}).run(
        cache_dir
    )
    stages.append(records)
    log.info("SeqKD data stages:\n%s", summarize(stages))
    return Prepared(records.path / "sft.jsonl", student, teacher, stages, records.info or {})
