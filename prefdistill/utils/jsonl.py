"""JSON-lines files: one JSON object per line, written atomically (readers see the whole file or none)."""

from __future__ import annotations

import json
from pathlib import Path

from prefdistill.utils.atomic import atomic_file


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """``rows`` one per line (UTF-8, non-ASCII kept), through a temporary sibling renamed onto ``path``."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows :func:`write_jsonl` wrote (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
