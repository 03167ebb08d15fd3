"""Run cost: stage seconds and tokens from their markers and shards, training totals, table cells, and
the comparison table with exact match (+ CI), cost columns and the per-family table."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from prefdistill.callbacks import ThroughputMonitor, fit_totals
from prefdistill.eval import report
from prefdistill.pipeline.stages import MARKER, Stage
from prefdistill.utils import cost


def _stage(root, name, seconds, info=None, shards=()):
    """A finished stage folder as ``Stage.run`` leaves it; ``shards``: num_tokens per sample, per shard."""
    folder = root / "stages" / f"{name}-abc"
    folder.mkdir(parents=True)
    for k, tokens in enumerate(shards):
        rows = [{"index": i, "sample": 0, "response": "x", "num_tokens": t} for i, t in enumerate(tokens)]
        (folder / f"shard-{k:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    marker = {"name": name, "inputs_hash": "abc", "inputs": {}, "info": info, "seconds": seconds}
    (folder / MARKER).write_text(json.dumps(marker))
    return SimpleNamespace(name=name, path=folder, status="reused")


def test_stage_cost_reads_marker_seconds_and_sampled_tokens(tmp_path):
    sampled = _stage(tmp_path, "samples-teacher", 41.5, {"prompts": 3}, shards=[[10, 20], [7]])
    assert cost.stage_cost(sampled.path) == {
        "name": "samples-teacher", "status": "reused", "seconds": 41.5, "tokens": 37,
    }  # fmt: skip
    told = _stage(tmp_path, "sft-student", 200.0, {"model": "m", "tokens": 12345})
    assert cost.stage_cost(told.path, "ran")["tokens"] == 12345
    assert cost.stage_cost(_stage(tmp_path, "pairs", 1.0).path)["tokens"] is None


def test_run_cost_adds_stages_and_training(tmp_path):
    stages = [
        _stage(tmp_path, "sft-student", 200.0),  # tokens not recorded
        _stage(tmp_path, "samples-student", 40.0, shards=[[5, 5]]),
        _stage(tmp_path, "samples-teacher", 30.0, shards=[[8, 2]]),
    ]
    run = tmp_path / "run"
    cost.record_stage_costs(stages, run)
    monitor = ThroughputMonitor()
    monitor.load_state_dict({"tokens": 1000, "forward_tokens": 2000, "fit_s": 60.25})
    record = cost.run_cost(run, monitor.totals())
    assert record["pipeline_s"] == 270.0 and record["pipeline_tokens"] == 20
    assert (record["fit_s"], record["train_tokens"], record["policy_tokens"]) == (60.25, 2000, 1000)
    assert record["total_s"] == 330.2 and record["total_tokens"] == 2020  # 270 + 60.25, rounded
    assert record["tokens_unknown"] == ["sft-student"]
    assert [s["name"] for s in record["stages"]] == ["sft-student", "samples-student", "samples-teacher"]
    assert fit_totals(SimpleNamespace(callbacks=[monitor])) == monitor.totals()  # what train.py passes
    bare = cost.run_cost(tmp_path / "no-pipeline", fit_totals(SimpleNamespace(callbacks=[])))
    assert bare["total_s"] == 0.0 and bare["tokens_unknown"] == ["training"]


def test_table_cost_of_a_run_and_of_a_stage_model(tmp_path):
    run = tmp_path / "run"
    (run / "eval_demo").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"cost": {"total_s": 12.5, "total_tokens": 999}}))
    assert cost.table_cost({}, run / "eval_demo" / "eval_results.json") == {
        "cost/seconds": 12, "cost/tokens": 999, "cost/tokens_unknown": [],
    }  # fmt: skip
    teacher = _stage(tmp_path, "sft-teacher", 88.0, {"tokens": 4096})
    row = tmp_path / "reference_rows" / "teacher" / "eval_results.json"
    result = {"model": {"name_or_path": str(teacher.path / "model")}}
    assert cost.table_cost(result, row) == {"cost/seconds": 88, "cost/tokens": 4096, "cost/tokens_unknown": []}
    student = _stage(tmp_path, "sft-student", 10.4)  # its tokens not recorded: unknown, not 0
    result = {"model": {"name_or_path": str(student.path / "model")}}
    assert cost.table_cost(result, row) == {
        "cost/seconds": 10, "cost/tokens": None, "cost/tokens_unknown": ["sft-student"],
    }  # fmt: skip
    assert cost.table_cost({"model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}}, row) == {}


def _result(label, em, ci, families, **extra):
    metrics = {"n": 40, "word_count": 6.5, "rougeL": 80.0, "exact_match/overall": em, "exact_match/n": 30}
    metrics.update({f"exact_match/{f}": v for f, v in families.items()})
    details = {"exact_match": {"overall": {"accuracy": em, "ci": ci, "n": 30}}}
    return {"label": label, "suite": "demo", "metrics": {**metrics, **extra}, "details": details, "scorers": {}}


def test_compare_shows_exact_match_ci_cost_and_families(tmp_path):
    run = tmp_path / "multirun" / "0"
    (run / "eval_demo").mkdir(parents=True)
    (run / "eval_demo" / report.RESULTS_FILE).write_text(
        json.dumps(_result("PLaD", 50.0, [33.3, 66.7], {"arith": 40.0, "capital": 100.0}))
    )
    run_cost = {"total_s": 321.0, "total_tokens": 123456, "tokens_unknown": ["sft-student"]}
    (run / "metrics.json").write_text(json.dumps({"cost": run_cost}))
    other = tmp_path / "multirun" / "reference_rows" / "base"
    other.mkdir(parents=True)
    (other / report.RESULTS_FILE).write_text(json.dumps(_result("Base", 10.0, [0.0, 20.0], {"arith": 10.0})))
    table, _ = report.compare([tmp_path / "multirun"], tmp_path / "out")
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Run", "Word Count", "EM (%)", "R-L", "Time (s)", "Tokens", "N"]
    rows = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:4])}
    assert rows["PLaD"] == ["PLaD", "6.50", "50.00 [33.3, 66.7]", "80.00", "321", "123456", "40"]
    assert rows["Base"] == ["Base", "6.50", "10.00 [0.0, 20.0]", "80.00", "-", "-", "40"]
    assert "Time / Tokens = wall-clock seconds" in table
    assert "Tokens leave out what recorded none (its seconds are in Time): sft-student" in table
    families = table.split("Exact match by task family (%):")[1].strip().splitlines()
    assert [c.strip() for c in families[0].strip("|").split("|")] == ["Run", "arith", "capital", "overall", "N"]
    assert {line.split("|")[1].strip(): line for line in families[2:]}["Base"].split("|")[3].strip() == "-"
    assert (tmp_path / "out" / "compare.md").read_text().strip() == table


def test_format_table_without_ci_keeps_plain_cells():
    table = report.format_table([("x", {"exact_match/overall": 12.5, "rm/ts_win_rate": 60.0})])
    assert "|  12.50 |" in table and "[" not in table


@pytest.mark.parametrize(
    ("module", "want"),
    [
        (SimpleNamespace(), {"policy": True, "reference": False, "teacher": False}),
        (SimpleNamespace(needs_reference=True, reference_cache=None), {"reference": True}),
        (SimpleNamespace(needs_reference=True, reference_cache="cache"), {"reference": False}),
        (SimpleNamespace(teacher_spec="t", teacher_cache=None), {"teacher": True}),
        (SimpleNamespace(teacher_spec="t", teacher_cache="cache"), {"teacher": False}),
    ],
)
def test_models_forwarded(module, want):
    from prefdistill.callbacks.throughput import models_forwarded

    got = models_forwarded(module)
    assert {k: got[k] for k in want} == want


def test_stage_run_writes_the_marker_stage_cost_reads(tmp_path):
    result = Stage("pairs", "h1", lambda folder: {"pairs": 2, "tokens": 5}).run(tmp_path)
    record = cost.stage_cost(result.path, result.status)
    assert record["name"] == "pairs" and record["status"] == "ran" and record["tokens"] == 5
    assert record["seconds"] >= 0.0
