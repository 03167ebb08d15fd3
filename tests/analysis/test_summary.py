"""prefdistill.analysis.summary: the table a sweep ends with, with and without an evaluation suite."""

from __future__ import annotations

import json

from run_folders import make_run

from prefdistill.analysis.summary import NO_EVAL_NOTE, SUMMARY_FILE, sweep_summary


def _table(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]


def test_summary_of_a_sweep_without_evaluation(tmp_path):
    for job, beta in (("0_method.beta=0.1", 0.1), ("1_method.beta=0.5", 0.5)):
        run = make_run(tmp_path / job, "dpo", beta)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["cost"] = {"total_s": 12.5, "total_tokens": 4096}
        metrics["paths"]["wandb"] = str(run / "wandb" / "offline-run-x")
        (run / "metrics.json").write_text(json.dumps(metrics))
    text = sweep_summary(tmp_path, out_dir=tmp_path)
    table = _table(text)
    assert table[0][:4] == ["Run", "Method", "Model", "beta"] and table[0][-2:] == ["Time (s)", "Tokens"]
    assert [row[0] for row in table[1:]] == ["0_method.beta=0.1", "1_method.beta=0.5"]
    assert table[1][-2:] == ["12.500", "4096"]
    assert NO_EVAL_NOTE in text
    assert f"- 0_method.beta=0.1: {tmp_path / '0_method.beta=0.1'} (wandb sync {tmp_path}/0_method.beta=0.1/wandb/offline-run-x)" in text
    assert (tmp_path / SUMMARY_FILE).read_text() == text + "\n"


def test_summary_with_an_evaluation_suite_shows_its_columns(tmp_path):
    make_run(tmp_path / "0", "dpo", 0.1, evaluated=True)
    make_run(tmp_path / "1", "dpo", 0.5, evaluated=True)
    text = sweep_summary(tmp_path)
    assert {"R-1", "offline: WR (%)"} <= set(_table(text)[0]) and NO_EVAL_NOTE not in text
    assert "offline = all-MiniLM-L6-v2 embedding similarity" in text
