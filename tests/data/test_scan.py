"""The preflight's data scan: every bad row of the rows a run will read, in one message, before any model loads."""

from __future__ import annotations

import json

from train_helpers import good_pair as _good

from prefdistill.data.scan import bad_rows


def _file(tmp_path, rows) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _bad_file(tmp_path) -> str:
    rows = [_good(i) for i in range(40)]
    for i in (3, 11, 17, 30):
        del rows[i]["chosen"]
    rows[5]["rejected"] = rows[5]["chosen"]
    rows[25] = {**_good(25), "id": "g1"}
    rows[20] = '{"id": "x", "prompt": '  # line 21
    return _file(tmp_path, rows)


def test_every_bad_row_is_counted_and_the_first_five_located(tmp_path):
    path = _bad_file(tmp_path)
    problem = bad_rows({"source": "local", "path": path, "max_samples": None})
    head, *where = problem.splitlines()
    assert head.startswith("data: 7 bad rows in the rows this run reads (the first 5 below). Fix them, or set "
                           "data.on_bad_row=skip")  # fmt: skip
    assert [line.strip() for line in where] == [
        f"{path}: line 21: malformed JSON: Expecting value: line 2 column 1 (char 23)",
        f"{path}: row 3 (line 4): field 'chosen': missing",
        f"{path}: row 5 (line 6): field 'rejected': identical to 'chosen' (a pair with no preference trains nothing)",
        f"{path}: row 11 (line 12): field 'chosen': missing",
        f"{path}: row 17 (line 18): field 'chosen': missing",
    ]


def test_only_the_rows_the_run_reads_and_only_when_bad_rows_are_errors(tmp_path):
    path = _bad_file(tmp_path)
    assert bad_rows({"source": "local", "path": path, "on_bad_row": "skip"}) is None  # skipped and counted
    first = _file(tmp_path, [_good(i) for i in range(3)] + [{"id": "x", "prompt": "Hi?"}])
    # train takes 2 rows and gives validation 1 of them: 2 * 2 rows read, the bad 4th is among them
    assert "1 bad rows" in bad_rows({"source": "local", "path": first, "max_samples": 2, "val_fraction": 0.1})
    assert bad_rows({"source": "local", "path": first, "max_samples": 3, "val_fraction": 0.0}) is None
    assert bad_rows({"source": "shipped", "name": "demo"}) is None
    assert bad_rows({"source": "hh_rlhf"}) is None  # a hub dataset: checked when it loads


def test_a_file_without_rows_is_reported_too(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "split 'train' is empty" in bad_rows({"source": "local", "path": str(empty)})
