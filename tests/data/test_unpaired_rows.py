"""Unpaired rows {prompt, completion, label}: reading, bad rows, data.unpair, KL partners, collation."""

from __future__ import annotations

import json

import pytest
import torch

from prefdistill.data import DataError, PreferenceDataModule, load_records
from prefdistill.data.collate import (
    IGNORE_INDEX,
    add_kl_completions,
    as_pair_batch,
    collate_unpaired,
    kl_partners,
    unpair_examples,
)
from prefdistill.data.records import UnpairedRecord

GOOD = {"prompt": "Hi?", "completion": "Hello.", "label": True}
BAD = {"prompt": "Name a fruit.", "completion": "Go away.", "label": False}


def _write(tmp_path, rows, name="feedback.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_an_unpaired_file_reads_as_unpaired_rows_under_the_default_record_type(tmp_path):
    rows = [GOOD, BAD, {**GOOD, "prompt": [{"role": "user", "content": "Hi?"}], "id": "x"}]
    for record_type in ("pairwise", "unpaired"):
        records = load_records("local", "train", path=_write(tmp_path, rows), record_type=record_type)
        assert [r for _, r in records] == [
            UnpairedRecord("Hi?", "Hello.", True, "0"),
            UnpairedRecord("Name a fruit.", "Go away.", False, "1"),
            UnpairedRecord([{"role": "user", "content": "Hi?"}], "Hello.", True, "x"),
        ]


@pytest.mark.parametrize(
    "bad, pattern, reason",
    [
        ({**GOOD, "label": 1}, r"field 'label': expected true or false, got int 1", "wrong_type"),
        ({**GOOD, "label": "yes"}, r"field 'label': expected true or false, got str 'yes'", "wrong_type"),
        ({"prompt": "Hi?", "completion": "Hello."}, r"field 'label': missing", "missing_field"),
        ({**GOOD, "completion": "  "}, r"field 'completion': empty string", "empty_field"),
    ],
)
def test_a_bad_label_or_completion_names_file_row_line_and_field_or_is_counted(
    tmp_path, bad, pattern, reason
):
    path = _write(tmp_path, [GOOD, BAD, bad, GOOD])
    with pytest.raises(DataError, match=r"feedback\.jsonl: row 2 \(line 3\): " + pattern):
        load_records("local", "train", path=path, record_type="unpaired")
    stats = {}
    kept = load_records("local", "train", path=path, record_type="unpaired", on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 1, 3]
    assert stats["rows_read"] == 4 and stats["rows_skipped"] == {reason: 1}


def test_unpaired_and_pair_rows_do_not_mix_in_a_split(tmp_path):
    pair = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    with pytest.raises(DataError, match=r"row 2 \(line 3\): not an unpaired row, but row 0 is unpaired"):
        load_records("local", "train", path=_write(tmp_path, [GOOD, BAD, pair]))


def test_a_pair_read_as_unpaired_points_to_unpair(tmp_path):
    pair = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    with pytest.raises(DataError, match=r"row 0 \(line 1\): field 'completion': .*data\.unpair=true"):
        load_records("local", "train", path=_write(tmp_path, [pair]), record_type="unpaired")


def _pairs(n):
    return [
        {"prompt_ids": [1, 10 + i], "chosen_ids": [20 + i, 2], "rejected_ids": [40 + i, 2], "index": i}
        for i in range(n)
    ]


def test_unpair_cuts_each_pair_into_a_desirable_then_an_undesirable_row():
    rows = unpair_examples(_pairs(2))
    assert [(r["index"], r["pair"], r["label"], r["completion_ids"]) for r in rows] == [
        (0, 0, True, [20, 2]),
        (1, 0, False, [40, 2]),
        (2, 1, True, [21, 2]),
        (3, 1, False, [41, 2]),
    ]
    assert all(r["prompt_ids"] == [1, 10 + r["pair"]] for r in rows)
    assert unpair_examples(rows) == rows  # already unpaired: unchanged


def test_kl_partners_answer_another_prompt_and_form_one_seeded_cycle():
    rows = unpair_examples(_pairs(5))  # 10 rows, two per prompt
    for seed in (0, 1, 2):
        partners = kl_partners(rows, seed)
        assert all(rows[i]["prompt_ids"] != rows[j]["prompt_ids"] for i, j in enumerate(partners))
        assert partners == kl_partners(rows, seed)  # deterministic
    assert kl_partners(rows, 0) != kl_partners(rows, 1)
    distinct = [{"prompt_ids": [i], "completion_ids": [i]} for i in range(6)]
    partners = kl_partners(distinct, 0)
    assert sorted(partners) == list(range(6))  # all prompts distinct: a rotation uses each completion once
    seen, i = set(), 0
    for _ in range(6):  # ... and it is a single cycle (each row's partner is the row before it)
        seen.add(i)
        i = partners[i]
    assert seen == set(range(6))


def test_kl_partners_need_two_prompts():
    same = [{"prompt_ids": [1], "completion_ids": [k]} for k in range(3)]
    with pytest.raises(ValueError, match="fewer than two distinct prompts"):
        kl_partners(same, 0)


def test_collate_unpaired_pads_prompt_plus_completion_and_the_mismatched_completion():
    rows = add_kl_completions(unpair_examples(_pairs(2)), seed=0)
    batch = collate_unpaired(rows, pad_token_id=0)
    # 4 rows, T = prompt 2 + completion 2
    assert batch["completion_input_ids"].shape == batch["kl_input_ids"].shape == (4, 4)
    assert batch["desirable"].tolist() == [True, False, True, False]
    assert batch["pair_ids"].tolist() == [0, 0, 1, 1] and batch["index"].tolist() == [0, 1, 2, 3]
    for b, row in enumerate(rows):
        assert batch["completion_input_ids"][b].tolist() == row["prompt_ids"] + row["completion_ids"]
        assert batch["kl_input_ids"][b].tolist() == row["prompt_ids"] + row["kl_completion_ids"]
        assert batch["completion_labels"][b].tolist() == [IGNORE_INDEX] * 2 + row["completion_ids"]
    # rows of pair 0 take pair 1's completions and vice versa (the only other prompt)
    assert {tuple(r["kl_completion_ids"]) for r in rows[:2]} <= {(21, 2), (41, 2)}
    view = as_pair_batch(batch)
    assert torch.equal(view["rejected_input_ids"], batch["kl_input_ids"])
    assert set(as_pair_batch(batch, kl=False)) == {
        "chosen_input_ids",
        "chosen_attention_mask",
        "chosen_labels",
        "index",
    }


def test_collate_unpaired_without_kl_completions_and_unpaired_rows_of_a_file():
    rows = [{"prompt_ids": [1], "completion_ids": [5, 6, 2], "label": False, "index": 7}]
    batch = collate_unpaired(rows, pad_token_id=0)
    assert "kl_input_ids" not in batch and batch["pair_ids"].tolist() == [-1]


def _datamodule(tok, **kw):
    dm = PreferenceDataModule(**{"max_length": 128, "max_prompt_length": 96, **kw})
    dm.connect(tok)
    dm.setup("fit")
    return dm


def test_unpair_after_the_split_keeps_both_halves_of_a_pair_in_one_split(tok, tmp_path):
    pairs = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(20)]
    dm = _datamodule(tok, source="local", path=_write(tmp_path, pairs), unpair=True, val_fraction=0.25)
    train, val = dm.datasets["train"], dm.datasets["validation"]
    assert len(train) == 2 * 15 and len(val) == 2 * 5
    for rows in (train, val):
        by_pair = {}
        for r in rows:
            by_pair.setdefault(r["pair"], []).append(r["label"])
        assert all(labels == [True, False] for labels in by_pair.values())
    assert not {r["pair"] for r in train} & {r["pair"] for r in val}
    assert dm.stats["train"]["unpaired_rows"] == 30 and dm.stats["train"]["rows_kept"] == 15
    batch = next(iter(dm.val_dataloader()))  # held-out order kept: pairs share a batch
    assert (
        batch["pair_ids"].tolist()[:4]
        == [batch["pair_ids"][0].item()] * 2 + [batch["pair_ids"][2].item()] * 2
    )
    assert "kl_input_ids" in batch


def test_demo_unpaired_config_is_demo_with_unpair(tok):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from train_helpers import CONFIGS

    demo = OmegaConf.load(CONFIGS / "data" / "demo.yaml")
    unpaired = OmegaConf.load(CONFIGS / "data" / "demo_unpaired.yaml")
    assert {k: v for k, v in unpaired.items() if k != "unpair"} == {
        k: v for k, v in demo.items() if k != "unpair"
    }
    dm = instantiate(unpaired, max_samples=8)
    dm.connect(tok)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 and dm.unpaired


def test_an_unpaired_file_cannot_be_read_as_sft(tok, tmp_path):
    with pytest.raises(DataError, match="cannot be read as sft"):
        _datamodule(
            tok, source="local", path=_write(tmp_path, [GOOD, BAD] * 5), record_type="sft", val_fraction=0.2
        )


def test_unpair_needs_pairs():
    with pytest.raises(ValueError, match="unpair=true.*record_type pairwise"):
        PreferenceDataModule(unpair=True, record_type="listwise")
