"""The evaluation cache: a table's jobs generate the teacher's outputs once and score the references once;
anything that changes the result (model weights, sampling settings, prompts, responses) is a new entry."""

from __future__ import annotations

import pytest

from prefdistill.eval import runner
from prefdistill.eval.reward import RewardModel
from prefdistill.eval.suites import EvalSuite, Example
from prefdistill.models import ModelSpec

EXAMPLES = [Example(str(i), f"Calculate {i} + 1.", reference=f"{i} + 1 = {i + 1}.") for i in range(3)]


class CountingGenerator:
    built = 0

    def __init__(self):
        CountingGenerator.built += 1

    def generate(self, prompts, params):
        return [[f"{p} -> {CountingGenerator.built}"] for p in prompts]


def _suite(cache_dir, **kw) -> EvalSuite:
    return EvalSuite("demo", rouge=False, generation={"temperature": 0.0, "max_new_tokens": 8},
                     cache_dir=cache_dir and str(cache_dir), **kw)  # fmt: skip


def test_generations_are_reused_for_the_same_model_settings_and_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "build_generator", lambda spec, suite: CountingGenerator())
    CountingGenerator.built = 0
    spec, suite = ModelSpec("org/teacher"), _suite(tmp_path)
    first = runner.generate(spec, suite, EXAMPLES)
    assert runner.generate(spec, suite, EXAMPLES) == first and CountingGenerator.built == 1
    assert (tmp_path / "eval").is_dir()
    runner.generate(spec, suite, EXAMPLES[:2])  # other prompts
    runner.generate(ModelSpec("org/student"), suite, EXAMPLES)  # another model
    runner.generate(spec, _suite(tmp_path, batch_size=4), EXAMPLES)  # other padding
    longer = _suite(tmp_path)
    longer.generation = {**longer.generation, "max_new_tokens": 16}
    runner.generate(spec, longer, EXAMPLES)
    assert CountingGenerator.built == 5
    no_cache = _suite(None)
    for _ in range(2):
        runner.generate(spec, no_cache, EXAMPLES)
    assert CountingGenerator.built == 7


def test_a_local_model_rewritten_in_place_is_generated_again(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "build_generator", lambda spec, suite: CountingGenerator())
    CountingGenerator.built = 0
    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"a" * 8)
    suite = _suite(tmp_path / "cache")
    first = runner.generate(ModelSpec(str(folder)), suite, EXAMPLES)
    assert runner.generate(ModelSpec(str(folder)), suite, EXAMPLES) == first
    (folder / "model.safetensors").write_bytes(b"b" * 16)  # a re-run saved other weights there
    assert runner.generate(ModelSpec(str(folder)), suite, EXAMPLES) != first
    assert CountingGenerator.built == 2


class CountingScorer:
    """A deterministic scorer: the score is the response's length."""

    name, uses_reference = "len", False

    def __init__(self, identity):
        self.cache_identity, self.calls = identity, 0

    def score(self, prompts, responses, references=None):
        self.calls += 1
        return [float(len(r)) for r in responses]


def test_reference_and_teacher_scores_are_scored_once_per_scorer(tmp_path):
    suite = _suite(tmp_path)
    suite.reward = CountingScorer({"model": "rm-a"})
    teacher = ["aaaa", "b", "cc"]
    metrics, _, per = suite.score(EXAMPLES, ["a", "bb", "ccc"], teacher)
    assert suite.reward.calls == 3  # the outputs, the references, the teacher's outputs
    again, _, _ = suite.score(EXAMPLES, ["aaaaaaaaaaaaaaaaaaaa", "bb", "ccc"], teacher)  # another row
    assert suite.reward.calls == 4  # only the new outputs
    assert per["rm/teacher_score"] == [4.0, 1.0, 2.0]
    # by hand: teacher 4,1,2 vs outputs 20,2,3 -> the teacher wins none of 3
    assert again["rm/ts_win_rate"] == 0.0 and metrics["rm/ts_win_rate"] == pytest.approx(100 / 3)
    other = CountingScorer({"model": "rm-b"})  # another reward model: nothing reused
    suite.reward = other
    suite.score(EXAMPLES, ["a", "bb", "ccc"], teacher)
    assert other.calls == 3
    uncacheable = CountingScorer(None)  # e.g. a model object passed in: never cached
    suite.reward = uncacheable
    for _ in range(2):
        suite.score(EXAMPLES, ["a", "bb", "ccc"], teacher)
    assert uncacheable.calls == 6


def test_reward_model_cache_identity_tracks_its_folder_and_rendering(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"a" * 8)
    rm = RewardModel(str(tmp_path), input_format="chat")
    first = rm.cache_identity
    assert first == RewardModel(str(tmp_path), input_format="chat").cache_identity
    assert RewardModel(str(tmp_path), input_format="pair").cache_identity != first
    assert RewardModel(str(tmp_path), input_format="chat", max_length=64).cache_identity != first
    (tmp_path / "model.safetensors").write_bytes(b"b" * 9)
    assert rm.cache_identity != first
    assert RewardModel("x", model=object(), tokenizer=object()).cache_identity is None
