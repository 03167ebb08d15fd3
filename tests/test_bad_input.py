"""Bad input, tried systematically through the real entry point (``prefdistill.train.train``).

Every kind of bad input either fails before training with an error naming where (file,
row/line, field; or config key, or both vocabulary sizes; bad rows are found by the preflight, before
any model loads, all of them in one message), or -- bad data rows with
``data.on_bad_row=skip`` -- is skipped and counted by reason in ``metrics.json``'s ``data``
stats, with ``rows_read == rows_kept + skipped (+ rows_to_validation)`` in every split:
nothing is dropped silently. (``tests/data/test_bad_rows.py`` covers the loader alone.)
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException
from train_helpers import good_pair as _good
from train_helpers import method_loss

from prefdistill.data import DataError, PreferenceDataModule, load_records
from prefdistill.data.loading import SHIPPED_ROOT
from prefdistill.preflight import PreflightError
from prefdistill.train import train

REFUSED = (DataError, PreflightError)  # bad rows: the preflight's scan; bad tokenisation: the datamodule

LONG_PROMPT = "Please read this carefully. " * 120  # ~600 tokens: over every max_prompt_length used here


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from prefdistill.models.tiny_tokenizer import TINY_TOKENIZER_DIR

    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


def _write(tmp_path: Path, rows: list, name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _train_on(tiny_cfg, path: Path, *extra: str) -> dict:
    """Run the tiny training on ``path``; return metrics.json's per-split data stats."""
    cfg = tiny_cfg("data=local", f"data.path={path}", "data.max_samples=null", "save_model=false", *extra)
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["data"]


def assert_accounted(stats: dict) -> None:
    """Every row read is kept, skipped with a reason, or moved to the validation split."""
    for split, s in stats.items():
        skipped = sum(s["rows_skipped"].values())
        assert s["rows_read"] == s["rows_kept"] + skipped + s.get("rows_to_validation", 0), (split, s)


def _total(stats: dict, key: str) -> int:
    return sum(s[key] for s in stats.values())


def _skipped(stats: dict) -> Counter:
    return sum((Counter(s["rows_skipped"]) for s in stats.values()), Counter())


# ------------------------------------------------------------------------ bad data rows: error
BAD_ROWS = {
    "malformed_json": ('{"id": "x", "prompt": "Hi?", "chosen": ', r"line 3: malformed JSON"),
    "missing_field": (
        {"id": "x", "prompt": "Hi?", "rejected": "No."},
        r"row 2 \(line 3\): field 'chosen': missing",
    ),
    "wrong_type": (
        {"id": "x", "prompt": "Hi?", "chosen": "Yes.", "rejected": 5},
        r"row 2 \(line 3\): field 'rejected': expected str, got int",
    ),
    "wrong_type_prompt": (
        {"id": "x", "prompt": {"text": "Hi?"}, "chosen": "Yes.", "rejected": "No."},
        r"row 2 \(line 3\): field 'prompt': expected str, got dict",
    ),
    "empty_prompt": (
        {"id": "x", "prompt": "  ", "chosen": "Yes.", "rejected": "No."},
        r"row 2 \(line 3\): field 'prompt': empty string",
    ),
    "empty_response": (
        {"id": "x", "prompt": "Hi?", "chosen": "", "rejected": "No."},
        r"row 2 \(line 3\): field 'chosen': empty string",
    ),
    "duplicate_id": (
        {**_good(7), "id": "g0"},
        r"row 2 \(line 3\): field 'id': duplicate id 'g0', already used by row 0 \(line 1\)",
    ),
    "identical_responses": (  # zero gradient for every pairwise loss: never trained on silently
        {"id": "x", "prompt": "Hi?", "chosen": "Same.", "rejected": "Same."},
        r"row 2 \(line 3\): field 'rejected': identical to 'chosen'",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_row_fails_naming_file_row_and_field(tiny_cfg, tmp_path, kind):
    bad, pattern = BAD_ROWS[kind]
    path = _write(tmp_path, [_good(0), _good(1), bad] + [_good(i) for i in range(2, 10)])
    with pytest.raises(REFUSED, match=r"pairs\.jsonl: " + pattern):
        _train_on(tiny_cfg, path)


# ------------------------------------------------------------------------ bad data rows: skip
def test_skip_counts_every_bad_row_and_truncates_long_prompts(tiny_cfg, tmp_path):
    rows = [_good(0), {**_good(1), "id": "long", "prompt": LONG_PROMPT}]
    rows += [bad for bad, _ in BAD_ROWS.values()]
    rows += [_good(i) for i in range(2, 20)]
    stats = _train_on(tiny_cfg, _write(tmp_path, rows), "data.on_bad_row=skip")
    assert_accounted(stats)
    assert stats["train"]["rows_read"] == len(rows)
    assert _skipped(stats) == {
        "malformed_json": 1,
        "missing_field": 1,
        "wrong_type": 2,
        "empty_field": 2,
        "duplicate_id": 1,
        "identical_responses": 1,
    }
    assert _total(stats, "rows_kept") == 20  # 19 good rows + the long one, truncated
    assert _total(stats, "prompts_truncated") == 1


# ------------------------------------------------------------------------ files as a new user writes them
def _jsonl_bytes(rows: list[dict], newline: bytes = b"\n") -> bytes:
    return b"".join(json.dumps(r).encode() + newline for r in rows)


def test_windows_editor_file_trains_on_every_row(tiny_cfg, tmp_path):
    """UTF-8 byte-order mark + CRLF line ends (Notepad's "UTF-8 with BOM"): read as intended, in the
    strict mode; no row lost, none skipped."""
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes([_good(i) for i in range(12)], b"\r\n"))
    stats = _train_on(tiny_cfg, path)
    assert_accounted(stats)
    assert _total(stats, "rows_kept") == 12 and not _skipped(stats)


def test_bytes_that_are_not_utf8_are_located_or_counted(tiny_cfg, tmp_path):
    """A Latin-1 line (byte 0xe9 of 'café') among UTF-8 ones: an error naming file and line, not a bare
    UnicodeDecodeError; with skip, one counted ``not_utf8`` row."""
    latin1 = json.dumps({**_good(1), "prompt": "Un café?"}, ensure_ascii=False).encode("latin-1") + b"\n"
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl_bytes([_good(0)]) + latin1 + _jsonl_bytes([_good(i) for i in range(2, 12)]))
    with pytest.raises(REFUSED, match=r"pairs\.jsonl: line 2: not UTF-8 text \(byte 0xe9"):
        _train_on(tiny_cfg, path)
    stats = _train_on(tiny_cfg, path, "data.on_bad_row=skip")
    assert_accounted(stats)
    assert stats["train"]["rows_read"] == 12 and _skipped(stats) == {"not_utf8": 1}


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_empty_data_file_is_an_error_not_a_run_on_nothing(tiny_cfg, tmp_path, on_bad_row):
    path = tmp_path / "pairs.jsonl"
    path.write_text("")
    with pytest.raises(REFUSED, match=r"pairs\.jsonl: split 'train' is empty"):
        _train_on(tiny_cfg, path, f"data.on_bad_row={on_bad_row}")
    assert not list((tmp_path / "runs").glob("*/metrics.json")), "no run is reported"


def test_split_whose_every_row_is_skipped_is_an_error(tiny_cfg, tmp_path):
    rows = [{**_good(i), "rejected": _good(i)["chosen"]} for i in range(6)]
    with pytest.raises(DataError, match=r"no usable row: 6 skipped \(identical_responses=6\)"):
        _train_on(tiny_cfg, _write(tmp_path, rows), "data.on_bad_row=skip")


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_prompt_leaving_no_room_for_the_response(tok, tmp_path, on_bad_row):
    """max_prompt_length == max_length: a prompt cut to the cap leaves no response token."""
    rows = [_good(0), {**_good(1), "prompt": LONG_PROMPT}, _good(2), _good(3)]
    path = _write(tmp_path, rows)
    dm = PreferenceDataModule(
        source="local",
        path=str(path),
        max_length=48,
        max_prompt_length=48,
        on_bad_row=on_bad_row,
        val_fraction=0.0,
    )
    dm.connect(tok)
    if on_bad_row == "error":
        with pytest.raises(DataError, match=r"pairs\.jsonl: row 1: field 'prompt': no room for the response"):
            dm.setup("fit")
        return
    dm.setup("fit")
    stats = dm.stats
    assert_accounted(stats)
    assert stats["train"]["rows_skipped"] == {"no_room_for_response": 1}
    assert stats["train"]["rows_kept"] == 3 and stats["train"]["prompts_truncated"] == 0  # skipped, not kept
    assert [ex["index"] for ex in dm.datasets["train"]] == [0, 2, 3]


def test_carved_validation_with_max_samples_accounts_for_every_row(tok, tmp_path):
    """The carve reads 2 * max_samples rows; those past max_samples count as not read."""
    path = _write(tmp_path, [_good(i) for i in range(40)])
    dm = PreferenceDataModule(
        source="local", path=str(path), max_samples=16, max_length=64, max_prompt_length=32
    )
    dm.connect(tok)
    dm.setup("fit")
    assert_accounted(dm.stats)
    assert dm.stats["train"]["rows_kept"] == 16 and dm.stats["validation"]["rows_kept"] == 2


# ------------------------------------------------------------------------ duplicate ids
def test_duplicate_id_column_follows_fields_mapping(tmp_path):
    rows = [{**_good(0), "uid": "a"}, {**_good(1), "uid": "b"}, {**_good(2), "uid": "a"}]
    path = str(_write(tmp_path, rows))
    with pytest.raises(
        DataError, match=r"row 2 \(line 3\): field 'uid': duplicate id 'a', already used by row 0"
    ):
        load_records("local", "train", path=path, fields={"id": "uid"})
    stats = {}
    kept = load_records("local", "train", path=path, fields={"id": "uid"}, on_bad_row="skip", stats=stats)
    assert [i for i, _ in kept] == [0, 1]  # the first row keeps the id, later ones are skipped
    assert stats["rows_read"] == 3 and stats["rows_skipped"] == {"duplicate_id": 1}


def test_rows_without_id_do_not_collide_with_explicit_ids(tmp_path):
    """A row without an id is known by its row number, which an explicit id may equal."""
    rows = [{**_good(0), "id": "2"}, _good(1), {k: v for k, v in _good(2).items() if k != "id"}]
    assert len(load_records("local", "train", path=str(_write(tmp_path, rows)))) == 3


def test_hub_schema_ids_may_repeat(tmp_path):
    """UltraFeedback's prompt_id groups rows (several comparisons per prompt): not a row identity."""
    row = {
        "prompt": "Hi?",
        "prompt_id": "p1",
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
    }
    assert len(load_records("ultrafeedback", "train", path=str(_write(tmp_path, [row, row])))) == 2


@pytest.mark.parametrize(
    "split_file", sorted(SHIPPED_ROOT.glob("*/*.jsonl")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_shipped_data_has_unique_ids(split_file):
    ids = [json.loads(line)["id"] for line in split_file.read_text().splitlines() if line.strip()]
    assert all(ids) and len(set(ids)) == len(ids)
    assert len(load_records("local", "train", path=str(split_file))) == len(ids)


# ------------------------------------------------------------------------ models and config
def test_teacher_with_another_tokenizer_is_refused_naming_both(tiny_cfg, tok, tmp_path):
    """A teacher whose tokenizer has two more ordinary (not special) tokens: text would tokenize differently,
    so token-level KD on one vocabulary is refused naming both tokenizers and sizes, before any step."""
    other = copy.deepcopy(tok)
    other.add_tokens(["zqxv", "vxqz"])
    other.save_pretrained(tmp_path / "teacher_tok")
    cfg = tiny_cfg(
        "method=kd_fkl", "teacher=tiny", f"teacher.tokenizer={tmp_path / 'teacher_tok'}", "save_model=false"
    )
    pattern = rf"'kd_fkl' needs one vocabulary.*\({len(tok)} tokens\), output size {len(tok)}.*\({len(tok) + 2} tokens\)"
    with pytest.raises(ValueError, match=pattern):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_unknown_method_key_is_a_hydra_error(tiny_cfg):
    with pytest.raises(ConfigCompositionException, match=r"method\.no_such"):
        tiny_cfg("method.no_such=1")


def test_appended_unknown_hyper_parameter_lists_the_accepted_ones(tiny_cfg, tmp_path):
    cfg = tiny_cfg("+method.no_such=1")
    with pytest.raises(InstantiationException) as err:
        train(cfg)
    cause = err.value.__cause__
    assert isinstance(cause, TypeError), repr(cause)
    accepted = sorted(method_loss("dpo", tmp_path).hparams)  # the registry's table for dpo
    assert "beta" in accepted and "reference_free" in accepted
    assert f"got unknown hyper-parameters ['no_such']; it accepts {accepted}" in str(cause), str(cause)
