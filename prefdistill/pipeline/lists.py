"""PAD scored lists: diverse subset of the student's samples, teacher scores, alpha mix.

Following EganGu/PAD ``data_gen/gen/{agg,prob_sl,prob}.py`` (spec section 4):

1. ``select_diverse``: from k samples keep n, greedily by max-min Levenshtein distance starting from
   sample 0 (ties: lowest index). Empty samples are dropped first; a prompt without n distinct
   non-empty samples is dropped (counted).
2. ``scoring.teacher_logps``: ``S_T(y|x)`` and ``A_T(y|x) = S_T / |y|`` over the response tokens (as
   training encodes them: chat template, end-of-turn token included).
3. ``mcq.mcq_list_scores``: the teacher's pairwise MCQ judgement, ``scores_mcq = log p_i``.
4. ``mix_scores``: ``r_T = alpha * A_T + (1 - alpha) * scores_mcq`` (released PAD config: alpha = 0).

``build_pad_lists`` writes rows ``{id, prompt, responses, scores, scores_mcq, scores_logp, scores_avglogp}``
that ``PreferenceDataModule(source="local", record_type="listwise")`` reads (``scores`` = r_T).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from prefdistill.data.records import Prompt
from prefdistill.pipeline.scoring import teacher_logps


def levenshtein(a: str, b: str) -> int:
    """Character edit distance; a row-vectorised DP (insertions become a running min)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    prev = cols.copy()
    for i, ch in enumerate(np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32), start=1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bv != ch))  # deletion, substitution
        prev = np.minimum.accumulate(cur - cols) + cols  # insertion: min_k<=j cur[k] + (j - k)
    return int(prev[-1])


def select_diverse(responses: Sequence[str], n: int) -> list[int]:
    """Indices of ``n`` responses picked greedily by max-min edit distance, starting from index 0."""
    if len(responses) <= n:
        return list(range(len(responses)))
    selected = [0]
    nearest = [levenshtein(responses[0], r) for r in responses]  # distance to the selected set
    while len(selected) < n:
        best = max((j for j in range(len(responses)) if j not in selected), key=lambda j: (nearest[j], -j))
        selected.append(best)
        nearest = [min(d, levenshtein(responses[best], r)) for d, r in zip(nearest, responses)]
    return selected


def mix_scores(avg_logps: Sequence[float], mcq: Sequence[float], alpha: float) -> list[float]:
    """PAD teacher reward ``alpha * A_T(y|x) + (1 - alpha) * scores_mcq(y)``."""
    return [alpha * a + (1.0 - alpha) * m for a, m in zip(avg_logps, mcq)]


def reduce_samples(samples: Sequence[str], n: int) -> list[str] | None:
    """Non-empty, distinct, diverse ``n`` of ``samples`` (stripped), or None when there are too few."""
    clean = [s.strip() for s in samples if s.strip()]
    if len(set(clean)) < n:
        return None
    unique = list(dict.fromkeys(clean))
    return [unique[i] for i in select_diverse(unique, n)]


def build_pad_lists(
    model, tokenizer, prompts: Sequence[Prompt], samples: Sequence[Sequence[str]], *,
    ids: Sequence[str] | None = None, n: int = 4, alpha: float = 0.0, template: str = "auto",
    batch_size: int = 8, mcq: dict | None = None, mcq_filter: bool = False,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Scored lists for PAD and counters ``{lists, dropped_too_few_distinct, dropped_mcq_filter}``.

    ``mcq`` holds keyword arguments of ``mcq_list_scores`` (``normalize``, ``both_orders``, ...).
    ``mcq_filter`` keeps only lists with some ``exp(scores_mcq) > 0.5`` and some ``<= 0.5`` (PAD's
    training-time filter).
    """
    from prefdistill.pipeline.mcq import mcq_list_scores

    stats: Counter = Counter()
    ids = [str(i) for i in range(len(prompts))] if ids is None else list(ids)
    kept = []
    for i, (prompt, draws) in enumerate(zip(prompts, samples)):
        chosen = reduce_samples(draws, n)
        if chosen is None:
            stats["dropped_too_few_distinct"] += 1
        else:
            kept.append((ids[i], prompt, chosen))
    flat_prompts = [p for _, p, rs in kept for _ in rs]
    flat_logps = teacher_logps(
        model, tokenizer, flat_prompts, [r for _, _, rs in kept for r in rs], template=template, batch_size=batch_size
    )  # fmt: skip
    mcq_scores = mcq_list_scores(
        model, tokenizer, [p for _, p, _ in kept], [rs for _, _, rs in kept],
        template=template, batch_size=batch_size, **(mcq or {}),
    )  # fmt: skip
    rows, pos = [], 0
    for (rid, prompt, responses), m in zip(kept, mcq_scores):
        logps = flat_logps[pos : pos + len(responses)]
        pos += len(responses)
        avg = [s / max(c, 1) for s, c in logps]
        wins = [math.exp(x) > 0.5 for x in m]
        if mcq_filter and (all(wins) or not any(wins)):
            stats["dropped_mcq_filter"] += 1
            continue
        rows.append({
            "id": rid, "prompt": prompt, "responses": responses, "scores": mix_scores(avg, m, alpha),
            "scores_mcq": m, "scores_logp": [s for s, _ in logps], "scores_avglogp": avg,
        })  # fmt: skip
    stats["lists"] = len(rows)
    return rows, dict(stats)
