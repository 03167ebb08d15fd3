"""PLaD data chain: [SFT teacher] -> [SFT student] -> teacher samples -> student samples -> pairs.

    prepared = prepare_plad_data(student_spec, teacher_spec, PromptSource("shipped", "train"),
                                 cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path))   # pairwise rows
    policy_spec = prepared.student                                        # the SFT'd student, if any

Every step is a cached stage (``stages.py``): re-running with the same inputs reuses all of them, and
the log lists which ran and which were reused. The student is sampled from its initial (SFT)
snapshot, as in the paper.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline.pairs import (
    Scorer,
    build_plad_pairs,
    reward_model_scorer,
    teacher_likelihood_scorer,
)
from prefdistill.pipeline.stages import Stage, StageResult, summarize
from prefdistill.pipeline.steps import (
    Sampler,
    SFTStep,
    data_key,
    finetuned,
    model_key,
    read_samples,
    sample_stage,
    teacher_stream,
)
from prefdistill.utils.atomic import atomic_file
from prefdistill.utils.cache import hash_inputs

log = logging.getLogger("prefdistill.pipeline")


@dataclass
class Prepared:
    """What a data chain produced: the jsonl for ``PreferenceDataModule(source="local", path=...)``
    (None: no new data, train on the configured dataset), the (possibly SFT'd) model specs, every
    stage's result and the builder's counters."""

    path: Path | None
    student: object
    teacher: object
    stages: list[StageResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    """The rows :func:`write_jsonl` wrote."""
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _scorer(scorer, teacher, template: str, batch_size: int) -> Scorer | None:
    """The scoring function of ``scorer``: a name, a callable, or an object with ``score(prompts, responses)``
    (a :class:`~prefdistill.eval.reward.RewardModel`, e.g. a reward model trained here)."""
    if scorer is None or callable(scorer):
        return scorer
    if hasattr(scorer, "score"):
        return scorer.score
    if scorer == "teacher_likelihood":
        from prefdistill.models import load_model, load_tokenizer

        model, tokenizer = load_model(teacher, trainable=False), load_tokenizer(teacher)
        return teacher_likelihood_scorer(model, tokenizer, template=template, batch_size=batch_size)
    if scorer.startswith("reward_model:"):
        return reward_model_scorer(scorer.split(":", 1)[1], batch_size=batch_size)
    raise ValueError(
        f"unknown scorer {scorer!r}: use 'teacher_likelihood', 'reward_model:<hf id>', a callable or a RewardModel"
    )


def _scorer_name(scorer) -> str | None:
    """The scorer's part of the pairs' cache key: its name (a reward model's names its folder)."""
    if scorer is None or isinstance(scorer, str):
        return scorer
    return getattr(scorer, "name", None) or getattr(scorer, "__qualname__", "callable")


def prepare_plad_data(
    student,
    teacher,
    source: PromptSource,
    *,
    cache_dir: str | os.PathLike,
    sampler: Sampler | None = None,
    sampling: SamplingParams | None = None,
    teacher_sampling: SamplingParams | None = None,
    real_ratio: float = 0.0,
    scorer: str | Callable | object | None = None,
    score_pairs: bool = False,
    sft_student: SFTStep | None = None,
    sft_teacher: SFTStep | None = None,
    seed: int = 0,
) -> Prepared:
    """Run (or reuse) the PLaD chain; returns :class:`Prepared` with ``path`` = ``pairs.jsonl``.

    ``sampling`` (default: T=1, 128 new tokens, one sample) is the student's, ``teacher_sampling``
    (default: the same settings, seed + 1) the teacher's; sample ``j`` of the teacher is paired with sample ``j`` of
    the student. ``real_ratio`` of the pairs are re-ordered by ``scorer`` (``"teacher_likelihood"``,
    ``"reward_model:<hf id>"``, a callable ``(prompts, responses) -> scores`` or an object with that
    ``score`` method, such as a reward model trained here); ``score_pairs`` writes the scorer's
    ``chosen_score``/``rejected_score`` on every pair (PLaD's margin loss needs them). A scorer that is a
    stage's output (``scorer.stage``, :mod:`~prefdistill.pipeline.reward_model`) joins ``stages`` when used.
    """
    sampler = sampler or Sampler()
    sampling = sampling or SamplingParams(temperature=1.0, max_new_tokens=128, seed=seed)
    teacher_sampling = teacher_sampling or teacher_stream(sampling)
    stages: list[StageResult] = []
    teacher, sft_t = finetuned("teacher", teacher, sft_teacher, cache_dir)
    student, sft_s = finetuned("student", student, sft_student, cache_dir)
    stages += [r for r in (sft_t, sft_s) if r is not None]
    data = source.load()
    dkey = data_key(data)
    t_samples = sample_stage("teacher", teacher, data, dkey, teacher_sampling, sampler, cache_dir)
    s_samples = sample_stage("student", student, data, dkey, sampling, sampler, cache_dir)
    stages += [t_samples, s_samples]
    uses_scorer = real_ratio > 0 or score_pairs
    scorer_name = _scorer_name(scorer)
    if uses_scorer and getattr(scorer, "stage", None) is not None:
        stages.append(scorer.stage)  # e.g. the reward-model stage: this row needed it
    key = hash_inputs({
        "teacher": t_samples.path.name, "student": s_samples.path.name, "real_ratio": real_ratio,
        "scorer": scorer_name, "scorer_model": model_key(teacher) if scorer == "teacher_likelihood" else None,
        "seed": seed, **({"score_pairs": True} if score_pairs else {}),
    })  # fmt: skip

    def build(folder: Path) -> dict:
        teacher_draws, student_draws = read_samples(t_samples), read_samples(s_samples)
        prompts, ids, t_flat, s_flat = [], [], [], []
        for i, (ts, ss) in enumerate(zip(teacher_draws, student_draws)):
            for j in range(min(len(ts), len(ss))):
                prompts.append(data.prompts[i])
                ids.append(data.ids[i] if min(len(ts), len(ss)) == 1 else f"{data.ids[i]}-{j}")
                t_flat.append(ts[j])
                s_flat.append(ss[j])
        score_fn = _scorer(scorer, teacher, sampler.template, sampler.batch_size) if uses_scorer else None
        rows, stats = build_plad_pairs(
            prompts, t_flat, s_flat, ids=ids, scorer=score_fn, real_ratio=real_ratio, score_all=score_pairs,
            seed=seed,
        )  # fmt: skip
        if not rows:
            raise ValueError(f"PLaD: every pair was degenerate ({stats}); nothing to train on")
        write_jsonl(folder / "pairs.jsonl", rows)
        log.info("PLaD pairs: %s", stats)
        return stats

    desc = {"real_ratio": real_ratio, "scorer": scorer_name, "score_pairs": score_pairs, "seed": seed}
    pairs = Stage("plad-pairs", key, build, description=desc).run(cache_dir)
    stages.append(pairs)
    log.info("PLaD data stages:\n%s", summarize(stages))
    return Prepared(pairs.path / "pairs.jsonl", student, teacher, stages, pairs.info or {})
