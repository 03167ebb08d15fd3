"""Every bad row of the training data, found before any model loads (preflight calls :func:`bad_rows`).

The datamodule stops at the first bad row it meets (``data.on_bad_row=error``), after the models are
loaded. :func:`bad_rows` reads the splits the run will read -- the same files, source mapper, field
mapping, record type and row limits -- skipping and counting instead, so one message gives the number
of bad rows and where the first few are (file, row, line, field). It reads local files and the shipped
data; a hub dataset is checked when it loads. Rows whose prompt leaves no room for the response are
found later, at tokenisation (they need the model's tokenizer).

    problem = bad_rows({"source": "local", "path": "pairs.jsonl", "max_samples": None})
    # "data: 3 bad rows in the rows this run reads (the first 3 below). Fix them, or ...:\n  pairs.jsonl: ..."
"""

from __future__ import annotations

from pathlib import Path

from prefdistill.data.loading import SkipLog, get_source, load_records, shipped_dir
from prefdistill.data.records import DataError

SHOWN = 5  # locations listed in the message


def _splits(data: dict) -> dict[str, str | None]:
    """Our split -> the source's, as the datamodule maps them (one file is the train split alone)."""
    splits = {**get_source(data.get("source", "shipped")).splits, **dict(data.get("splits") or {})}
    path = data.get("path")
    if path is not None and Path(path).expanduser().is_file():
        return {"train": "train", "validation": None}
    return splits


def _location(data: dict) -> Path | None:
    source = data.get("source", "shipped")
    location = data.get("path") or (
        shipped_dir(data.get("name")) if source == "shipped" else get_source(source).path
    )
    return Path(location).expanduser() if location is not None else None


def bad_rows(data: dict, shown: int = SHOWN) -> str | None:
    """One problem line for the bad rows of the training data configured by ``data`` (the datamodule's
    constructor arguments), None when there are none, when the run skips bad rows (``on_bad_row=skip``) or
    when the data is not on this machine (a hub dataset)."""
    location = _location(data)
    if data.get("on_bad_row", "error") != "error" or location is None or not location.exists():
        return None
    splits = _splits(data)
    limit = data.get("max_samples")
    carve = splits.get("validation") is None and data.get("val_fraction", 0.05) > 0
    record_type = "pairwise" if data.get("unpair") else data.get("record_type", "pairwise")
    skipped, errors = SkipLog(keep=shown), []
    for split in ("train", "validation"):
        if splits.get(split) is None:
            continue
        split_limit = None if limit is None else (2 * limit if split == "train" and carve else limit)
        try:
            load_records(data.get("source", "shipped"), splits[split], path=data.get("path"), name=data.get("name"),
                         record_type=record_type, fields=data.get("fields"), on_bad_row="skip", limit=split_limit,
                         stats={"rows_skipped": skipped})  # fmt: skip
        except DataError as err:  # an empty split, no usable row, a mix of shapes
            errors.append(str(err))
    count = sum(skipped.values())
    if not count and not errors:
        return None
    if count:
        head = (f"data: {count} bad rows in the rows this run reads (the first {len(skipped.first)} below). Fix "
                "them, or set data.on_bad_row=skip to skip and count them (metrics.json: data.<split>.rows_skipped)")  # fmt: skip
    else:
        head = "data: the training data cannot be used as configured"
    return head + ":\n" + "\n".join(f"       {line}" for line in [*skipped.first, *errors])
