"""Bad input is never dropped silently: an error naming file, row/line and field, or a counted skip."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import DataError, load_records

GOOD = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def _write(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ({"prompt": "Hi?", "rejected": "No."}, r"field 'chosen': missing"),
        ({**GOOD, "chosen": "   "}, r"field 'chosen': empty string"),
        ({**GOOD, "rejected": 5}, r"field 'rejected': expected str, got int"),
        ({**GOOD, "prompt": ["Hi?"]}, r"field 'prompt\[0\]': expected dict, got str"),
        ({**GOOD, "prompt": [{"role": "user", "content": ""}]}, r"field 'prompt\[0\].content': empty string"),
    ],
)
def test_bad_field_names_file_row_and_field(tmp_path, bad, pattern):
    path = _write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(DataError, match=r"pairs\.jsonl: row 2 \(line 3\): " + pattern):
        load_records("local", "train", path=path)


def test_malformed_json_line_names_line(tmp_path):
    path = _write(tmp_path, [GOOD, "", '{"prompt": "Hi?", "chosen": ', GOOD])
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 3: malformed JSON"):
        load_records("local", "train", path=path)


def test_skip_counts_every_reason(tmp_path, caplog):
    rows = [
        GOOD,
        {"prompt": "Hi?", "rejected": "No."},
        "not json",
        {**GOOD, "chosen": ""},
        {**GOOD, "chosen": 1},
        GOOD,
    ]
    stats = {}
    kept = load_records("local", "train", path=_write(tmp_path, rows), on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 4]  # row numbers index the parsed rows
    assert stats["rows_read"] == 6
    assert stats["rows_skipped"] == {
        "missing_field": 1,
        "malformed_json": 1,
        "empty_field": 1,
        "wrong_type": 1,
    }
    assert any("line 2" in r.message and "'chosen'" in r.message for r in caplog.records)


def test_hub_schema_bad_row(tmp_path):
    row = {"system": "", "question": "Q?", "chosen": "A.", "rejected": None}
    path = _write(tmp_path, [row], name="orca.jsonl")
    with pytest.raises(DataError, match=r"orca\.jsonl: row 0 \(line 1\): field 'rejected': missing"):
        load_records("orca_dpo", "train", path=path)
    stats = {}
    assert load_records("orca_dpo", "train", path=path, on_bad_row="skip", stats=stats) == []
    assert stats["rows_skipped"] == {"missing_field": 1}


def test_bad_policy_name(tmp_path):
    with pytest.raises(ValueError, match="on_bad_row"):
        load_records("local", "train", path=_write(tmp_path, [GOOD]), on_bad_row="ignore")


def test_local_needs_path():
    with pytest.raises(DataError, match="needs data.path"):
        load_records("local", "train")


def test_single_file_only_has_train(tmp_path):
    with pytest.raises(DataError, match="only the 'train' split"):
        load_records("local", "test", path=_write(tmp_path, [GOOD]))
