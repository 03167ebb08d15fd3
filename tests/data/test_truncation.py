"""The truncation policy: keep_end / keep_start, BOS kept, counts, and rows with no room."""

from __future__ import annotations

import pytest

from prefdistill.data import TruncationPolicy
from prefdistill.data.examples import build_examples, new_stats
from prefdistill.data.records import DataError, PairRecord, RowError
from prefdistill.data.templates import PromptEncoder
from prefdistill.data.truncation import truncate

BOS = 0
PROMPT = [BOS, 10, 11, 12, 13, 14, 15, 16, 17]  # 9 tokens


def test_keep_end_keeps_bos_and_last_tokens():
    prompt, _, cut, _ = truncate(PROMPT, [[1]], TruncationPolicy(20, 4, "keep_end"), BOS)
    assert cut and prompt == [BOS, 15, 16, 17]


def test_keep_start_keeps_first_tokens():
    prompt, _, cut, _ = truncate(PROMPT, [[1]], TruncationPolicy(20, 4, "keep_start"), BOS)
    assert cut and prompt == [BOS, 10, 11, 12]


def test_responses_fit_max_length_and_are_counted():
    prompt, responses, cut, n_cut = truncate(PROMPT, [[1] * 10, [2] * 3], TruncationPolicy(12, 8), BOS)
    assert len(prompt) == 8 and cut
    assert [len(r) for r in responses] == [4, 3] and n_cut == 1


def test_short_inputs_untouched():
    prompt, responses, cut, n_cut = truncate(PROMPT, [[1, 2]], TruncationPolicy(64, 32), BOS)
    assert prompt == PROMPT and responses == [[1, 2]] and not cut and n_cut == 0


def test_no_room_for_response():
    with pytest.raises(RowError, match="no room"):
        truncate(PROMPT, [[1]], TruncationPolicy(8, 8), BOS)


def test_bad_policy():
    with pytest.raises(ValueError, match="truncation_mode"):
        TruncationPolicy(8, 4, "middle")
    with pytest.raises(ValueError, match="max_prompt_length <= max_length"):
        TruncationPolicy(8, 16)


def test_build_examples_counts_and_skips(tok):
    long_prompt = "word " * 200
    rows = [
        (0, PairRecord("Hi", "Hello there.", "Go away.")),
        (1, PairRecord(long_prompt, "Yes. " * 50, "No.")),
    ]
    encoder = PromptEncoder(tok)
    stats = new_stats()
    examples = build_examples(rows, encoder, TruncationPolicy(64, 32), stats)
    assert stats["prompts_truncated"] == 1 and stats["responses_truncated"] == 1 and stats["rows_kept"] == 2
    assert len(examples[1]["prompt_ids"]) == 32 and examples[1]["prompt_ids"][0] == tok.bos_token_id
    assert len(examples[1]["prompt_ids"]) + len(examples[1]["chosen_ids"]) == 64

    tight = TruncationPolicy(32, 32)
    with pytest.raises(DataError, match=r"demo: row 1: field 'prompt': no room"):
        build_examples(rows, encoder, tight, new_stats(), label="demo")
    stats = new_stats()
    kept = build_examples(rows, encoder, tight, stats, on_bad_row="skip")
    assert [e["index"] for e in kept] == [0] and stats["rows_skipped"] == {"no_room_for_response": 1}
