"""PAD: max-min Levenshtein selection, MCQ probabilities and normalisation, alpha mix -- by hand."""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.pipeline.lists import levenshtein, mix_scores, reduce_samples, select_diverse
from prefdistill.pipeline.mcq import EPS, letter_probs, mcq_scores, pair_wins


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "abc", 0), ("café", "cafe", 1),
     ("abcdef", "azced", 3)],
)  # fmt: skip
def test_levenshtein(a, b, d):
    assert levenshtein(a, b) == levenshtein(b, a) == d


def test_max_min_selection_by_hand():
    """Start at 0 'aaaa'. Distances to it: aaab 1, bbbb 4, aabb 2, abbb 3 -> take bbbb (2).
    Nearest selected now: aaab min(1,3)=1, aabb min(2,2)=2, abbb min(3,1)=1 -> take aabb (3)."""
    responses = ["aaaa", "aaab", "bbbb", "aabb", "abbb"]
    assert select_diverse(responses, 3) == [0, 2, 3]
    assert select_diverse(responses, 4) == [0, 2, 3, 1]  # aaab and abbb both at 1: lower index wins
    assert select_diverse(responses[:2], 4) == [0, 1]


def test_reduce_drops_empty_and_needs_n_distinct():
    assert reduce_samples(["aaaa", " ", "aaaa ", "bbbb", "aabb"], 2) == ["aaaa", "bbbb"]
    assert reduce_samples(["x", "x", "", "y"], 3) is None


def test_letter_probs_sum_top_tokens_containing_the_letter(student_spec):
    """P(A) = p('A') + p(' A') (short tokens containing A), P(B) = p('B'); 'x' counts for neither."""
    from prefdistill.models import load_tokenizer

    tok = load_tokenizer(student_spec)
    ids = {s: tok.encode(s, add_special_tokens=False) for s in ("A", " A", "B", "x")}
    assert all(len(v) == 1 for v in ids.values()), ids
    logits = torch.full((1, len(tok)), -1e4)
    for s, p in {"A": 0.4, " A": 0.1, "B": 0.2, "x": 0.3}.items():
        logits[0, ids[s][0]] = math.log(p)
    ((pa, pb),) = letter_probs(logits, tok)
    assert pa == pytest.approx(0.5 + EPS, abs=1e-6) and pb == pytest.approx(0.2 + EPS, abs=1e-6)
    assert pair_wins(pa, pb) == pytest.approx((5 / 7, 2 / 7), abs=1e-6)
    assert pair_wins(pa, pb, normalize=False) == (pa, pb)


def test_mcq_scores_by_hand():
    """n=3. Normalised wins: 0 beats 1 with 0.75, 0 beats 2 with 0.25, 1 vs 2 even.
    p_0 = (0.75 + 0.25)/2 = 0.5, p_1 = (0.25 + 0.5)/2 = 0.375, p_2 = (0.75 + 0.5)/2 = 0.625."""
    wins = {}
    for (i, j), (pa, pb) in {(0, 1): (0.6, 0.2), (0, 2): (0.1, 0.3), (1, 2): (0.4, 0.4)}.items():
        wins[(i, j)], wins[(j, i)] = pair_wins(pa, pb)
    scores = mcq_scores(3, wins)
    assert [math.exp(s) for s in scores] == pytest.approx([0.5, 0.375, 0.625])
    assert sum(math.exp(s) for s in scores) == pytest.approx(3 / 2)  # normalised: n/2 in total


def test_alpha_mix():
    """alpha * A_T + (1 - alpha) * mcq: alpha=0.25, A_T=[-1, -2], mcq=[log .5, log .25]."""
    mixed = mix_scores([-1.0, -2.0], [math.log(0.5), math.log(0.25)], 0.25)
    assert mixed == pytest.approx([-0.25 + 0.75 * math.log(0.5), -0.5 + 0.75 * math.log(0.25)])
    assert mix_scores([-1.0], [-3.0], 0.0) == [-3.0] and mix_scores([-1.0], [-3.0], 1.0) == [-1.0]
