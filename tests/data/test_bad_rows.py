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
    with pytest.raises(
        DataError, match=r"orca\.jsonl: split 'train' has no usable row: 1 skipped \(missing_field=1\)"
    ):
        load_records("orca_dpo", "train", path=path, on_bad_row="skip", stats=stats)
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


# -- files as a new user writes them ----------------------------------------------------------------
def _write_bytes(tmp_path, data: bytes, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _rows_bytes(rows, newline=b"\n") -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + newline for r in rows)


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_windows_editor_file_bom_and_crlf_reads_every_row(tmp_path, on_bad_row):
    """A UTF-8 byte-order mark before row 0 and CRLF line ends: all 3 rows, the first one included,
    with the same fields as the plain file and no skip."""
    rows = [{**GOOD, "id": f"r{i}", "chosen": f"Hello {i}."} for i in range(3)]
    plain = load_records("local", "train", path=_write_bytes(tmp_path, _rows_bytes(rows), "plain.jsonl"))
    stats = {}
    path = _write_bytes(tmp_path, b"\xef\xbb\xbf" + _rows_bytes(rows, b"\r\n"))
    windows = load_records("local", "train", path=path, on_bad_row=on_bad_row, stats=stats)
    assert windows == plain and [r.id for _, r in windows] == ["r0", "r1", "r2"]
    assert stats["rows_read"] == 3 and sum(stats["rows_skipped"].values()) == 0


def test_bom_with_a_bad_line_keeps_line_numbers(tmp_path):
    """The scanned path (a malformed line forces it) drops the BOM too: row 0 is kept, line 2 is named."""
    data = b"\xef\xbb\xbf" + _rows_bytes([GOOD]) + b'{"prompt": \r\n' + _rows_bytes([GOOD], b"\r\n")
    stats = {}
    kept = load_records("local", "train", path=_write_bytes(tmp_path, data), on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 1] and stats["rows_skipped"] == {"malformed_json": 1}
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: malformed JSON"):
        load_records("local", "train", path=_write_bytes(tmp_path, data))


def test_bytes_that_are_not_utf8_name_file_line_and_byte(tmp_path):
    """Line 2 written in Latin-1 ('café' -> byte 0xe9): a located error, or a counted skip."""
    latin1 = json.dumps({**GOOD, "prompt": "Un café?"}, ensure_ascii=False).encode("latin-1") + b"\n"
    path = _write_bytes(tmp_path, _rows_bytes([GOOD]) + latin1 + _rows_bytes([GOOD]))
    col = latin1.index(b"\xe9") + 1
    with pytest.raises(
        DataError, match=rf"pairs\.jsonl: line 2: not UTF-8 text \(byte 0xe9 at column {col}\)"
    ):
        load_records("local", "train", path=path)
    stats = {}
    kept = load_records("local", "train", path=path, on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 1]  # rows are numbered among the readable lines
    assert stats["rows_read"] == 3 and stats["rows_skipped"] == {"not_utf8": 1}


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf\r\n"], ids=["empty", "blank", "bom"])
@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_empty_file_is_an_error_naming_file_and_split(tmp_path, content, on_bad_row):
    path = _write_bytes(tmp_path, content)
    with pytest.raises(DataError, match=r"pairs\.jsonl: split 'train' is empty"):
        load_records("local", "train", path=path, on_bad_row=on_bad_row)


def test_every_row_skipped_is_an_error_with_the_counts(tmp_path):
    path = _write(tmp_path, [{**GOOD, "chosen": ""}, "not json", {**GOOD, "rejected": 3}])
    with pytest.raises(
        DataError, match=r"no usable row: 3 skipped \(empty_field=1, malformed_json=1, wrong_type=1\)"
    ):
        load_records("local", "train", path=path, on_bad_row="skip")


def _orca(row: dict) -> dict:
    return {"system": "", "question": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


@pytest.mark.parametrize(
    "source, row",
    [
        ("local", {**GOOD, "rejected": GOOD["chosen"]}),
        ("local", {**GOOD, "rejected": "  " + GOOD["chosen"] + "\n"}),  # equal once stripped
        ("orca_dpo", _orca({**GOOD, "rejected": GOOD["chosen"]})),
        (
            "local",
            {"prompt": "Hi?", "responses": ["Same.", "Other.", "Same."], "scores": [2, 1, 0]},
        ),  # best == worst
    ],
    ids=["local", "whitespace", "orca", "list_best_worst"],
)
def test_identical_chosen_and_rejected_is_a_bad_row(tmp_path, source, row):
    """Identical responses give every pairwise loss a zero gradient: a located error, or a counted skip."""
    good = GOOD if source == "local" else _orca(GOOD)
    path = _write(tmp_path, [good, row, good])
    with pytest.raises(
        DataError, match=r"pairs\.jsonl: row 1 \(line 2\): field 'rejected': identical to 'chosen'"
    ):
        load_records(source, "train", path=path)
    stats = {}
    kept = load_records(source, "train", path=path, on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 2] and stats["rows_skipped"] == {"identical_responses": 1}


def test_identical_pair_is_fine_as_sft(tmp_path):
    """Read as SFT rows, only ``chosen`` is used: an identical pair is a good SFT row."""
    path = _write(tmp_path, [{**GOOD, "rejected": GOOD["chosen"]}])
    ((_, record),) = load_records("local", "train", path=path, record_type="sft")
    assert record.response == GOOD["chosen"]
