"""PLaD pseudo-preference pairs: teacher sample = chosen, student sample = rejected (spec section 5).

``build_plad_pairs`` drops and counts degenerate pairs (an empty side, or the two identical up to
whitespace). With ``real_ratio = r > 0`` a seeded fraction ``r`` of the kept pairs is re-ordered by a
``scorer`` -- the paper's "real preference pairs" (section 5.3): the higher-scored response becomes
``chosen`` (ties keep the teacher's). Rows are ``{id, prompt, chosen, rejected, origin}``, ``origin``
being ``pseudo`` or ``scored``; ``PreferenceDataModule(source="local")`` reads them as pairs.
With ``score_all`` every kept pair also carries ``chosen_score``/``rejected_score`` from the scorer (the
``s(y+)``, ``s(y-)`` of PLaD's margin calibration loss, Eq. 4; spec section 5), re-ordered pairs included.

A scorer maps ``(prompts, responses)`` to one float per response, higher = better
(:mod:`~prefdistill.pipeline.scoring`: the teacher's length-averaged log-likelihood, a reward model).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from prefdistill.data.records import Prompt
from prefdistill.pipeline.scoring import Scorer


def _same(a: str, b: str) -> bool:
    return a.split() == b.split()


def build_plad_pairs(
    prompts: Sequence[Prompt],
    teacher_responses: Sequence[str],
    student_responses: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    scorer: Scorer | None = None,
    real_ratio: float = 0.0,
    score_all: bool = False,
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """Pairs and counters ``{pairs, dropped_empty, dropped_identical, rescored, flipped[, scored]}``."""
    if not 0.0 <= real_ratio <= 1.0:
        raise ValueError(f"real_ratio must be in [0, 1], got {real_ratio}")
    if (real_ratio > 0 or score_all) and scorer is None:
        raise ValueError("real_ratio > 0 and score_all need a scorer (teacher likelihood or a reward model)")
    ids = [str(i) for i in range(len(prompts))] if ids is None else list(ids)
    stats: Counter = Counter()
    rows = []
    for rid, prompt, t, s in zip(ids, prompts, teacher_responses, student_responses):
        t, s = t.strip(), s.strip()
        if not t or not s:
            stats["dropped_empty"] += 1
        elif _same(t, s):
            stats["dropped_identical"] += 1
        else:
            rows.append({"id": rid, "prompt": prompt, "chosen": t, "rejected": s, "origin": "pseudo"})
    picked = sorted(random.Random(seed).sample(range(len(rows)), round(real_ratio * len(rows))))
    scored = list(range(len(rows))) if score_all else picked
    if scored:  # one batched call: every scored pair's chosen side, then its rejected side
        sides = [rows[k]["chosen"] for k in scored] + [rows[k]["rejected"] for k in scored]
        scores = scorer([rows[k]["prompt"] for k in scored] * 2, sides)
        pair_scores = {k: (float(scores[m]), float(scores[m + len(scored)])) for m, k in enumerate(scored)}
        for k in picked:
            row, (chosen_score, rejected_score) = rows[k], pair_scores[k]
            row["origin"] = "scored"
            if rejected_score > chosen_score:
                row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
                pair_scores[k] = (rejected_score, chosen_score)
                stats["flipped"] += 1
        if score_all:
            for k, (chosen_score, rejected_score) in pair_scores.items():
                rows[k].update(chosen_score=chosen_score, rejected_score=rejected_score)
            stats["scored"] = len(scored)
    stats["rescored"] = len(picked)
    stats["pairs"] = len(rows)
    return rows, {k: int(v) for k, v in stats.items()}
