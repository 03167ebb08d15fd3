"""Smoke run of ``benchmarks/listwise_packing.py --quick`` (tiny model): it runs end to end, both forwards
give the same log-probs, the packed batch holds fewer tokens, and the last line is the speedup line.
The speedup itself is not asserted (timings depend on the machine and its load)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "listwise_packing.py"
FINAL = re.compile(r"^listwise_shared_prompt_speedup=\d+\.\d\d$")


def _load_script():
    spec = importlib.util.spec_from_file_location("listwise_packing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_speedup_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    try:
        result = _load_script().main(["--quick", "--threads", "1", "--flops", "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out.strip().splitlines()
    assert FINAL.match(out[-1]), out[-1]
    difference = next(line for line in out if line.startswith("max |padded - packed| log-prob:"))
    assert float(difference.split(":")[1]) < 1e-4
    assert result["tokens"]["shared_prompt"] < result["tokens"]["padded"]
    assert 0 < result["flops"]["shared_prompt"] < result["flops"]["padded"]
    assert all(len(times) == 2 for times in result["times"].values())  # 2 repeats of each forward
    assert json.loads((tmp_path / "r.json").read_text())["speedup"] == result["speedup"] > 0
