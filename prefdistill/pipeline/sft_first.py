"""SFT first: fine-tune the policy on the configured data's chosen responses, then train the loss from it.

The DPO recipe (Rafailov et al. 2023): supervised fine-tuning on the preferred responses, then DPO
starting from the SFT model with the SFT model as the reference. The SFT is a cached stage keyed by the
base model and the recipe, so every run of a sweep reuses it; its name (``sft-student``) and the
recipe of ``configs/pipeline/sft_first.yaml`` are those of the PLaD/PAD/SeqKD chains, so a run of
those on the same model and data shares it too. ``sft_teacher`` likewise fine-tunes the teacher
(stage ``sft-teacher``), for distillation from an SFT'd teacher on the configured data.

    prepared = prepare_sft_first(policy_spec, None, source, cache_dir="~/.cache/prefdistill",
                                 sft=sft_step(data={...}, max_steps=100, lr=1e-4))
    policy_spec = prepared.student     # the SFT'd policy (also the reference: module.reference=null)
    prepared.path is None              # no new data: train on the configured dataset
"""

from __future__ import annotations

import logging
import os

from prefdistill.pipeline.plad import Prepared
from prefdistill.pipeline.stages import summarize
from prefdistill.pipeline.steps import SFTStep, finetuned

log = logging.getLogger("prefdistill.pipeline")


def prepare_sft_first(
    student,
    teacher,
    source=None,
    *,
    cache_dir: str | os.PathLike,
    sft: SFTStep | None,
    sft_teacher: SFTStep | None = None,
) -> Prepared:
    """Run (or reuse) the SFT stage of ``student`` (and of ``teacher`` with ``sft_teacher``); returns
    :class:`Prepared` with ``path=None``. ``source`` (the training prompts) is unused: the SFT data is
    part of each recipe. ``teacher`` may be None unless ``sft_teacher`` is given."""
    if sft_teacher is not None and teacher is None:
        raise ValueError("sft_teacher fine-tunes the teacher: add teacher=<model config>")
    teacher, sft_t = finetuned("teacher", teacher, sft_teacher, cache_dir)
    student, sft_s = finetuned("student", student, sft, cache_dir)
    stages = [r for r in (sft_t, sft_s) if r is not None]
    if stages:
        log.info("SFT-first stages:\n%s", summarize(stages))
    return Prepared(None, student, teacher, stages, {})
