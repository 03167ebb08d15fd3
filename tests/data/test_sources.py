"""Each hub schema (as hand-written fixture rows) maps to the right canonical records."""

from __future__ import annotations

import pytest

from prefdistill.data import DataError, ListRecord, PairRecord, SFTRecord, load_records
from prefdistill.data.records import RowError
from prefdistill.data.sources import hh_messages, hh_rlhf, split_hh
from prefdistill.data.templates import render_raw_prompt


def test_split_hh_keeps_prompt_up_to_last_assistant():
    text = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks."
    prompt, answer = split_hh(text, "chosen")
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    assert answer == "Fine, thanks."
    assert hh_messages(prompt, "chosen") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


def test_hh_prompt_round_trips_to_raw_transcript():
    text = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine."
    prompt, _ = split_hh(text, "chosen")
    assert render_raw_prompt(hh_messages(prompt, "chosen")) == prompt


def test_hh_mismatched_prompts_error():
    row = {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}
    with pytest.raises(RowError, match="different prompts"):
        hh_rlhf(row, 0)


def test_hh_fixture(fixtures):
    rows = load_records("hh_rlhf", "train", path=str(fixtures / "hh_rlhf_sample.jsonl"))
    assert [i for i, _ in rows] == [0, 1, 2]
    single, multi = rows[0][1], rows[1][1]
    assert single.prompt == [{"role": "user", "content": "What are some good ways to fall asleep faster?"}]
    assert single.rejected == "Just stay up until you pass out."
    assert [m["role"] for m in multi.prompt] == ["user", "assistant", "user"]
    assert multi.prompt[1]["content"].startswith("Of course!")
    assert (
        multi.chosen.startswith("For ten seven-year-olds")
        and multi.rejected == "Kids parties are a waste of money."
    )


def test_orca_fixture(fixtures):
    (_, plain), (_, with_system) = load_records("orca_dpo", "train", path=str(fixtures / "orca_sample.jsonl"))
    assert plain == PairRecord(
        "Translate to French: Good morning, how are you?",
        "Bonjour, comment allez-vous ?",
        "Buenos dias, como estas?",
        "0",
    )
    assert [m["role"] for m in with_system.prompt] == ["system", "user"]


def test_ultrafeedback_fixture(fixtures):
    path = str(fixtures / "ultrafeedback_sample.jsonl")
    pairs = load_records("ultrafeedback", "train", path=path)
    first = pairs[0][1]
    assert isinstance(first, PairRecord) and first.prompt == "Write a haiku about autumn leaves."
    assert first.chosen.startswith("Crimson leaves") and first.rejected.startswith("Leaves are falling")
    assert first.id == "a1f3"
    lists = load_records("ultrafeedback", "train", path=path, record_type="listwise")
    assert lists[1][1] == ListRecord(
        "Explain what a prime number is in one sentence.",
        [pairs[1][1].chosen, pairs[1][1].rejected],
        [9.0, 2.5],
        "b7c2",
    )


def test_tldr_fixture_strips_prefix(fixtures):
    (_, rec), _ = load_records("tldr", "train", path=str(fixtures / "tldr_sample.jsonl"))
    assert rec.prompt.endswith("\nTL;DR:")
    assert rec.chosen == "Roommate ignores our chore deal and notes didn't work; how do I raise it calmly?"
    assert rec.rejected == "I hate dishes."


def test_tldr_feedback_fixture_uses_choice(fixtures):
    (_, a), (_, b) = load_records("tldr_feedback", "train", path=str(fixtures / "tldr_feedback_sample.jsonl"))
    assert a.prompt.startswith("SUBREDDIT: r/work\n\nTITLE: Manager schedules") and a.prompt.endswith(
        "TL;DR:"
    )
    assert a.chosen.startswith("New manager") and a.rejected == "Manager is bad."
    assert b.chosen.startswith("Cat knocks") and b.rejected == "My cat is annoying." and b.id == "t3_def34"


def test_record_type_conversions(fixtures):
    path = str(fixtures / "orca_sample.jsonl")
    sft = load_records("orca_dpo", "train", path=path, record_type="sft")
    assert sft[0][1] == SFTRecord(
        "Translate to French: Good morning, how are you?", "Bonjour, comment allez-vous ?", "0"
    )
    lst = load_records("orca_dpo", "train", path=path, record_type="listwise")
    assert lst[0][1].scores == [1.0, 0.0]


def test_local_field_mapping(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"q": "Hi?", "good": "Hello.", "bad": "Go away."}\n')
    ((_, rec),) = load_records(
        "local", "train", path=str(f), fields={"prompt": "q", "chosen": "good", "rejected": "bad"}
    )
    assert rec == PairRecord("Hi?", "Hello.", "Go away.", "0")


def test_local_parquet(tmp_path):
    import pandas as pd

    f = tmp_path / "train.parquet"
    pd.DataFrame(
        {"prompt": ["a?", "b?"], "responses": [["x", "y", "z"]] * 2, "scores": [[1, 3, 2]] * 2}
    ).to_parquet(f)
    rows = load_records("local", "train", path=str(tmp_path), record_type="listwise")
    assert rows[1][1].responses == ["x", "y", "z"] and rows[1][1].scores == [1.0, 3.0, 2.0]
    best = load_records("local", "train", path=str(tmp_path), record_type="listwise")
    assert best[0][1].prompt == "a?"


def test_unknown_source_lists_known():
    with pytest.raises(DataError, match="known sources:.*hh_rlhf"):
        load_records("nope", "train")


def test_missing_hub_dataset_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="could not load dataset 'no-such-org/no-such-data'"):
        load_records("hh_rlhf", "train", path="no-such-org/no-such-data")
