"""Search sweeps: the table, the choice (ties to the earlier job, unfinished jobs never chosen), the tuned row."""

from __future__ import annotations

import json

import pytest
import yaml

from prefdistill.eval import search


def _job(sweep, name, overrides, guarded=None, em=None, degenerate=False):
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if guarded is not None:
        after = {"eval/guarded/exact_match": guarded, "eval/exact_match/overall": em,
                 "eval/degeneracy/answer_rate": 10.0 if degenerate else 95.0,
                 "eval/degeneracy/repeat2": 1.0, "eval/degeneracy/length_ratio": 1.0}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps({"after": after, "wall_time_s": 60.0}))
    return folder


def _sweep(tmp_path):
    sweep = tmp_path / "plad"
    _job(sweep, "0", ["row=plad", "module.optimizer.lr=1e-5", "method.margin=0.1"], 12.0, 12.0)
    _job(sweep, "1", ["row=plad", "module.optimizer.lr=1e-4", "method.margin=0.1"], 20.0, 20.0)
    _job(sweep, "2", ["row=plad", "module.optimizer.lr=1e-5", "method.margin=1.0"], 20.0, 20.0)  # tie: later
    _job(sweep, "3", ["row=plad", "module.optimizer.lr=1e-4", "method.margin=1.0"], 40.0 - 1000, 40.0, True)
    _job(sweep, "10", ["row=plad", "module.optimizer.lr=5e-4", "method.margin=1.0"])  # killed: no metrics
    return sweep


def test_choice_is_the_best_guarded_job_ties_to_the_earlier(tmp_path):
    jobs = search.read_jobs(_sweep(tmp_path))
    assert [j.folder.name for j in jobs] == ["0", "1", "2", "3", "10"]  # numbers in job order
    assert search.swept_keys(jobs) == ["module.optimizer.lr", "method.margin"]
    best = search.choose(jobs, "eval/guarded/exact_match")
    assert best.folder.name == "1"  # 20 ties with job 2; job 3's 40 % EM broke the guard


def test_table_and_files_of_a_search(tmp_path):
    sweep = _sweep(tmp_path)
    rows = tmp_path / "rows"
    rows.mkdir()
    table = search.summarize(sweep, "eval/guarded/exact_match", write_rows=rows)
    lines = {line.split("|")[1].strip() + "," + line.split("|")[2].strip(): line for line in table.splitlines()
             if line.startswith("| 1e-") or line.startswith("| 5e-")}  # fmt: skip
    assert "chosen" in lines["1e-4,0.1"] and "fail" in lines["1e-4,1.0"] and "missing" in lines["5e-4,1.0"]
    assert "4 of 5 jobs finished; wall time of the finished jobs 240 s" in table
    chosen = json.loads((sweep / "chosen.json").read_text())
    assert chosen["overrides"] == {"module.optimizer.lr": "1e-4", "method.margin": "0.1"} and chosen["value"] == 20.0
    tuned = yaml.safe_load((rows / "plad_tuned.yaml").read_text())
    assert tuned == {"defaults": ["plad"], "module": {"optimizer": {"lr": 1e-4}}, "method": {"margin": 0.1}}
    assert (sweep / "search.md").read_text().startswith("Search plad (row plad)")


def test_a_search_over_two_rows_or_with_nothing_finished_is_refused(tmp_path):
    sweep = tmp_path / "mixed"
    _job(sweep, "0", ["row=plad", "module.optimizer.lr=1e-5"], 1.0, 1.0)
    _job(sweep, "1", ["row=kd", "module.optimizer.lr=1e-5"], 1.0, 1.0)
    with pytest.raises(ValueError, match="different rows"):
        search.summarize(sweep, "eval/guarded/exact_match")
    empty = tmp_path / "empty"
    _job(empty, "0", ["row=kd", "module.optimizer.lr=1e-5"])
    with pytest.raises(ValueError, match="no finished job"):
        search.choose(search.read_jobs(empty), "eval/guarded/exact_match")


def test_collapse_table_shows_both_likelihoods_and_their_gap(tmp_path):
    sweep = tmp_path / "collapse"
    folder = _job(sweep, "0", ["row=plad", "module.optimizer.lr=5e-5"], 0.0, 0.0, degenerate=True)
    _job(sweep, "1", ["row=plad", "module.optimizer.lr=1e-5"], 10.0, 10.0)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["before"] = {"val/logps/chosen_per_token": -0.5, "val/logps/rejected_per_token": -1.0}
    metrics["after"] |= {"val/logps/chosen_per_token": -4.5, "val/logps/rejected_per_token": -9.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    table = search.collapse_table(search.read_jobs(sweep))
    row = next(line for line in table.splitlines() if line.startswith("| 5e-5"))
    # both sides fall, the gap grows from 0.5 to 4.5 nats per token, answers stop
    assert "-0.5 → -4.5" in row and "-1 → -9" in row and "0.5 → 4.5" in row and "|       10 |" in row
    assert "- → -" in next(line for line in table.splitlines() if line.startswith("| 1e-5"))
