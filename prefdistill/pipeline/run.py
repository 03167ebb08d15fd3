"""Run the stages a method needs before training and say what to train on.

    prepared = run_pipeline(prepare, student_spec, teacher_spec, source, cache_dir=..., needs_teacher=True)
    prepared.student, prepared.teacher         # the specs to train with (e.g. the SFT'd student)
    data_overrides(prepared, read_as)          # the datamodule arguments that read the prepared file

``prepare`` is a ``configs/pipeline/*.yaml`` ``prepare`` node built by Hydra (``prepare_plad_data``,
``prepare_pad_data``, ...): ``prepare(student, teacher, source, cache_dir=...) -> Prepared``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from prefdistill.generation.shards import PromptSource
from prefdistill.pipeline.plad import Prepared

log = logging.getLogger("prefdistill.pipeline")


def run_pipeline(
    prepare: Callable[..., Prepared],
    student,
    teacher,
    source: PromptSource,
    *,
    cache_dir: str | os.PathLike,
    needs_teacher: bool = True,
) -> Prepared:
    """Run (or reuse) the cached stages of ``prepare`` over ``source``'s prompts."""
    if teacher is None and needs_teacher:
        raise ValueError(
            "this method builds its data with a teacher: add teacher=<model config>, e.g. teacher=tiny"
        )
    prepared = prepare(student, teacher, source, cache_dir=cache_dir)
    stages = ", ".join(f"{stage.name} {stage.status}" for stage in prepared.stages)
    log.info("pipeline: %s -> %s %s", stages, prepared.path or "the configured data", prepared.stats)
    return prepared


def data_overrides(prepared: Prepared, read_as: Mapping) -> dict:
    """Datamodule arguments that train on the prepared file (none: the pipeline made no data).

    ``read_as`` is the pipeline's ``data`` node (record type, held-out fraction) merged into them.
    """
    if prepared.path is None:
        return {}
    return {
        **dict(read_as),
        "source": "local",
        "path": str(prepared.path),
        "splits": {"train": "train", "validation": None, "test": None},
        "max_samples": None,
    }
