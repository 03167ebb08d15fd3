"""SeqKD's step (Kim & Rush 2016): the teacher's samples become the student's SFT records.

    chain = Chain(SeqKDRecords(), sampling=SamplingParams(temperature=1.0, max_new_tokens=48, seed=0))
    prepared = chain(student_spec, teacher_spec, PromptSource("shipped", "train"), cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path), record_type="sft")

The student is then fine-tuned (``sft`` loss: NLL) on the teacher's responses to the training prompts.
Only the teacher's text is used, so any teacher works (another tokenizer, a black box). The chain samples
the teacher as PLaD's does (its ``teacher_sampling``, by default the student's settings on seed + 1), so a
PLaD run and a SeqKD run on the same data share one cached teacher-sampling stage. Empty teacher
responses are dropped and counted; if every one is empty the step fails loudly. With ``n > 1`` every
sample becomes a training row.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefdistill.pipeline.steps import ChainState, Step, read_samples
from prefdistill.utils.cache import hash_inputs
from prefdistill.utils.jsonl import write_jsonl

log = logging.getLogger("prefdistill.pipeline")


class SeqKDRecords(Step):
    """Stage ``seqkd-records``: ``sft.jsonl`` rows ``{id, prompt, response}``, one per non-empty teacher sample."""

    name, output, samples = "seqkd-records", "sft.jsonl", ("teacher",)

    def key(self, state: ChainState) -> str | None:
        samples = state.sample_folders.get("teacher")
        return None if samples is None else hash_inputs({"teacher": samples, "format": 1})

    def description(self, state: ChainState) -> dict:
        return {"teacher_samples": state.sample_folders.get("teacher")}

    def build(self, state: ChainState, folder: Path) -> dict:
        data, rows, empty = state.data, [], 0
        for i, draws in enumerate(read_samples(state.samples["teacher"])):
            for j, response in enumerate(draws):
                if not response.strip():
                    empty += 1
                    continue
                rid = data.ids[i] if len(draws) == 1 else f"{data.ids[i]}-{j}"
                rows.append({"id": rid, "prompt": data.prompts[i], "response": response})
        stats = {"rows": len(rows), "empty_teacher_responses_dropped": empty}
        if not rows:
            raise ValueError(f"SeqKD: every teacher response was empty ({stats}); nothing to train on")
        write_jsonl(folder / self.output, rows)
        log.info("SeqKD rows: %s", stats)
        return stats
