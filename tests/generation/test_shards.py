"""Resumable shards: only missing shards run, stale temp files go, other settings are refused."""

from __future__ import annotations

import json

import pytest

from prefdistill.generation import SamplingParams, generate_to_shards, read_shards, responses_by_prompt
from prefdistill.generation.base import Completion
from prefdistill.generation.shards import MANIFEST, shard_path


class FakeGenerator:
    """Echoes ``<key>/<sample>`` and records which keys it was asked for."""

    model = tokenizer = None

    def __init__(self):
        self.calls: list[list[int]] = []

    def generate_completions(self, prompts, params, keys=None):
        self.calls.append(list(keys))
        return [[Completion(f"{k}/{j}", 1, "length") for j in range(params.n)] for k in keys]


PROMPTS = [f"prompt {i}" for i in range(7)]
PARAMS = SamplingParams(n=2)


def test_writes_one_record_per_prompt_and_sample(tmp_path):
    gen = FakeGenerator()
    generate_to_shards(gen, PROMPTS, tmp_path, PARAMS, shard_size=3, meta={"model": "fake"})
    records = read_shards(tmp_path)
    assert [(r["index"], r["sample"]) for r in records] == [(i, j) for i in range(7) for j in range(2)]
    assert responses_by_prompt(records)[4] == ["4/0", "4/1"]
    assert gen.calls == [[0, 1, 2], [3, 4, 5], [6]]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["complete"] and manifest["config"]["model"] == "fake"
    assert manifest["config"]["params"]["n"] == 2


def test_resume_runs_only_missing_shards_and_cleans_dead_temp_files(tmp_path):
    generate_to_shards(FakeGenerator(), PROMPTS, tmp_path, PARAMS, shard_size=3)
    shard_path(tmp_path, 1).unlink()  # as if killed while writing shard 1 ...
    stale = tmp_path / ".shard-00001.jsonl.tmp-999999999-abcdef12"
    stale.write_text('{"half": ')  # ... which left its temporary file behind
    kept = shard_path(tmp_path, 0).stat().st_mtime_ns
    gen = FakeGenerator()
    generate_to_shards(gen, PROMPTS, tmp_path, PARAMS, shard_size=3)
    assert gen.calls == [[3, 4, 5]]
    assert not stale.exists() and shard_path(tmp_path, 0).stat().st_mtime_ns == kept
    assert len(read_shards(tmp_path)) == 14


def test_finished_run_does_not_build_the_generator(tmp_path):
    generate_to_shards(FakeGenerator(), PROMPTS, tmp_path, PARAMS, shard_size=3)

    def factory():
        raise AssertionError("the model must not load when every shard exists")

    generate_to_shards(factory, PROMPTS, tmp_path, PARAMS, shard_size=3)


def test_other_settings_are_refused(tmp_path):
    generate_to_shards(FakeGenerator(), PROMPTS, tmp_path, PARAMS, shard_size=3, meta={"model": "a"})
    with pytest.raises(ValueError, match="other settings"):
        generate_to_shards(
            FakeGenerator(), PROMPTS, tmp_path, SamplingParams(n=3), shard_size=3, meta={"model": "a"}
        )
    with pytest.raises(ValueError, match="model"):
        generate_to_shards(FakeGenerator(), PROMPTS, tmp_path, PARAMS, shard_size=3, meta={"model": "b"})


def test_reading_an_unfinished_run_fails(tmp_path):
    generate_to_shards(FakeGenerator(), PROMPTS, tmp_path, PARAMS, shard_size=3)
    shard_path(tmp_path, 2).unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_shards(tmp_path)
