"""Derived shipped demo sets: ROUGE-L-scored pairs, graded lists with teacher scores, correctness pairs.

Both are built by :mod:`prefdistill.data.demo` from its rows (same prompts, same splits)
and written with it (``python -m prefdistill.data.demo``).

``demo_scored`` (for PLaD's margin loss, which needs s(y; x) for both responses):
    the ``demo`` pairs unchanged, plus ``chosen_score``/``rejected_score`` = ROUGE-L F1 of the
    response against the task's reference answer (SLiC's score function), computed with
    ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)`` and rounded to 4
    decimals. The reference is the correct answer the generator builds for the task, which
    is also ``chosen``, so ``chosen_score`` is 1.0; ``rejected_score`` measures how close the
    rejected answer is (a wrong value in the right sentence ~0.6-0.9, a rude or off-topic
    reply ~0), so the margin varies from pair to pair.

``demo_correctness`` (for a reward model that must tell right from wrong, not polite from rude): every
``demo`` row with an exact-match answer (the verifiable families), ``chosen`` its correct answer and
``rejected`` the generator's plausible wrong answer *in the same sentence* ("55 + 39 = 94." vs
"55 + 39 = 95."), also where the ``demo`` pair's rejected side is a rude reply; ids, ``family`` and
``answer`` as in ``demo``, so exact match and the splits line up. Only correctness tells the two apart.

``demo_lists`` (for listwise losses such as PAD): the first 200/40/40 prompts of the demo
train/validation/test splits whose task has a short answer form (every family but
``fact``), each with n=4 distinct responses of graded quality, in a seeded random order:

    level 0  correct and polite: an opener + the demo's chosen answer ("Sure! The capital of Japan is Tokyo.")
    level 1  correct but terse:  the bare answer ("Tokyo")
    level 2  plausible but wrong: the generator's wrong answer ("The capital of Japan is Brussels.")
    level 3  rude or off-topic:  one of ``demo_facts.RUDE + demo_facts.OFF_TOPIC``

``scores`` is a synthetic teacher score shaped like a mean per-token log-probability::

    score = TEACHER_MEAN[level] + u,  TEACHER_MEAN = (-0.5, -1.1, -1.9, -3.0),
    u ~ Uniform(-0.2, 0.2) from random.Random(seed + 1), rounded to 4 decimals.

The level means are at least 0.6 apart and the noise spans less than 0.4, so the scores
order every list exactly by quality level and never tie. Openers, level-3 replies, the
response order and the noise all come from that one ``random.Random(seed + 1)``, so the
``demo`` files stay byte-identical whatever these sets do.
"""

from __future__ import annotations

import random

from prefdistill.data import demo_facts as F

LIST_SIZES = {"train": 200, "validation": 40, "test": 40}
TEACHER_MEAN = (-0.5, -1.1, -1.9, -3.0)
NOISE = 0.2
OPENERS = ("Sure! ", "Happy to help! ", "Good question! ", "Of course! ")


def rouge_l(reference: str):
    """``score(response) -> ROUGE-L F1`` against ``reference`` (needs ``rouge_score``)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # pragma: no cover - rouge_score is in the `eval` extra
        raise ImportError("demo_scored needs rouge_score: pip install 'prefdistill[eval]'") from err
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return lambda response: round(scorer.score(reference, response)["rougeL"].fmeasure, 4)


def scored_splits(demo: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The ``demo`` pairs with ``chosen_score``/``rejected_score`` (ROUGE-L F1 vs the reference)."""
    out = {}
    for split, rows in demo.items():
        out[split] = []
        for row in rows:
            score = rouge_l(reference=row["chosen"])  # the task's correct answer
            out[split].append(
                {**row, "chosen_score": score(row["chosen"]), "rejected_score": score(row["rejected"])}
            )
    return out


def correctness_splits(tasks: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The ``demo_correctness`` pairs of ``demo.task_splits`` rows: correct vs plausible wrong, answered rows only."""
    return {
        split: [
            {"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["wrong"],
             "family": r["kind"], "answer": r["answer"]}
            for r in rows if r["answer"] is not None
        ]
        for split, rows in tasks.items()
    }  # fmt: skip


def graded_responses(row: dict, rng: random.Random) -> list[str]:
    """The four responses of a task row, best (level 0) to worst (level 3)."""
    return [
        rng.choice(OPENERS) + row["chosen"],
        row["terse"],
        row["wrong"],
        rng.choice(F.RUDE + F.OFF_TOPIC),
    ]


def teacher_score(level: int, rng: random.Random) -> float:
    return round(TEACHER_MEAN[level] + rng.uniform(-NOISE, NOISE), 4)


def list_splits(tasks: dict[str, list[dict]], seed: int) -> dict[str, list[dict]]:
    """``demo_lists``: ``{id, prompt, responses[4], scores[4]}`` rows (see the module docstring)."""
    rng = random.Random(seed + 1)
    out = {}
    for split, rows in tasks.items():
        chosen = [r for r in rows if r["terse"] is not None][: LIST_SIZES[split]]
        if len(chosen) < LIST_SIZES[split]:
            raise RuntimeError(f"demo_lists needs {LIST_SIZES[split]} {split} prompts, got {len(chosen)}")
        out[split] = []
        for row in chosen:
            responses = graded_responses(row, rng)
            if len(set(responses)) != len(responses):
                raise RuntimeError(f"demo_lists row {row['id']}: responses are not distinct: {responses}")
            scores = [teacher_score(level, rng) for level in range(len(responses))]
            order = list(range(len(responses)))
            rng.shuffle(order)
            out[split].append(
                {
                    "id": row["id"],
                    "prompt": row["prompt"],
                    "responses": [responses[j] for j in order],
                    "scores": [scores[j] for j in order],
                }
            )
    return out
