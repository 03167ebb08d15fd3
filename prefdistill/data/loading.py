"""Read a split of a source through ``datasets.load_dataset`` and map it to canonical records.

:data:`SOURCES` maps each source name to its row mapper, default location (hub id or
the shipped folder) and default split names. For ``shipped``, ``name`` picks the shipped
dataset folder (``demo``, ``demo_scored``, ``demo_lists``; default ``demo``). ``path``
overrides the location: a hub id, a local ``.jsonl``/``.json``/``.parquet`` file (it
provides the ``train`` split), or a folder holding ``<split>.jsonl|.json|.parquet``. Local files are read with
``datasets.load_dataset("json"|"parquet", data_files=...)``, the same code path as hub
data; ``HF_DATASETS_OFFLINE=1`` is honoured by ``datasets`` itself and a failed hub load
says so.

``.jsonl`` files are also scanned line by line first, so a malformed line is reported
as ``file: line N: malformed JSON`` and a line that is not UTF-8 as ``file: line N: not
UTF-8 text`` (``datasets`` cannot name the line; reasons ``malformed_json``, ``not_utf8``),
and rows with inconsistent column types still reach the per-field checks. Files written by
Windows editors read as intended: a UTF-8 byte-order mark is dropped and CRLF line ends are
JSON whitespace.

A split with no rows (an empty file) raises :class:`DataError` naming the file and split, and
so does a split whose every row was skipped (with the skip counts): training on nothing is
never a success. A pair whose ``chosen`` and ``rejected`` are identical is a bad row
(reason ``identical_responses``): every pairwise loss has zero gradient on it.

Scored pairs: a file (split) must score all its pairs or none; a mix raises
:class:`DataError` naming the first row without ``chosen_score``/``rejected_score``. Likewise a
split holds unpaired rows (``{prompt, completion, label}``) only or none: a mix names the first row
of the minority shape.

Row ids: in files read by the ``local`` mapper (``local`` and ``shipped`` sources) an
explicit ``id`` column (renamed through ``fields``) must be unique within a split; a repeated
id raises :class:`DataError` naming the file, both rows and the id (reason ``duplicate_id``;
with ``on_bad_row="skip"`` the later rows are skipped). Rows without an id get their row
number, which is not checked. Hub schemas are not checked: their id columns group rows
(a TL;DR post or an UltraFeedback prompt has several comparisons).

Bad rows raise :class:`DataError` naming the source, row (and line) and field, or with
``on_bad_row="skip"`` are skipped and counted in ``stats["rows_skipped"][reason]``, so
``rows_read == kept + sum(rows_skipped)``.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from prefdistill.data import sources
from prefdistill.data.records import (
    DataError,
    PairRecord,
    Record,
    RowError,
    UnpairedRecord,
    check_distinct_pair,
    convert,
)

log = logging.getLogger(__name__)

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "assets" / "data"
SHIPPED_DIR = SHIPPED_ROOT / "demo"
BAD_ROW_POLICIES = ("error", "skip")
_EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_MAX_SKIP_WARNINGS = 5


@dataclass(frozen=True)
class SourceSpec:
    mapper: Callable
    path: str | None
    splits: dict = field(default_factory=dict)  # our split -> source split (None: carve / absent)
    name: str | None = None
    name_kw: str = "name"  # hh-rlhf subsets are data_dirs (helpful-base, ...), not configs
    fields: dict | None = None  # default column mapping for the local reader


_TRAIN_TEST = {"train": "train", "validation": None, "test": "test"}
SOURCES: dict[str, SourceSpec] = {
    "shipped": SourceSpec(  # sft reads prompt + chosen
        sources.local,
        str(SHIPPED_DIR),
        {"train": "train", "validation": "validation", "test": "test"},
        fields={"response": "chosen"},
    ),
    "hh_rlhf": SourceSpec(sources.hh_rlhf, "Anthropic/hh-rlhf", _TRAIN_TEST, name_kw="data_dir"),
    "orca_dpo": SourceSpec(
        sources.orca_dpo, "Intel/orca_dpo_pairs", {"train": "train", "validation": None, "test": None}
    ),
    "ultrafeedback": SourceSpec(
        sources.ultrafeedback,
        "HuggingFaceH4/ultrafeedback_binarized",
        {"train": "train_prefs", "validation": None, "test": "test_prefs"},
    ),
    "tldr": SourceSpec(
        sources.tldr,
        "CarperAI/openai_summarize_comparisons",
        {"train": "train", "validation": "valid1", "test": "test"},
    ),
    "tldr_feedback": SourceSpec(
        sources.tldr_feedback,
        "openai/summarize_from_feedback",
        {"train": "train", "validation": "validation", "test": None},
        name="comparisons",
    ),
    "local": SourceSpec(sources.local, None, {"train": "train", "validation": None, "test": None}),
}


def get_source(source: str) -> SourceSpec:
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; known sources: {sorted(SOURCES)}")
    return SOURCES[source]


def shipped_dir(name: str | None) -> Path:
    """The shipped dataset folder ``assets/data/<name>`` (default ``demo``)."""
    folder = SHIPPED_ROOT / (name or "demo")
    if not name or (folder / "train.jsonl").is_file():
        return folder
    known = sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / "train.jsonl").is_file())
    raise DataError(f"no shipped dataset {name!r}; shipped datasets: {known}")


def _local_file(path: Path, split: str) -> Path:
    if path.is_file():
        if split != "train":
            raise DataError(f"{path}: a single file provides only the 'train' split, not {split!r}")
        return path
    for ext in _EXTENSIONS:
        if (path / f"{split}{ext}").is_file():
            return path / f"{split}{ext}"
    raise DataError(f"{path}: no file for split {split!r} (looked for {split}.jsonl|.json|.parquet)")


class _LineError(ValueError):
    """A JSONL line that is not a row; ``reason`` is the skip counter key."""

    def __init__(self, reason: str, problem: str):
        super().__init__(problem)
        self.reason = reason


def _decode_line(raw: bytes, line_no: int) -> str:
    """One JSONL line as text: UTF-8, with a byte-order mark on line 1 dropped (Windows editors write
    one; ``datasets`` drops it too). Line ends, LF or CRLF, are JSON whitespace. Bytes that are not
    UTF-8 raise ``UnicodeDecodeError``."""
    if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    return raw.decode("utf-8")


def _parse_line(raw: bytes, line_no: int) -> dict | None:
    """The JSON object on one line, None for a blank line; ``_LineError`` naming the problem otherwise."""
    try:
        line = _decode_line(raw, line_no)
    except UnicodeDecodeError as err:
        raise _LineError(
            "not_utf8",
            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); save the file as UTF-8",
        ) from err
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError as err:
        raise _LineError("malformed_json", f"malformed JSON: {err}") from err
    if not isinstance(row, dict):
        raise _LineError(
            "malformed_json", f"malformed JSON: expected a JSON object, got {type(row).__name__}"
        )
    return row


def _scan_jsonl(file: Path, on_bad_row: str, skipped: Counter) -> tuple[list[dict], list[int]]:
    """Every JSON object of a ``.jsonl`` file with its line number; a line that is not UTF-8 or not a
    JSON object raises a ``DataError`` naming file and line, or (skip) is counted under its reason."""
    rows, lines = [], []
    with open(file, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                row = _parse_line(raw, line_no)
            except _LineError as err:
                msg = f"{file}: line {line_no}: {err}"
                if on_bad_row == "error":
                    raise DataError(msg + " (set data.on_bad_row=skip to skip and count such lines)") from err
                note_skip(skipped, err.reason, msg)
                continue
            if row is not None:
                rows.append(row)
                lines.append(line_no)
    return rows, lines


def _load(path: str, split: str | None = "train", **kwargs):
    import datasets

    return datasets.load_dataset(path, split=split, **kwargs)


_SLICE = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def split_slice(split: str) -> tuple[str, slice | None]:
    """``"train[500:]"`` -> ``("train", slice(500, None))``; a plain name -> ``(name, None)``.

    The row-range syntax of ``datasets`` (``train[:100]``, ``train[100:200]``) so that one file can feed
    two stages, e.g. PLaD's protocol of supervised training on one half of the training set and distillation
    on the other. Local and shipped files take integer bounds; hub splits pass the string to ``datasets``,
    which also reads percentages (``train[:10%]``)."""
    if "[" not in split:
        return split, None
    m = _SLICE.match(split)
    if m is None:
        raise DataError(f"split {split!r}: use <split>[start:stop] with integer row bounds, e.g. 'train[:500]'")
    to_int = lambda v: int(v) if v else None  # noqa: E731
    return m.group("name"), slice(to_int(m.group("start")), to_int(m.group("stop")))


def _sliced(rows, lines, rows_range: slice):
    """``rows`` (a list or a ``datasets.Dataset``) and their line numbers cut to ``rows_range``."""
    index = range(len(rows))[rows_range]
    rows = rows[rows_range] if isinstance(rows, list) else rows.select(index)
    return rows, None if lines is None else lines[rows_range]


def read_rows(location: str, split: str, hub_kwargs: dict, on_bad_row: str, skipped: Counter):
    """Return ``(label, rows, line_numbers_or_None)`` for one split of a hub id or local path; ``split`` may
    carry a row range (:func:`split_slice`)."""
    local = Path(location).expanduser()
    name, rows_range = split_slice(split)
    if local.exists():
        label, rows, lines = _read_local(local, name, on_bad_row, skipped)
        if rows_range is not None:
            label += split[len(name) :]  # "train.jsonl[500:]"
            rows, lines = _sliced(rows, lines, rows_range)
        return label, rows, lines
    try:
        return f"{location}[{split}]", _load(location, split, **hub_kwargs), None
    except Exception as err:  # datasets raises many types; re-raise with the location
        offline = " (HF_DATASETS_OFFLINE is set: only cached datasets load)" if _offline() else ""
        raise DataError(f"could not load dataset {location!r} split {split!r}{offline}: {err}") from err


def _read_local(local: Path, split: str, on_bad_row: str, skipped: Counter):
    """``(label, rows, line numbers or None)`` of a local file or a folder's ``<split>`` file."""
    file = _local_file(local, split)
    builder = _EXTENSIONS.get(file.suffix)
    if builder is None:
        raise DataError(f"{file}: unsupported file type (use .jsonl, .json or .parquet)")
    skipped_before = sum(skipped.values())
    scanned, lines = _scan_jsonl(file, on_bad_row, skipped) if file.suffix == ".jsonl" else (None, None)
    if scanned is not None and (not scanned or sum(skipped.values()) > skipped_before):
        # empty, or lines datasets cannot read: the scanned rows are the rows
        return str(file), scanned, lines
    try:
        return str(file), _load(builder, data_files=str(file)), lines
    except Exception as err:
        if scanned is None:
            raise DataError(f"{file}: could not read: {err}") from err
        log.info("%s: datasets could not infer one schema (%s); checking rows one by one", file, err)
        return str(file), scanned, lines


def _offline() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


class SkipLog(Counter):
    """Skip counts by reason that also keep where the first ``keep`` skipped rows are, logging nothing: the
    preflight scan (``data/scan.py``) reports them all in one message."""

    def __init__(self, keep: int = 5):
        super().__init__()
        self.keep, self.first = keep, []


def note_skip(skipped: Counter, reason: str, msg: str) -> None:
    """Count a skipped row under ``reason``; the first few skips are also logged with ``msg`` (kept instead,
    quietly, by a :class:`SkipLog`)."""
    if isinstance(skipped, SkipLog):
        skipped[reason] += 1
        skipped.first += [msg] if len(skipped.first) < skipped.keep else []
        return
    skipped[reason] += 1
    n = sum(skipped.values())
    if n <= _MAX_SKIP_WARNINGS:
        log.warning("skipping bad row (on_bad_row=skip): %s", msg)
    elif n == _MAX_SKIP_WARNINGS + 1:
        log.warning("more bad rows skipped; the counts are in the split summary")


def where(label: str, i: int, lines: list[int] | None) -> str:
    return f"{label}: row {i}" + (f" (line {lines[i]})" if lines is not None else "")


def load_records(
    source: str,
    split: str,
    *,
    path: str | None = None,
    name: str | None = None,
    record_type: str = "pairwise",
    fields: dict[str, str] | None = None,
    on_bad_row: str = "error",
    limit: int | None = None,
    stats: dict | None = None,
) -> list[tuple[int, Record]]:
    """Load one source split (its own split name) as ``[(row_index, record), ...]``.

    ``stats`` (optional) is updated with ``rows_read`` and ``rows_skipped`` (a Counter of
    reasons). ``limit`` stops after that many kept records."""
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    spec = get_source(source)
    location = path or (shipped_dir(name) if source == "shipped" else spec.path)
    if location is None:
        raise DataError(f"source {source!r} needs data.path (a .jsonl/.json/.parquet file or a folder)")
    stats = stats if stats is not None else {}
    skipped = stats.setdefault("rows_skipped", Counter())
    skipped_before = sum(skipped.values())
    hub_kwargs = {spec.name_kw: name or spec.name} if (name or spec.name) and source != "shipped" else {}
    label, rows, lines = read_rows(str(location), split, hub_kwargs, on_bad_row, skipped)
    unreadable = sum(skipped.values()) - skipped_before  # lines skipped before they were rows
    stats["rows_read"] = stats.get("rows_read", 0) + unreadable
    if len(rows) == 0 and not unreadable:
        raise DataError(f"{label}: split {split!r} is empty: no rows to read")
    mapper, id_column = spec.mapper, None
    if spec.mapper is sources.local:
        columns = {**(spec.fields or {}), **(fields or {})}
        mapper = partial(spec.mapper, record_type=record_type, fields=columns)
        id_column = columns.get("id", "id")
    records = _map_rows(rows, mapper, record_type, (label, lines), on_bad_row, limit, stats, id_column)
    if not records and limit != 0:
        raise DataError(
            f"{label}: split {split!r} has no usable row: {summarize_skips(stats['rows_skipped'])}"
        )
    return records


def summarize_skips(skipped: Counter) -> str:
    """``'3 skipped (malformed_json=1, not_utf8=2)'``."""
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items()) if v)
    return f"{sum(skipped.values())} skipped" + (f" ({reasons})" if reasons else "")


def _map_rows(
    rows, mapper, record_type, origin, on_bad_row, limit, stats, id_column=None
) -> list[tuple[int, Record]]:
    """Map raw rows to records; bad rows raise or are counted in ``stats["rows_skipped"]``.

    With ``id_column``, rows giving that column must have distinct ids (``duplicate_id``)."""
    out: list[tuple[int, Record]] = []
    first_row: dict[str, int] = {}  # explicit id -> the row that has it
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        stats["rows_read"] = stats.get("rows_read", 0) + 1
        try:
            record = convert(mapper(row, i), record_type)
            if isinstance(record, PairRecord):
                check_distinct_pair(record.chosen, record.rejected)
            if id_column is not None and row.get(id_column) is not None:
                _check_unique_id(record.id, i, id_column, first_row, origin[1])
            out.append((i, record))
        except RowError as err:
            msg = f"{where(origin[0], i, origin[1])}: {err}"
            if on_bad_row == "error":
                raise DataError(msg + " (set data.on_bad_row=skip to skip and count such rows)") from err
            note_skip(stats["rows_skipped"], err.reason, msg)
    check_scored_pairs(out, origin)
    check_one_shape(out, origin)
    return out


def check_one_shape(rows: list[tuple[int, Record]], origin: tuple) -> None:
    """Unpaired rows and pair/list rows must not mix in a split: name the first row of the other shape."""
    unpaired = [isinstance(r, UnpairedRecord) for _, r in rows]
    if any(unpaired) and not all(unpaired):
        k = unpaired.index(not unpaired[0])  # the first row of the other shape
        shape = "an unpaired row ({prompt, completion, label})" if unpaired[k] else "not an unpaired row"
        raise DataError(
            f"{where(origin[0], rows[k][0], origin[1])}: {shape}, but row {rows[0][0]} is "
            f"{'unpaired' if unpaired[0] else 'a pair/list row'}; a split holds unpaired rows only or none"
        )


def _check_unique_id(rid: str, i: int, column: str, first_row: dict[str, int], lines) -> None:
    """Claim ``rid`` for row ``i``, or raise ``RowError`` naming the row that claimed it first."""
    j = first_row.setdefault(rid, i)
    if j != i:
        line = f" (line {lines[j]})" if lines is not None else ""
        raise RowError(column, f"duplicate id {rid!r}, already used by row {j}{line}", "duplicate_id")


def check_scored_pairs(rows: list[tuple[int, Record]], origin: tuple) -> None:
    """Scored and unscored pairs must not mix: name the first row without scores."""
    scored = [r.scored for _, r in rows if isinstance(r, PairRecord)]
    if any(scored) and not all(scored):
        pairs = [i for i, r in rows if isinstance(r, PairRecord)]
        first_scored, first_unscored = pairs[scored.index(True)], pairs[scored.index(False)]
        raise DataError(
            f"{where(origin[0], first_unscored, origin[1])}: no 'chosen_score'/'rejected_score', but row "
            f"{first_scored} has them; a dataset must score all its pairs or none"
        )
