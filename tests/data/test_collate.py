"""collate_pairs / collate_lists: shapes, right padding, labels masked exactly on prompt + pad."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdistill.data import collate_lists, collate_pairs

PAD = 3


def _ex(p, c, r=None, index=0):
    ex = {"prompt_ids": list(range(10, 10 + p)), "chosen_ids": list(range(100, 100 + c)), "index": index}
    if r is not None:
        ex["rejected_ids"] = list(range(200, 200 + r))
    return ex


def test_pairs_worked_example():
    batch = collate_pairs([_ex(2, 1, 3, index=5), _ex(1, 2, 1, index=7)], PAD)
    assert set(batch) == {
        "chosen_input_ids", "chosen_attention_mask", "chosen_labels",
        "rejected_input_ids", "rejected_attention_mask", "rejected_labels", "index",
    }  # fmt: skip
    # T = max(2 + 3, 1 + 2, ...) = 5, shared by chosen and rejected
    assert batch["chosen_input_ids"].tolist() == [[10, 11, 100, PAD, PAD], [10, 100, 101, PAD, PAD]]
    assert batch["chosen_labels"].tolist() == [[-100, -100, 100, -100, -100], [-100, 100, 101, -100, -100]]
    assert batch["chosen_attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert batch["rejected_labels"].tolist() == [[-100, -100, 200, 201, 202], [-100, 200, -100, -100, -100]]
    assert batch["index"].tolist() == [5, 7]
    assert all(v.dtype == torch.long for v in batch.values())


def test_sft_has_only_chosen_keys():
    batch = collate_pairs([_ex(2, 2), _ex(3, 1)], PAD)
    assert set(batch) == {"chosen_input_ids", "chosen_attention_mask", "chosen_labels", "index"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=6)
)
def test_pairs_property(lengths):
    examples = [_ex(p, c, r, index=i) for i, (p, c, r) in enumerate(lengths)]
    batch = collate_pairs(examples, PAD)
    T = max(p + max(c, r) for p, c, r in lengths)
    for side, col in (("chosen", 1), ("rejected", 2)):
        ids, mask, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        assert ids.shape == mask.shape == labels.shape == (len(lengths), T)
        for b, lens in enumerate(lengths):
            p, n = lens[0], lens[col]
            assert mask[b].tolist() == [1] * (p + n) + [0] * (T - p - n)
            assert (labels[b, :p] == -100).all() and (labels[b, p + n :] == -100).all()
            assert labels[b, p : p + n].tolist() == ids[b, p : p + n].tolist() == examples[b][f"{side}_ids"]
            assert (ids[b, p + n :] == PAD).all()


def test_lists_shapes():
    examples = [
        {"prompt_ids": [1, 2], "response_ids": [[5], [6, 7], [8]], "scores": [0.1, 0.9, 0.5], "index": 0},
        {"prompt_ids": [1], "response_ids": [[5, 5, 5], [6], [7]], "scores": [1, 2, 3], "index": 4},
    ]
    batch = collate_lists(examples, PAD)
    assert batch["input_ids"].shape == batch["labels"].shape == (6, 4)
    assert batch["scores"].shape == (2, 3) and batch["scores"].dtype == torch.float
    assert batch["list_size"] == 3 and batch["index"].tolist() == [0, 4]
    assert batch["input_ids"][1].tolist() == [1, 2, 6, 7] and batch["labels"][1].tolist() == [
        -100,
        -100,
        6,
        7,
    ]
    assert batch["input_ids"][3].tolist() == [1, 5, 5, 5]


def test_lists_reject_mixed_sizes():
    examples = [
        {"prompt_ids": [1], "response_ids": [[5], [6]], "scores": [0, 1], "index": 0},
        {"prompt_ids": [1], "response_ids": [[5], [6], [7]], "scores": [0, 1, 2], "index": 1},
    ]
    with pytest.raises(ValueError, match="list sizes"):
        collate_lists(examples, PAD)
