"""The one data chain every pipeline is: [SFT teacher] -> [SFT student] -> samples -> the method's step.

    chain = Chain(PladPairs(), sampler=Sampler(), sampling=SamplingParams(temperature=1.0, max_new_tokens=48),
                  sft_student=sft_step(data={...}), seed=0)           # configs/pipeline/*.yaml build this
    chain.stages(student_spec, teacher_spec)     # the stages it will run, the models each loads, known cache keys
    prepared = chain(student_spec, teacher_spec, PromptSource("shipped", "train"), cache_dir="~/.cache/prefdistill")
    prepared.path, prepared.student, prepared.teacher    # the training file (None: keep `data`), the specs to train

What every method shares lives here once: the student and the teacher, the optional SFT of each (stages
``sft-teacher``, ``sft-student``: the same recipe and base model give the same cached model, whichever
pipeline asked), the sampler (backend, batching, template), the sampling settings (``sampling`` is the
student's, ``teacher_sampling`` by default the same on seed + 1) and the seed. The method adds only its
:class:`~prefdistill.pipeline.steps.Step`, which names whose samples it reads and writes the training file:
PLaD pairs (``plad.PladPairs``, also DistiLLM-2's data), PAD lists (``pad.PadLists``), SeqKD records
(``seqkd.SeqKDRecords``). Without a step (``pipeline=sft_first``) the chain only fine-tunes and training
reads the configured data. Every stage is cached (``stages.py``); the log lists which ran and which were
reused. The student is sampled from its initial (SFT'd) snapshot, as PLaD and PAD do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefdistill.generation import PromptSet, PromptSource, SamplingParams
from prefdistill.pipeline.stages import StageResult, summarize
from prefdistill.pipeline.steps import (
    INHERIT,
    ROLES,
    ChainState,
    PlannedStage,
    Sampler,
    SFTStep,
    Step,
    data_key,
    finetuned,
    sample_key,
    sample_stage,
    sft_key,
    sft_spec,
    teacher_stream,
)

log = logging.getLogger("prefdistill.pipeline")


@dataclass
class Prepared:
    """What a chain produced: the jsonl for ``PreferenceDataModule(source="local", path=...)`` (None: no new
    data, train on the configured dataset), the (possibly SFT'd) model specs, every stage's result and the
    step's counters."""

    path: Path | None
    student: object
    teacher: object
    stages: list[StageResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def data_overrides(self, read_as: Mapping) -> dict:
        """Datamodule arguments that train on the prepared file (none: the chain made no data); ``read_as`` is
        the pipeline's ``data`` node (record type, held-out fraction) merged into them."""
        if self.path is None:
            return {}
        return {
            **dict(read_as),
            "source": "local",
            "path": str(self.path),
            "splits": {"train": "train", "validation": None, "test": None},
            "max_samples": None,
        }


class Chain:
    """Student, teacher, SFT, sampling and seed in one place, then the method's ``step`` (see the module)."""

    def __init__(
        self,
        step: Step | None = None,
        *,
        sampler: Sampler | None = None,
        sampling: SamplingParams | None = None,
        teacher_sampling: SamplingParams | None = None,
        sft_student: SFTStep | None = None,
        sft_teacher: SFTStep | None = None,
        seed: int = 0,
    ):
        if step is not None and step.samples and sampling is None:
            raise ValueError(
                f"the {step.name} step samples the models: set the chain's sampling (pipeline.prepare.sampling)"
            )
        self.step, self.sampler, self.seed = step, sampler or Sampler(), seed
        self.sampling = sampling
        self.teacher_sampling = teacher_sampling or (
            teacher_stream(sampling) if sampling is not None else None
        )
        self.sft = {"student": sft_student, "teacher": sft_teacher}

    @property
    def needs_teacher(self) -> bool:
        """Whether the chain reads a teacher (its step samples or scores one, or it fine-tunes one)."""
        return self.sft["teacher"] is not None or (self.step is not None and self.step.needs_teacher)

    def params(self, role: str) -> SamplingParams:
        """The sampling settings of ``role``'s samples (the step may adapt the chain's)."""
        return self.step.sampling(role, self.teacher_sampling if role == "teacher" else self.sampling)

    # -- plan ------------------------------------------------------------------------------------
    def stages(self, student, teacher, data: PromptSet | None = None) -> list[PlannedStage]:
        """Every stage the chain will run on these models, in order, with the models each loads and its cache
        key where known now (an SFT stage's always; a sample stage's given ``data`` and a model that is not
        an SFT'd copy; the step's when its inputs' are known). Nothing is loaded or run."""
        base = {"student": student, "teacher": teacher}
        planned = [
            PlannedStage(  # it trains the recipe's adapter (or the spec's own), as sft_finetune does
                f"sft-{role}", ((role, sft_spec(base[role], self.sft[role].config.get("lora", INHERIT))),),
                sft_key(base[role], self.sft[role]), trains=True,
            )  # fmt: skip
            for role in ROLES
            if self.sft[role] is not None and base[role] is not None
        ]
        if self.step is None:
            return planned
        known = {role: None if self.sft[role] is not None else base[role] for role in ROLES}
        state = ChainState(known, self.sampler, self.seed, data, base_models=base)
        dkey = data_key(data) if data is not None else None
        for role in self.step.samples:
            spec = known[role]
            key = (
                sample_key(spec, dkey, self.params(role), self.sampler) if spec is not None and dkey else None
            )
            stage = PlannedStage(f"samples-{role}", ((role, base[role]),), key)
            state.sample_folders[role] = stage.folder_name
            planned.append(stage)
        return planned + self.step.plan(state)

    # -- run -------------------------------------------------------------------------------------
    def __call__(
        self, student, teacher, source: PromptSource | None, *, cache_dir: str | os.PathLike
    ) -> Prepared:
        """Run (or reuse) every stage over ``source``'s prompts; returns :class:`Prepared`."""
        if teacher is None and self.needs_teacher:
            raise ValueError(
                "this method builds its data with a teacher: add teacher=<model config>, e.g. teacher=tiny"
            )
        models, stages = {"student": student, "teacher": teacher}, []
        for role in ROLES:  # the teacher first: as every chain always did (stage order in the logs)
            models[role], result = finetuned(role, models[role], self.sft[role], cache_dir)
            stages += [result] if result is not None else []
        path, stats = None, {}
        if self.step is not None:
            data = source.load()
            state = ChainState(models, self.sampler, self.seed, data, cache_dir)
            dkey = data_key(data)
            for role in self.step.samples:
                result = sample_stage(
                    role, models[role], data, dkey, self.params(role), self.sampler, cache_dir
                )
                state.samples[role], state.sample_folders[role] = result, result.path.name
                stages.append(result)
            stages += self.step.run(state)
            path, stats = stages[-1].path / self.step.output, stages[-1].info or {}
        log.info("pipeline stages:\n%s", summarize(stages))
        done = ", ".join(f"{stage.name} {stage.status}" for stage in stages)
        log.info("pipeline: %s -> %s %s", done, path or "the configured data", stats)
        return Prepared(path, models["student"], models["teacher"], stages, stats)
