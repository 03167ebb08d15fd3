"""DistiLLM-2 data chain: [SFT teacher] -> [SFT student] -> teacher samples -> student samples -> pairs.

    prepared = prepare_distillm2_data(student_spec, teacher_spec, PromptSource("shipped", "train"),
                                      cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path))   # chosen = teacher, rejected = student

DistiLLM-2 (Ko et al., ICML 2025; ``jongwooko/distillm-2``: ``generate/generate_vllm.py`` samples one response
per prompt from the teacher and from the (SFT'd) student, ``generate/reformat.py`` pairs them as
``chosen`` = teacher, ``rejected`` = student) trains on one round of responses generated before
training, sampled at temperature 0.8, top-p 0.95 (that script's defaults). These are PLaD's cached
stages (:func:`~prefdistill.pipeline.plad.prepare_plad_data`: sampling stages keyed by model, prompts and
settings; pairs of the teacher's and the student's ``j``-th samples, empty or identical pairs dropped and
counted), with DistiLLM-2's sampling settings: a PLaD run and a DistiLLM-2 run share every stage whose
settings agree. Only text crosses from the sampling stages, so the pairs exist for any teacher; the
DistiLLM-2 loss itself then needs the teacher's token distributions in the student's vocabulary.
"""

from __future__ import annotations

import os

from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline.plad import Prepared, prepare_plad_data
from prefdistill.pipeline.steps import Sampler, SFTStep


def distillm2_sampling(seed: int | None = 0, max_new_tokens: int = 1024) -> SamplingParams:
    """The repository's generation settings: temperature 0.8, top-p 0.95, one response, 1024 new tokens."""
    return SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, n=1, seed=seed)


def prepare_distillm2_data(
    student,
    teacher,
    source: PromptSource,
    *,
    cache_dir: str | os.PathLike,
    sampler: Sampler | None = None,
    sampling: SamplingParams | None = None,
    teacher_sampling: SamplingParams | None = None,
    sft_student: SFTStep | None = None,
    sft_teacher: SFTStep | None = None,
    seed: int = 0,
) -> Prepared:
    """Run (or reuse) the chain; :class:`Prepared` with ``path`` = the pairs (chosen = teacher response).

    ``sampling`` (default :func:`distillm2_sampling`) is the student's; ``teacher_sampling`` defaults to
    the same settings on seed + 1 (independent draws, as PLaD's teacher stream).
    """
    return prepare_plad_data(
        student, teacher, source, cache_dir=cache_dir, sampler=sampler,
        sampling=sampling or distillm2_sampling(seed), teacher_sampling=teacher_sampling,
        sft_student=sft_student, sft_teacher=sft_teacher, seed=seed,
    )  # fmt: skip
