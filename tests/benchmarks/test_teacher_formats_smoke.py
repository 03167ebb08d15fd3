"""Smoke run of the teacher-format benchmark (``--quick``: tiny teacher and student): it runs end to end, prints
every format's row and the final line, and the bytes per token are what the formats store (16-bit values,
int32 ids): top-k 6k + 2, top-k + tail 6k + 4."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "teacher_formats.py"


def test_quick_run_prints_every_format_and_the_final_line():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--topk", "4", "--draws", "8"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("teacher_formats "), last
    values = dict(item.split("=") for item in last.split()[1:])
    assert values["topk_4_bytes"] == "26" and values["topk_tail_4_bytes"] == "28"
    assert 2 + 8 <= int(values["sampled_8_bytes"]) <= 8 * 8 + 2  # 1..8 distinct tokens drawn, 8 bytes each
    assert all(re.fullmatch(r"[+-]\d+\.\d{3}", v) for k, v in values.items() if k.endswith("_bias"))
