"""PLaD pairs with scores on every pair (the margin loss's s(y+), s(y-)): by hand, through the chain with a
reward-model-like scorer object whose stage joins the row's stages, and read back as scored batches."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from prefdistill.data import PreferenceDataModule
from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.models import load_tokenizer
from prefdistill.pipeline import Chain, PladPairs, Sampler, StageResult
from prefdistill.pipeline.pairs import build_plad_pairs
from prefdistill.utils.jsonl import read_jsonl

PROMPTS = ["p0", "p1", "p2", "p3"]
TEACHER = ["good answer", "", "a", "c"]
STUDENT = ["bad", "x", "bbbbbb", "dd"]


def by_length(prompts, responses):
    return [float(len(r)) for r in responses]


def test_score_all_writes_both_scores_on_every_pair():
    """Kept pairs (good answer|bad), (a|bbbbbb), (c|dd); score = length: 11|3, 1|6, 1|2. No pair flips."""
    rows, stats = build_plad_pairs(PROMPTS, TEACHER, STUDENT, scorer=by_length, score_all=True)
    assert [(r["chosen_score"], r["rejected_score"]) for r in rows] == [(11.0, 3.0), (1.0, 6.0), (1.0, 2.0)]
    assert [r["chosen"] for r in rows] == ["good answer", "a", "c"]  # teacher stays chosen
    assert stats == {"pairs": 3, "dropped_empty": 1, "rescored": 0, "scored": 3}
    assert {r["origin"] for r in rows} == {"pseudo"}


def test_score_all_with_reordering_keeps_scores_with_their_responses():
    """real_ratio 1: (a|bbbbbb) and (c|dd) flip; each score moves with its response."""
    rows, stats = build_plad_pairs(PROMPTS, TEACHER, STUDENT, scorer=by_length, real_ratio=1.0, score_all=True)
    assert [(r["chosen"], r["chosen_score"], r["rejected"], r["rejected_score"]) for r in rows] == [
        ("good answer", 11.0, "bad", 3.0), ("bbbbbb", 6.0, "a", 1.0), ("dd", 2.0, "c", 1.0),
    ]  # fmt: skip
    assert stats["flipped"] == 2 and stats["rescored"] == 3 and stats["scored"] == 3


def test_without_score_all_no_pair_carries_scores_and_score_all_needs_a_scorer():
    rows, _ = build_plad_pairs(PROMPTS, TEACHER, STUDENT, scorer=by_length, real_ratio=1.0)
    assert all("chosen_score" not in r for r in rows)
    with pytest.raises(ValueError, match="scorer"):
        build_plad_pairs(PROMPTS, TEACHER, STUDENT, score_all=True)


@dataclass
class LengthScorer:
    """Stands in for a reward model trained here: ``name``, ``score`` and the stage it came from."""

    stage: StageResult
    name: str = "rm:length"

    def score(self, prompts, responses, references=None):
        return [float(len(r)) for r in responses]


def test_chain_scores_every_pair_and_counts_the_scorer_stage(student_spec, teacher_spec, tmp_path):
    rm_stage = StageResult("reward-model", tmp_path / "stages" / "reward-model-x", "reused")
    scorer = LengthScorer(rm_stage)
    kw = dict(sampling=SamplingParams(temperature=1.0, max_new_tokens=6, seed=0), sampler=Sampler(shard_size=4))
    source = PromptSource("shipped", "train", limit=4)
    plain = Chain(PladPairs(scorer=scorer), **kw)(student_spec, teacher_spec, source, cache_dir=tmp_path)  # unused
    assert "reward-model" not in [s.name for s in plain.stages]
    assert all("chosen_score" not in row for row in read_jsonl(plain.path))
    scored = Chain(PladPairs(scorer=scorer, score_pairs=True), **kw)(student_spec, teacher_spec, source, cache_dir=tmp_path)
    assert [s.name for s in scored.stages] == ["samples-teacher", "samples-student", "reward-model", "plad-pairs"]
    assert scored.path != plain.path  # the pairs stage is keyed by score_pairs
    rows = read_jsonl(scored.path)
    assert rows and all(
        (r["chosen_score"], r["rejected_score"]) == (len(r["chosen"]), len(r["rejected"])) for r in rows
    )
    assert scored.stats["scored"] == len(rows)
    # the datamodule reads them as scored pairs: batches carry chosen_scores / rejected_scores
    dm = PreferenceDataModule(source="local", path=str(scored.path), batch_size=len(rows), val_fraction=0.0,
                              splits={"train": "train", "validation": None, "test": None})  # fmt: skip
    dm.connect(load_tokenizer(student_spec))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    got = sorted(zip(batch["chosen_scores"].tolist(), batch["rejected_scores"].tolist()))
    assert got == sorted((float(r["chosen_score"]), float(r["rejected_score"])) for r in rows)
