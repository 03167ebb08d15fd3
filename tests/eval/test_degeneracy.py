"""Degeneracy metrics: hand-worked values, the collapsed outputs of the study, and the search guard."""

from __future__ import annotations

import pytest

from prefdistill.eval import degeneracy as DG
from prefdistill.eval import exact_match as EM
from prefdistill.eval.suites import EvalSuite, Example


def test_distinct2_counts_bigrams_over_all_outputs():
    # "a b a b": bigrams (a,b) (b,a) (a,b); "a b": (a,b) -> 4 bigrams, 2 distinct -> 50 %
    assert DG.distinct2(["a b a b", "A b"]) == pytest.approx(50.0)
    assert DG.distinct2(["one", ""]) != DG.distinct2(["one", ""])  # no bigram at all: nan


def test_repeat2_is_the_share_of_repeated_bigrams_within_an_output():
    # "9 = 9 = 9 = 9.": (9,=) (=,9) (9,=) (=,9) (9,=) (=,9.) -> 6 bigrams, 3 distinct -> 50 %
    assert DG.repeat2("9 = 9 = 9 = 9.") == pytest.approx(50.0)
    assert DG.repeat2("15 + 3 = 18.") == 0.0
    assert DG.repeat2("18.") == 0.0  # fewer than three words: nothing can repeat


def test_length_ratio_is_words_over_reference_words():
    assert DG.length_ratio(["a b c", "d"], ["a b", "c d"]) == pytest.approx(1.0)
    assert DG.length_ratio(["a b c d e f"], ["a b c"]) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("family", "output", "answer", "prompt", "expected"),
    [
        ("arith", "15 + 3 = 19.", "18", "Calculate 15 + 3.", True),  # wrong, but an answer
        ("arith", "15 + 3 = 18 or 19.", "18", "Calculate 15 + 3.", False),  # hedged
        ("arith", "Please calculate.", "18", "Calculate 15 + 3.", False),
        ("capital", "The capital of Japan is Brussels.", "Tokyo", "Name the capital city of Japan.", True),
        ("capital", "Japan is a country.", "Tokyo", "Name the capital city of Japan.", False),
        ("opposite", "The opposite of 'hot' is 'cold'.", "cold", "What is the opposite of 'hot'?", True),
        ("reverse", "Reversed, it is 'elpap'.", "elppa", "Spell 'apple' backwards.", True),
        ("reverse", "apple apple apple", "elppa", "Spell 'apple' backwards.", False),
        ("first", "The first letter is 'b'.", "a", "What is the first letter of 'apple'?", True),
        ("first", "Apples are fruit.", "a", "What is the first letter of 'apple'?", False),
    ],
)
def test_has_answer_accepts_right_or_wrong_answers_and_refuses_none(family, output, answer, prompt, expected):
    assert EM.has_answer(family, output, answer, prompt) is expected
    if EM.is_correct(family, output, answer, prompt):
        assert EM.has_answer(family, output, answer, prompt)  # a right answer is always an answer


def test_score_of_collapsed_outputs_against_live_ones():
    prompts = ["Calculate 15 + 3.", "Calculate 2 + 2.", "Tell me a fact."]
    refs = ["15 + 3 = 18.", "2 + 2 = 4.", "Cats purr."]
    families, answers = ["arith", "arith", "fact"], ["18", "4", None]
    live, per = DG.score(["15 + 3 = 18.", "2 + 2 = 5.", "Cats purr."], refs, families, answers, prompts)
    assert live["degeneracy/answer_rate"] == 100.0 and per["has_answer"] == [True, True, None]
    assert live["degeneracy/repeat2"] == 0.0 and live["degeneracy/length_ratio"] == pytest.approx(1.0)
    dead, _ = DG.score(["add add add add", "add add add add", "add add add add"], refs, families, answers, prompts)
    # "add add add add": 3 bigrams, 1 distinct -> repeat 66.7 %; 1 distinct of 9 bigrams overall -> 11.1 %
    assert dead["degeneracy/answer_rate"] == 0.0
    assert dead["degeneracy/repeat2"] == pytest.approx(200 / 3)
    assert dead["degeneracy/distinct2"] == pytest.approx(100 / 9)
    assert dead["degeneracy/length_ratio"] == pytest.approx(12 / (5 + 5 + 2))  # 3 x 4 words vs the references


def test_guard_ranks_a_collapsed_setting_below_every_live_one():
    guard = DG.DegeneracyGuard()
    live = {"eval/degeneracy/answer_rate": 95.0, "eval/degeneracy/repeat2": 2.0, "eval/degeneracy/length_ratio": 1.1}
    loops = {**live, "eval/degeneracy/repeat2": 50.0}
    assert guard.failures(live) == [] and guard.guarded_value(3.0, live) == 3.0
    assert guard.failures(loops) == ["repeat2=50 (needs <= 20)"]
    assert guard.guarded_value(40.0, loops) < guard.guarded_value(0.0, live)
    with pytest.raises(KeyError, match="degeneracy: true"):
        guard.failures({"eval/exact_match/overall": 3.0})


def _suite(**kw):
    data = {"source": "shipped", "split": "test", "with_answer_only": True}
    return EvalSuite("demo", exact_match=True, rouge=False, data=data, **kw)


def test_suite_reports_degeneracy_and_the_guarded_objective():
    suite = _suite(degeneracy=True, guard={"min_answer_rate": 80.0})
    examples = suite.load_examples()[:6]
    refs = [ex.reference for ex in examples]
    metrics, details, per = suite.score(examples, refs)
    assert metrics["degeneracy/answer_rate"] == 100.0 and metrics["degeneracy/length_ratio"] == pytest.approx(1.0)
    assert metrics["guarded/exact_match"] == metrics["exact_match/overall"] == 100.0
    assert details["guarded/failures"] == [] and per["has_answer"] == [True] * 6
    collapsed, details, _ = suite.score(examples, ["9 = 9 = 9 = 9 = 9 = 9"] * 6)
    assert collapsed["guarded/exact_match"] == collapsed["exact_match/overall"] - 1000
    assert any(f.startswith("repeat2=") for f in details["guarded/failures"])


def test_suite_refuses_a_guard_without_its_metrics():
    with pytest.raises(ValueError, match="needs exact_match: true and degeneracy: true"):
        _suite(guard={})
    with pytest.raises(TypeError):
        _suite(degeneracy=True, guard={"min_answers": 1.0})  # a typo'd bound is an error, not ignored


def test_examples_without_reference_are_left_out_of_the_length_ratio():
    ex = [Example("a", "Calculate 1 + 1.", "1 + 1 = 2.", gold="2", family="arith"), Example("b", "Hi.", None)]
    metrics, _ = DG.score(["1 + 1 = 2.", "a b c d e f g"], [e.reference for e in ex], [e.family for e in ex],
                          [e.gold for e in ex], [e.prompt for e in ex])  # fmt: skip
    assert metrics["degeneracy/length_ratio"] == pytest.approx(1.0)
