"""prefdistill.analysis.tables: the method comparison of hand-made runs, cell by cell."""

from __future__ import annotations

from run_folders import make_run

from prefdistill import analysis


def test_comparison_table(tmp_path):
    make_run(tmp_path / "0", "dpo", 0.1, accuracy=0.8, evaluated=True)
    make_run(tmp_path / "1", "simpo", 2.0, accuracy=0.9)
    make_run(tmp_path / "2", "simpo", 2.5, finished=False)
    text = analysis.comparison_table(analysis.runs_table(tmp_path))
    lines = text.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("| ")]
    assert cells[0] == ["Run", "Method", "Model", "beta", "Steps", "Acc before", "Acc", "Margin before",
                        "Margin", "Val loss before", "Val loss", "Train loss", "R-1", "offline: WR (%)"]  # fmt: skip
    # run 0: val/loss after = 0.6 - beta / 10 = 0.590, margin after = beta
    assert cells[1] == ["0", "dpo", "SmolLM2-135M", "0.100", "3", "0.000", "0.800", "0.000", "0.100",
                        "0.693", "0.590", "0.500", "30.250", "61.500"]  # fmt: skip
    assert cells[3][:5] == ["2", "simpo", "SmolLM2-135M", "2.500", "-"]
    assert "offline = all-MiniLM-L6-v2 embedding similarity (offline stand-in" in text
    assert "no metrics.json yet (running or stopped): 2" in text
