"""Property-based test (hypothesis) of ``collate_lists``; ``collate_pairs`` has its own in test_collate.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdistill.data import collate_lists

PAD = 3
_ids = st.lists(st.integers(4, 500), min_size=1, max_size=10)


@st.composite
def list_examples(draw):
    """1-5 listwise examples sharing one list size n in 2..5."""
    n = draw(st.integers(2, 5))
    examples = []
    for index in draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=5, unique=True)):
        examples.append(
            {
                "prompt_ids": draw(_ids),
                "response_ids": draw(st.lists(_ids, min_size=n, max_size=n)),
                "scores": draw(st.lists(st.floats(-100, 100, width=32), min_size=n, max_size=n)),
                "index": index,
            }
        )
    return examples


@settings(max_examples=60, deadline=None, derandomize=True)
@given(list_examples())
def test_lists_property(examples):
    n = len(examples[0]["response_ids"])
    batch = collate_lists(examples, PAD)
    rows = [(ex["prompt_ids"], r) for ex in examples for r in ex["response_ids"]]  # example-major
    T = max(len(p) + len(r) for p, r in rows)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape == (len(examples) * n, T)
    assert ids.dtype == mask.dtype == labels.dtype == torch.long
    for row, (prompt, response) in enumerate(rows):
        p, total = len(prompt), len(prompt) + len(response)
        assert ids[row, :total].tolist() == prompt + response
        assert (ids[row, total:] == PAD).all()
        assert mask[row].tolist() == [1] * total + [0] * (T - total)
        assert (labels[row, :p] == -100).all() and (labels[row, total:] == -100).all()
        assert labels[row, p:total].tolist() == response
    assert batch["scores"].dtype == torch.float and batch["scores"].shape == (len(examples), n)
    assert batch["scores"].tolist() == [[float(torch.tensor(s)) for s in ex["scores"]] for ex in examples]
    assert batch["index"].tolist() == [ex["index"] for ex in examples]
    assert batch["list_size"] == n


@settings(max_examples=30, deadline=None, derandomize=True)
@given(list_examples(), st.data())
def test_lists_with_a_mismatched_size_raise(examples, data):
    bad = dict(examples[data.draw(st.integers(0, len(examples) - 1))])
    field = data.draw(st.sampled_from(["response_ids", "scores"]))
    bad[field] = bad[field][:-1]
    with pytest.raises(ValueError, match="list sizes"):
        collate_lists([*examples, bad], PAD)
