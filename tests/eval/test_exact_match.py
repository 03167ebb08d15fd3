"""Exact match: hand-made generations per family (right, wrong, both answers, extra text, number formats),
the shipped data's chosen answers all right and wrong answers all wrong, and the suite's metrics."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import demo
from prefdistill.eval import exact_match as EM
from prefdistill.eval.suites import EvalSuite

MUL = "What is 12 times 11?"
CONVERT = "Convert 5 meters to centimeters."


@pytest.mark.parametrize(
    ("output", "right"),
    [
        ("12 * 11 = 132.", True),
        ("The answer is 132", True),
        ("132", True),
        ("12 times 11 is equal to 132.", True),
        ("12 * 11 = 132. This is because 12 * 10 = 120 and 12 more is 132.", True),
        ("What is 12 times 11? 12 * 11 = 132", True),  # the echoed question is not an answer
        ("12 * 11 = 132.\n\nWhat is 5 + 3? 5 + 3 = 8.", True),  # an invented follow-up question
        ("one hundred thirty-two", False),  # only number words up to ninety-nine are read
        ("The answer is 132 (12 times 11).", True),
        ("12 * 11 = 121.", False),
        ("It is 132 or 121.", False),  # hedged
        ("12 * 11 = 121, no wait, 12 * 11 = 132.", True),  # the last assertion counts
        ("I cannot compute that.", False),
        ("", False),
    ],
)
def test_arithmetic(output, right):
    assert EM.is_correct("arith", output, "132", MUL) is right


@pytest.mark.parametrize(
    ("output", "answer", "right"),
    [
        ("5 meters is 500 centimeters.", "500", True),
        ("There are 100 centimeters in a meter, so 5 meters is 500 centimeters.", "500", True),
        (
            "5 meters contains 500 centimeters",
            "500",
            True,
        ),  # nothing asserted: first number not in the prompt
        ("1 meter = 100 centimeters.", "500", False),
        ("5 meters is 5 centimeters.", "500", False),
        ("30 kilometers is 30,000 meters.", "30000", True),  # thousands separator
        ("It is 500.0 cm.", "500", True),
        ("The word 'apple' has five letters.", "5", True),
        ("The word 'apple' has 6 letters.", "5", False),
    ],
)
def test_conversions_and_counting(output, answer, right):
    family = "letters" if "letters" in output else "convert"
    assert EM.is_correct(family, output, answer, CONVERT) is right


@pytest.mark.parametrize(
    ("family", "output", "answer", "prompt", "right"),
    [
        ("capital", "The capital of France is Paris.", "Paris", "", True),
        (
            "capital",
            "Sure! Paris is the capital of France. Berlin is the capital of Germany.",
            "Paris",
            "",
            True,
        ),
        ("capital", "PARIS", "Paris", "", True),
        ("capital", "Paris, not Berlin.", "Paris", "", False),  # names a rival capital
        ("capital", "The capital of France is Lyon.", "Paris", "", False),
        ("capital", "Parisian food is great.", "Paris", "", False),  # whole words only
        ("capital", "Bogotá.", "Bogota", "", True),  # accents
        ("capital", "The capital of Mexico is Mexico City.", "Mexico City", "", True),
        ("opposite", "The opposite of 'above' is 'below'.", "below", "Give the antonym of 'above'.", True),
        ("opposite", "The answer is 'below'.", "below", "Give the antonym of 'above'.", True),
        ("opposite", "The opposite of 'hot' is 'cold'.", "cold", "What is the opposite of 'hot'?", True),
        ("opposite", "It is 'cold' or 'dry'.", "cold", "What is the opposite of 'hot'?", False),
        ("opposite", "The opposite of 'hot' is 'warm'.", "cold", "What is the opposite of 'hot'?", False),
        ("reverse", "'apple' backwards is 'elppa'.", "elppa", "", True),
        ("reverse", "E-L-P-P-A", "elppa", "", True),
        ("reverse", "'apple' backwards is 'elpap'.", "elppa", "", False),
        ("first", "The first letter of 'apple' is 'a'.", "a", "", True),
        ("first", "The first letter of apple is A.", "a", "", True),
        ("first", "A", "a", "", True),
        ("first", "It is 'a' or 'b'.", "a", "", False),  # two letters asserted
        ("first", "The first letter of 'apple' is 'p'.", "a", "", False),
        ("first", "Apples are red.", "a", "", False),
    ],
)
def test_words_and_letters(family, output, answer, prompt, right):
    assert EM.is_correct(family, output, answer, prompt) is right


def test_a_message_list_prompt_is_graded_on_its_last_turn():
    prompt = [{"role": "user", "content": "Convert 5 meters to centimeters."}]
    metrics, _, per = EM.score(["convert"], ["500"], ["5 meters contains 500 centimeters"], [prompt])
    assert per == [True] and metrics["exact_match/overall"] == 100.0


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown family 'fact'"):
        EM.is_correct("fact", "Bees make honey.", "honey")


@pytest.mark.parametrize("split", list(demo.SPLIT_SIZES))
def test_shipped_chosen_answers_are_right_and_wrong_answers_wrong(split):
    """Every chosen response of a verifiable row grades right; every plausible wrong answer grades wrong."""
    rows = [r for r in demo.task_splits()[split] if r["answer"] is not None]
    assert len(rows) > 0.6 * demo.SPLIT_SIZES[split]
    for r in rows:
        assert EM.is_correct(r["kind"], r["chosen"], r["answer"], r["prompt"]), r
        assert not EM.is_correct(r["kind"], r["wrong"], r["answer"], r["prompt"]), r


def test_score_by_hand():
    families = ["arith", "arith", "capital", "fact"]
    answers = ["18", "24", "Paris", None]
    outputs = ["15 + 3 = 18.", "12 * 2 = 22.", "Paris.", "Bees make honey."]
    metrics, summary, per = EM.score(families, answers, outputs, [""] * 4, n_boot=200)
    assert per == [True, False, True, None]
    assert metrics["exact_match/overall"] == pytest.approx(200 / 3)  # 2 right of 3 verifiable
    assert metrics["exact_match/arith"] == 50.0 and metrics["exact_match/capital"] == 100.0
    assert metrics["exact_match/n"] == 3 and "exact_match/fact" not in metrics
    assert summary["capital"]["ci"] == [100.0, 100.0] and summary["arith"]["n"] == 2
    lo, hi = summary["overall"]["ci"]
    assert 0.0 <= lo < 200 / 3 < hi <= 100.0


def _suite(**data) -> EvalSuite:
    return EvalSuite(
        "demo", exact_match=True, rouge=False, data={"source": "shipped", "split": "test", **data}
    )


def test_suite_reads_the_answers_and_reports_per_family():
    suite = _suite(max_samples=30)
    examples = suite.load_examples()
    assert examples[0].id == "test-0000-arith" and (examples[0].family, examples[0].gold) == ("arith", "18")
    rows = {r["id"]: r for r in map(json.loads, (demo.ASSETS_DIR / "demo" / "test.jsonl").open())}
    chosen = [rows[ex.id]["chosen"] for ex in examples]
    metrics, details, per = suite.score(examples, chosen)
    verifiable = sum(rows[ex.id]["answer"] is not None for ex in examples)
    assert metrics["exact_match/overall"] == 100.0 and metrics["exact_match/n"] == verifiable
    assert set(details["exact_match"]) == {ex.family for ex in examples if ex.gold} | {"overall"}
    assert per["exact_match"].count(None) == len(examples) - verifiable
    wrong = ["I do not know."] * len(examples)
    assert suite.score(examples, wrong)[0]["exact_match/overall"] == 0.0


def test_answers_missing_from_the_data_are_a_clear_error(tmp_path):
    rows = [{"id": "a", "prompt": "Calculate 1 + 1.", "chosen": "2", "rejected": "3"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"test.jsonl: line 1: exact match needs a string 'family'"):
        _suite(source="local", path=str(tmp_path)).load_examples()
    rows[0].update(family="arith", answer="two")
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl: line 1: field 'answer': 'two' is not a number"):
        EM.load_truths(tmp_path / "test.jsonl")
    with pytest.raises(ValueError, match="exact_match reads the answers from a shipped or local"):
        _suite(source="tldr")._split_file({"source": "tldr"})
    with pytest.raises(ValueError, match="exact_match needs task 'pairs'"):
        EvalSuite("g", task="gsm8k", exact_match=True)


def test_with_answer_only_keeps_the_gradable_prompts_and_unknown_data_keys_are_refused():
    every, answered = _suite().load_examples(), _suite(with_answer_only=True).load_examples()
    assert [ex.id for ex in answered] == [ex.id for ex in every if ex.gold is not None]
    assert 0 < len(answered) < len(every) and all(ex.gold for ex in answered)
    assert len(_suite(with_answer_only=True, max_samples=5).load_examples()) == 5  # the limit counts kept rows
    with pytest.raises(ValueError, match=r"unknown data key\(s\) \['max_sample'\]"):
        _suite(max_sample=5)
    with pytest.raises(ValueError, match="with_answer_only .* needs exact_match: true"):
        EvalSuite("demo", data={"with_answer_only": True})
