"""PLaD's step: teacher sample = chosen, student sample = rejected (Zhang et al., ACL Findings 2024, sec. 5).

    chain = Chain(PladPairs(), sampling=SamplingParams(temperature=1.0, max_new_tokens=48, seed=0))
    prepared = chain(student_spec, teacher_spec, PromptSource("shipped", "train"), cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path))   # pairwise rows

The chain samples the (SFT'd) teacher and the initial (SFT'd) student; this step pairs the teacher's
``j``-th sample with the student's (``pairs.build_plad_pairs``: empty or identical pairs dropped and
counted) into stage ``plad-pairs``. DistiLLM-2's data (Ko et al., ICML 2025; ``jongwooko/distillm-2``
``generate/generate_vllm.py`` + ``reformat.py``: chosen = teacher, rejected = student, one response each,
T = 0.8, top-p 0.95) is this step with its sampling settings (``configs/pipeline/distillm2.yaml``): a PLaD
and a DistiLLM-2 run share every stage whose settings agree.

``real_ratio`` of the pairs are re-ordered by ``scorer`` (``"teacher_likelihood"``, ``"reward_model:<hf
id>"``, a callable ``(prompts, responses) -> scores`` or an object with that ``score`` method, such as a
reward model trained here); ``score_pairs`` writes the scorer's ``chosen_score``/``rejected_score`` on every
pair (PLaD's margin loss needs them). A scorer that is a stage's output (``scorer.stage``,
:mod:`~prefdistill.pipeline.reward_model`) runs before the pairs, and joins the chain's stages, when used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prefdistill.pipeline.pairs import build_plad_pairs
from prefdistill.pipeline.scoring import REWARD_MODEL_PREFIX, resolve_scorer, scorer_name
from prefdistill.pipeline.steps import ChainState, Step, read_samples
from prefdistill.utils.cache import hash_inputs
from prefdistill.utils.jsonl import write_jsonl

log = logging.getLogger("prefdistill.pipeline")


class PladPairs(Step):
    """Stage ``plad-pairs``: ``pairs.jsonl`` of teacher > student pseudo-preference pairs (see the module)."""

    name, output, samples = "plad-pairs", "pairs.jsonl", ("teacher", "student")

    def __init__(self, real_ratio: float = 0.0, scorer: str | Callable | object | None = None,
                 score_pairs: bool = False):  # fmt: skip
        self.real_ratio, self.scorer, self.score_pairs = real_ratio, scorer, score_pairs

    @property
    def uses_scorer(self) -> bool:
        return self.real_ratio > 0 or self.score_pairs

    def loads(self) -> tuple[str, ...]:
        return ("teacher",) if self.uses_scorer and self.scorer == "teacher_likelihood" else ()

    def models(self, state: ChainState) -> tuple:
        if self.uses_scorer and isinstance(self.scorer, str) and self.scorer.startswith(REWARD_MODEL_PREFIX):
            from prefdistill.models import ModelSpec

            return (("scorer", ModelSpec(self.scorer.removeprefix(REWARD_MODEL_PREFIX))),)
        if self._stage_scorer() and hasattr(
            self.scorer, "planned_stage"
        ):  # it scores with the model it trained
            return tuple(("scorer", spec) for _, spec in self.scorer.planned_stage().models)
        return super().models(state)

    def _stage_scorer(self) -> bool:
        """A used scorer that is a stage's output. Asked of its type and attributes: reading ``stage`` would
        run it (a reward model trained here trains when first used)."""
        has_stage = hasattr(type(self.scorer), "stage") or "stage" in getattr(self.scorer, "__dict__", {})
        return self.uses_scorer and has_stage

    def before(self, state: ChainState, *, planned: bool) -> list:
        if not self._stage_scorer():
            return []
        if planned:  # e.g. the reward-model stage, as its plan lists it
            plan = getattr(self.scorer, "planned_stage", None)
            return [plan()] if plan is not None else []
        return [self.scorer.stage]

    def key(self, state: ChainState) -> str | None:
        teacher, student = state.sample_folders.get("teacher"), state.sample_folders.get("student")
        unknown_scorer = getattr(self.scorer, "ready", True) is False  # a reward model not trained yet
        if teacher is None or student is None or unknown_scorer:
            return None
        scorer_model = state.model_key("teacher") if self.scorer == "teacher_likelihood" else None
        if self.scorer == "teacher_likelihood" and scorer_model is None:
            return None
        return hash_inputs({
            "teacher": teacher, "student": student, "real_ratio": self.real_ratio,
            "scorer": scorer_name(self.scorer), "scorer_model": scorer_model,
            "seed": state.seed, **({"score_pairs": True} if self.score_pairs else {}),
        })  # fmt: skip

    def description(self, state: ChainState) -> dict:
        return {"real_ratio": self.real_ratio, "scorer": scorer_name(self.scorer), "score_pairs": self.score_pairs,
                "seed": state.seed}  # fmt: skip

    def build(self, state: ChainState, folder: Path) -> dict:
        data = state.data
        teacher_draws, student_draws = (
            read_samples(state.samples["teacher"]),
            read_samples(state.samples["student"]),
        )
        prompts, ids, t_flat, s_flat = [], [], [], []
        for i, (ts, ss) in enumerate(zip(teacher_draws, student_draws)):
            for j in range(min(len(ts), len(ss))):
                prompts.append(data.prompts[i])
                ids.append(data.ids[i] if min(len(ts), len(ss)) == 1 else f"{data.ids[i]}-{j}")
                t_flat.append(ts[j])
                s_flat.append(ss[j])
        sampler = state.sampler
        score_fn = (
            resolve_scorer(self.scorer, state.models["teacher"], sampler.template, sampler.batch_size)
            if self.uses_scorer
            else None
        )
        rows, stats = build_plad_pairs(
            prompts, t_flat, s_flat, ids=ids, scorer=score_fn, real_ratio=self.real_ratio,
            score_all=self.score_pairs, seed=state.seed,
        )  # fmt: skip
        if not rows:
            raise ValueError(f"PLaD: every pair was degenerate ({stats}); nothing to train on")
        write_jsonl(folder / self.output, rows)
        log.info("PLaD pairs: %s", stats)
        return stats
