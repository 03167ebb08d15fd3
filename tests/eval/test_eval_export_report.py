"""AlpacaEval export on a 3-row fixture, and the comparison table from two fake run folders."""

from __future__ import annotations

import json

import pytest

from prefdistill.eval import report
from prefdistill.eval.alpaca import export_model_outputs, load_instructions

ROWS = [
    {
        "instruction": "What are the names of some famous actors?",
        "output": "ref 1",
        "generator": "gpt4",
        "dataset": "helpful_base",
    },
    {
        "instruction": "Write a haiku about  rain.\n",
        "output": "ref 2",
        "generator": "gpt4",
        "dataset": "oasst",
    },
    {"instruction": 'How do I make "pancakes"?', "output": "ref 3", "generator": "gpt4", "dataset": "vicuna"},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_alpacaeval_export_format(tmp_path, suffix):
    fixture = tmp_path / f"alpaca_eval{suffix}"
    fixture.write_text(json.dumps(ROWS) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in ROWS))
    rows = load_instructions(str(fixture))
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]  # byte-identical strings
    path = export_model_outputs(
        rows, ["out 1", "out 2", "out 3"], "my-model", tmp_path / "model_outputs.json"
    )
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 3
    assert data[1] == {
        "instruction": ROWS[1]["instruction"],
        "output": "out 2",
        "generator": "my-model",
        "dataset": "oasst",
    }
    with pytest.raises(ValueError):
        export_model_outputs(rows, ["only one"], "my-model", tmp_path / "x.json")


def _fake_run(root, name, metrics, scorers):
    folder = root / name / "eval_tldr"
    folder.mkdir(parents=True)
    result = {"label": name, "suite": "tldr", "metrics": metrics, "scorers": scorers}
    (folder / report.RESULTS_FILE).write_text(json.dumps(result))
    return folder


def test_compare_table_from_two_runs(tmp_path):
    rm = {"rm": "rm:OpenAssistant/reward-model-deberta-v3-large-v2"}
    _fake_run(tmp_path / "multirun", "0", {"n": 100, "word_count": 25.51, "rouge1": 33.14, "rouge2": 11.4,
              "rougeL": 25.31, "rm/win_rate": 45.28, "rm/ts_win_rate": 64.86}, rm)  # fmt: skip
    _fake_run(tmp_path / "multirun", "1", {"n": 100, "word_count": 26.02, "rouge1": 31.46, "rouge2": 10.79,
              "rougeL": 24.91, "rm/win_rate": 40.46, "judge/win_rate": 55.0}, {**rm, "judge": "judge:gpt-4o:tldr"})  # fmt: skip
    table, results = report.compare([tmp_path / "multirun"], tmp_path / "out")
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "Run",
        "Word Count",
        "R-1",
        "R-2",
        "R-L",
        "RM WR (%)",
        "T-S WR (%)",
        "Judge WR (%)",
        "N",
    ]
    row0 = [c.strip() for c in lines[2].strip("|").split("|")]
    row1 = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row0 == ["0", "25.51", "33.14", "11.40", "25.31", "45.28", "64.86", "-", "100"]
    assert row1[-3:] == ["-", "55.00", "100"]
    assert (
        "RM = rm:OpenAssistant/reward-model-deberta-v3-large-v2" in table
        and "judge = judge:gpt-4o:tldr" in table
    )
    assert (tmp_path / "out" / "compare.md").read_text().strip() == table
    assert len(json.loads((tmp_path / "out" / "compare.json").read_text())) == 2
    with pytest.raises(FileNotFoundError):
        report.compare([tmp_path / "nothing-here"])


def test_offline_columns_are_labelled(tmp_path):
    table = report.format_table(
        [("demo", {"word_count": 5.0, "offline/score": 0.8, "offline/ts_win_rate": 40.0})],
        report.footnotes([{"scorers": {"offline": "offline:minilm-l6-cos"}}]),
    )
    assert "offline: score" in table and "offline: T-S WR (%)" in table and "RM WR" not in table
    assert "offline:minilm-l6-cos (offline stand-in, NOT a reward model)" in table


def test_rows_run_with_several_seeds_become_mean_and_std(tmp_path):
    """Two seeds of PLaD and one of SFT: PLaD's EM 40 and 50 -> 45.00 ± 7.07 (sample std: |40-50|/sqrt 2),
    SFT keeps its single value; every run stays in compare_per_seed.md."""
    for job, (label, em, wc) in enumerate([("PLaD", 40.0, 6.0), ("SFT", 70.0, 5.0), ("PLaD", 50.0, 8.0)]):
        folder = tmp_path / "sweep" / str(job) / "eval_demo"
        folder.mkdir(parents=True)
        result = {"label": label, "metrics": {"n": 100, "word_count": wc, "exact_match/overall": em}}
        (folder / report.RESULTS_FILE).write_text(json.dumps(result))
    table, _ = report.compare([tmp_path / "sweep"], tmp_path / "sweep")
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:4])
    }
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header == ["Run", "Word Count", "EM (%)", "N", "Seeds"]
    assert rows["PLaD"] == ["7.00 ± 1.41", "45.00 ± 7.07", "100", "2"]
    assert rows["SFT"] == ["5.00", "70.00", "100", "1"]
    assert "mean ± std" in table
    per_seed = (tmp_path / "sweep" / "compare_per_seed.md").read_text()
    assert per_seed.count("| PLaD") == 2 and "50.00" in per_seed and "40.00" in per_seed
    assert (tmp_path / "sweep" / "compare.md").read_text().strip() == table


def test_mean_std_rows_skip_missing_and_nan_values():
    merged = dict(
        report.mean_std_rows([("a", {"x": 1.0, "y": float("nan")}), ("a", {"x": 3.0}), ("b", {"x": 2})])
    )
    assert merged["a"]["x"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert "y" not in merged["a"] and merged["b"]["x"] == {"mean": 2, "std": 0.0, "n": 1}
