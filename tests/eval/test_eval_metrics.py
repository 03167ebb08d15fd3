"""ROUGE, word count, GSM8K extraction (ZeroEval style) and win-rate statistics, worked by hand."""

from __future__ import annotations

import pytest

from prefdistill.eval import metrics as M


def test_word_count_splits_on_any_whitespace():
    assert M.word_count("Hello,  world!\n foo") == 3
    assert M.word_count("   ") == 0


def test_rouge_hand_worked():
    """ref "the cat sat on the mat", pred "the cat lay on the mat" (6 tokens each):
    unigrams: the x2, cat, on, mat overlap = 5 -> P = R = 5/6 -> F = 83.33;
    bigrams: "the cat", "on the", "the mat" overlap 3 of 5 -> F = 60;
    LCS "the cat on the mat" = 5 -> F = 83.33."""
    scores = M.rouge(["the cat lay on the mat"], ["the cat sat on the mat"])
    assert scores["rouge1"][0] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"][0] == pytest.approx(60.0)
    assert scores["rougeL"][0] == pytest.approx(100 * 5 / 6)


def test_rouge_uses_stemming_and_lowercase():
    """Porter: cats -> cat, running/runs -> run, so the stemmed unigrams match exactly."""
    scores = M.rouge(["Cats running"], ["cat runs"])
    assert scores["rouge1"][0] == pytest.approx(100.0)
    assert M.rouge(["dog"], ["cat"])["rougeL"][0] == 0.0


def test_outcomes_ties_count_half_and_win_rate():
    out = M.outcomes([1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 4.0, 0.0])
    assert out == [0.5, 1.0, 0.0, 0.5]
    summary = M.win_rate(out, seed=0)
    assert summary["win_rate"] == pytest.approx(50.0)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (1, 2, 1, 4)
    lo, hi = summary["ci"]
    assert 0.0 <= lo <= 50.0 <= hi <= 100.0


def test_bootstrap_ci_is_seeded_and_degenerate_when_constant():
    x = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0]
    assert M.bootstrap_ci(x, seed=3) == M.bootstrap_ci(x, seed=3)
    assert M.bootstrap_ci(x, seed=3) != M.bootstrap_ci(x, seed=4)
    assert M.win_rate([1.0] * 5)["ci"] == [100.0, 100.0]
    assert M.win_rate([])["n"] == 0


@pytest.mark.parametrize(
    "output, gold, correct, how",
    [
        ('Sure.\n```json\n{"reasoning": "2 + 2 = 4", "answer": "4"}\n```', "4", True, "json"),
        ('{"reasoning": "sum", "answer": "$1,234.00"}', "1,234", True, "json"),
        ('{"reasoning": "sum", "answer": 17}', "18", False, "json"),
        ('{"reasoning": "he said "hi" twice", "answer": "18"}', "18", True, "loose_json"),  # invalid JSON
        ("reasoning...\nanswer: 7 apples", "7", True, "loose_json"),
        ('{"answer": "3/4"}', "0.75", True, "json"),  # fractions are evaluated
        ("So the final answer is $42.", "42", True, "answer_is"),
        ("Adding up gives\n#### 72", "72", True, "hashes"),
        ("Therefore \\boxed{12}.", "12", True, "boxed"),
        ("I do not know.", "5", False, "none"),
    ],
)
def test_gsm8k_extraction(output, gold, correct, how):
    assert M.gsm8k_correct(output, gold) == (correct, how)


def test_gsm8k_gold_and_first_number():
    assert M.gsm8k_gold("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    with pytest.raises(ValueError):
        M.gsm8k_gold("no marker")
    assert M.first_number(M.sanitize("-1,000.5 dollars")) == -1000.5
    assert M.first_json_object('x {bad} {"a": 1} {"b": 2}') == {"a": 1}
