"""Row ranges of a split (``train[500:]``): one file feeds two stages, as PLaD's two training-set shards."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import DataError, PreferenceDataModule, load_records
from prefdistill.data.loading import split_slice


def test_split_slice_parses_the_datasets_syntax():
    assert split_slice("train") == ("train", None)
    assert split_slice("train[500:]") == ("train", slice(500, None))
    assert split_slice("train[:500]") == ("train", slice(None, 500))
    assert split_slice("valid1[10:-5]") == ("valid1", slice(10, -5))
    with pytest.raises(DataError, match="integer row bounds"):
        split_slice("train[:10%]")


def test_shipped_halves_are_disjoint_and_cover_the_split():
    whole = load_records("shipped", "train")
    first, second = load_records("shipped", "train[:500]"), load_records("shipped", "train[500:]")
    assert [r.id for _, r in first] + [r.id for _, r in second] == [r.id for _, r in whole]
    assert len(first) == 500 and len(second) == 300


def test_a_bad_row_in_a_slice_names_its_file_line(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    rows[3]["rejected"] = "a"  # identical responses: a bad pair, on line 4
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_records("local", "train[:3]", path=str(tmp_path))) == 3
    with pytest.raises(DataError, match=r"train\.jsonl\[2:\]: row 1 \(line 4\)"):
        load_records("local", "train[2:]", path=str(tmp_path))


def test_datamodule_reads_a_slice_as_its_train_split(tok):
    dm = PreferenceDataModule(source="shipped", splits={"train": "train[700:]", "validation": "validation",
                                                        "test": "test"}, max_samples=None)  # fmt: skip
    dm.connect(tok)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 100
