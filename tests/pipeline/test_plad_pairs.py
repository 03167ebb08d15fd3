"""PLaD pseudo pairs: teacher = chosen, student = rejected; degenerate pairs dropped and counted;
a seeded fraction r re-ordered by a scorer."""

from __future__ import annotations

import random

import pytest

from prefdistill.pipeline.pairs import build_plad_pairs

PROMPTS = ["p0", "p1", "p2", "p3", "p4", "p5"]
TEACHER = ["good answer", "", "same answer", "t", "a", "c"]
STUDENT = ["bad", "x", " same   answer ", "  ", "bbbbbb", "dd"]


def test_teacher_is_chosen_and_degenerate_pairs_are_counted():
    rows, stats = build_plad_pairs(PROMPTS, TEACHER, STUDENT)
    assert stats == {"pairs": 3, "dropped_empty": 2, "dropped_identical": 1, "rescored": 0}
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p0", "good answer", "bad"), ("p4", "a", "bbbbbb"), ("p5", "c", "dd"),
    ]  # fmt: skip
    assert {r["origin"] for r in rows} == {"pseudo"}


def test_a_fraction_is_reordered_by_the_scorer():
    """Scorer = response length. Kept pairs: (good answer|bad), (a|bbbbbb), (c|dd); r = 2/3 -> 2 pairs,
    the seeded sample of the 3 indices; a pair flips where the student's answer is longer."""
    seen = []

    def by_length(prompts, responses):
        seen.append(list(prompts))
        return [float(len(r)) for r in responses]

    rows, stats = build_plad_pairs(PROMPTS, TEACHER, STUDENT, scorer=by_length, real_ratio=2 / 3, seed=7)
    picked = sorted(random.Random(7).sample(range(3), 2))
    flips = {0: False, 1: True, 2: True}
    assert stats["rescored"] == 2 and stats["flipped"] == sum(flips[k] for k in picked)
    for k, row in enumerate(rows):
        assert row["origin"] == ("scored" if k in picked else "pseudo")
        if k in picked and flips[k]:
            assert len(row["chosen"]) > len(row["rejected"])
    assert len(seen) == 1 and len(seen[0]) == 4  # one batched call: chosen sides, then rejected sides


def test_ratio_one_reorders_all_and_ratio_needs_a_scorer():
    rows, stats = build_plad_pairs(
        PROMPTS, TEACHER, STUDENT, scorer=lambda p, r: [-len(x) for x in r], real_ratio=1.0
    )
    assert stats["rescored"] == 3 and stats["flipped"] == 1  # only (good answer|bad): 'bad' is shorter
    assert rows[0]["chosen"] == "bad"
    with pytest.raises(ValueError, match="scorer"):
        build_plad_pairs(PROMPTS, TEACHER, STUDENT, real_ratio=0.5)
