"""Alignment across tokenizers: spans by hand, spans of real renderings, vocabularies."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from prefdistill.data.alignment import (
    Group,
    align_spans,
    response_spans,
    shared_vocabulary,
    surface_strings,
    vocabulary_map,
)
from prefdistill.data.templates import PromptEncoder
from prefdistill.models.tiny_tokenizer import TINY_TOKENIZER_DIR, build

PROMPT, RESPONSE = "What is the capital of France?", "The capital of France is Paris."


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A second tiny tokenizer: the same BPE stopped at 400 tokens (splits more words)."""
    return AutoTokenizer.from_pretrained(build(tmp_path_factory.mktemp("tok") / "small", vocab_size=400))


# ------------------------------------------------------------------ groups, by hand
def test_a_split_word_is_one_unmatched_group_and_shared_boundaries_match():
    """ "Paris is": student "Par" "is" " is" (0,3) (3,5) (5,8); teacher "Paris" " is" (0,5) (5,8)."""
    groups = align_spans([(0, 3), (3, 5), (5, 8)], [(0, 5), (5, 8)])
    assert groups == [Group(0, 2, 0, 1), Group(2, 3, 1, 2)]
    assert [g.matched for g in groups] == [False, True]


def test_both_sides_split_differently_and_eos_pair_up_only_when_both_are_complete():
    """ "abcdef": student "ab" "cde" "f" <eos>; teacher "abc" "def" <eos>.

    Boundaries: student 2, 5, 6; teacher 3, 6 -> common: 6 only: one group of everything, then eos~eos.
    """
    student, teacher = [(0, 2), (2, 5), (5, 6), (6, 6)], [(0, 3), (3, 6), (6, 6)]
    groups = align_spans(student, teacher, student_eos=True, teacher_eos=True)
    assert groups == [Group(0, 3, 0, 2), Group(3, 4, 2, 3)]
    assert groups[-1].matched
    assert align_spans(student, teacher, student_eos=True, teacher_eos=False) == [Group(0, 3, 0, 2)]


def test_truncated_side_leaves_the_tail_unaligned_and_template_tokens_are_skipped():
    """Student truncated after "ab" "cd" (text "abcdef", 4 chars kept); teacher "a" "bcd" "ef" (0,1)(1,4)(4,6).
    A leading zero-width template token (0,0) on the teacher side takes no part."""
    groups = align_spans([(0, 2), (2, 4)], [(0, 0), (0, 1), (1, 4), (4, 6)])
    assert groups == [Group(0, 2, 1, 3)]
    assert align_spans([], [(0, 1)]) == []


# ------------------------------------------------------------------ spans of real renderings
@pytest.mark.parametrize("template", ["chat", "raw"])
def test_spans_cover_the_response_text_exactly_and_end_with_the_zero_width_eos(tiny, template):
    _, (ids,) = PromptEncoder(tiny, template).encode(PROMPT, [RESPONSE])
    spans = response_spans(tiny, template, PROMPT, RESPONSE, ids)
    assert len(spans) == len(ids)
    assert spans[-1] == (len(RESPONSE), len(RESPONSE)) and ids[-1] == tiny.eos_token_id
    text = [(a, b) for a, b in spans if b > a]
    assert "".join(RESPONSE[a:b] for a, b in text) == RESPONSE  # contiguous, in order, complete
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(text, text[1:]))
    assert response_spans(tiny, template, PROMPT, RESPONSE, ids[:5]) == spans[:5]  # truncated response
    assert response_spans(tiny, template, PROMPT, RESPONSE, [ids[1], ids[0]]) is None


def test_two_tokenizers_of_one_text_align_and_the_split_word_is_unmatched(tiny, small):
    ids = {}
    for name, tok in (("tiny", tiny), ("small", small)):
        ids[name] = PromptEncoder(tok, "chat").encode(PROMPT, [RESPONSE])[1][0]
    spans = [
        response_spans(t, "chat", PROMPT, RESPONSE, ids[n]) for n, t in (("tiny", tiny), ("small", small))
    ]
    groups = align_spans(*spans, student_eos=True, teacher_eos=True)
    unmatched = [g for g in groups if not g.matched]
    assert len(groups) == len(ids["tiny"]) and len(unmatched) == 1  # "ar" is one token only in tiny
    g = unmatched[0]
    assert tiny.decode(ids["tiny"][g.s0 : g.s1]) == small.decode(ids["small"][g.t0 : g.t1]) == "ar"


# ------------------------------------------------------------------ vocabularies
def test_vocabulary_map_pairs_tokens_of_the_same_text_one_to_one(tiny, small):
    mapping = vocabulary_map(tiny, small)
    assert len(mapping) == len(small)
    s_text, t_text = surface_strings(tiny), surface_strings(small)
    mapped = [(t, s) for t, s in enumerate(mapping) if s >= 0]
    assert len({s for _, s in mapped}) == len(mapped)  # injective
    assert all(t_text[t] == s_text[s] for t, s in mapped if t != small.eos_token_id)
    assert mapping[small.eos_token_id] == tiny.eos_token_id
    assert mapping[small.convert_tokens_to_ids("Ġis")] == tiny.convert_tokens_to_ids("Ġis")
    assert mapping[small.pad_token_id] == -1  # special tokens carry no text


def test_shared_vocabulary_accepts_padding_only_and_names_nothing_else(tiny, small, tmp_path):
    padded = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    padded.add_tokens([f"<|pad_{i}|>" for i in range(16)], special_tokens=True)
    assert shared_vocabulary(tiny, padded, len(tiny), len(padded)) == len(tiny)
    assert shared_vocabulary(tiny, tiny, len(tiny), len(tiny) + 8) == len(tiny)  # embedding rows only
    # the 400-token BPE agrees on its 400 ids, but the 624-token one has real tokens past them
    assert shared_vocabulary(tiny, small, len(tiny), len(small)) is None
