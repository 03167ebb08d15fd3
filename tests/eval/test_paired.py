"""Paired exact-match comparisons: hand-worked sign tests, deltas, verdicts and the table of a sweep."""

from __future__ import annotations

import json

import pytest

from prefdistill.eval import paired, report


def test_sign_test_matches_the_binomial_by_hand():
    # 5 wins, 0 losses: P(X=0)+P(X=5) = 2/32
    assert paired.sign_test(5, 0) == pytest.approx(2 / 32)
    # 3 wins, 1 loss: 2 * P(X<=1) = 2 * (1 + 4) / 16
    assert paired.sign_test(3, 1) == pytest.approx(10 / 16)
    assert paired.sign_test(2, 2) == 1.0 and paired.sign_test(0, 0) == 1.0


def test_delta_is_the_mean_paired_difference_over_shared_pairs():
    a = {(1, "p1"): True, (1, "p2"): True, (1, "p3"): False, (2, "p1"): True}
    b = {(1, "p1"): False, (1, "p2"): True, (1, "p3"): True, (2, "p1"): False, (3, "p9"): True}
    out = paired.compare(a, b)
    # shared pairs: (1,p1) +1, (1,p2) 0, (1,p3) -1, (2,p1) +1 -> mean 1/4 = 25 points; (3,p9) unpaired
    assert out["delta"] == pytest.approx(25.0) and out["pairs"] == 4 and out["prompts"] == 3
    assert (out["wins"], out["losses"]) == (2, 1) and out["p"] == pytest.approx(1.0)
    assert out["verdict"] == "can't tell"
    assert paired.compare(a, {(9, "x"): True}) is None


def test_a_reference_row_without_a_seed_pairs_with_every_seed_of_the_row():
    # a one-seed sweep evaluates the initial student once (seed None); the row ran under seeds 1 and 2
    reference = {(None, "p1"): False, (None, "p2"): True}
    row = {(1, "p1"): True, (1, "p2"): True, (2, "p1"): True, (2, "p2"): False}
    out = paired.compare(row, reference)
    # pairs: (1,p1) +1, (1,p2) 0, (2,p1) +1, (2,p2) -1 -> mean 1/4 = 25 points over 4 pairs, 2 prompts
    assert out["delta"] == pytest.approx(25.0) and (out["pairs"], out["prompts"]) == (4, 2)
    assert (out["wins"], out["losses"]) == (2, 1)
    mirror = paired.compare(reference, row)
    assert mirror["delta"] == pytest.approx(-25.0) and (mirror["wins"], mirror["losses"]) == (1, 2)
    assert paired.compare(reference, {(None, "p1"): True})["pairs"] == 1  # two seedless runs pair by prompt


def test_a_consistent_lead_is_better_and_its_mirror_worse():
    a = {(s, f"p{i}"): True for s in (1, 2, 3) for i in range(30)}
    b = {(s, f"p{i}"): i % 3 == 0 for s in (1, 2, 3) for i in range(30)}  # b right on a third
    ahead = paired.compare(a, b)
    assert ahead["delta"] == pytest.approx(200 / 3) and ahead["verdict"] == "better"
    assert ahead["ci"][0] > 0 and ahead["p"] < 1e-6
    behind = paired.compare(b, a)
    assert behind["verdict"] == "worse" and behind["delta"] == pytest.approx(-200 / 3)
    assert paired.compare(a, b, seed=3) == paired.compare(a, b, seed=3)  # seeded bootstrap


def test_the_bootstrap_resamples_prompts_not_pairs():
    # one prompt decides everything: with every seed of p0 a win and all else tied, a cluster bootstrap
    # draws p0 in some resamples and not in others, so its interval reaches 0
    a = {(s, f"p{i}"): i == 0 for s in range(20) for i in range(10)}
    b = {(s, f"p{i}"): False for s in range(20) for i in range(10)}
    out = paired.compare(a, b)
    assert out["delta"] == pytest.approx(10.0) and out["ci"][0] == 0.0
    assert out["verdict"] == "can't tell"


def test_two_runs_with_one_label_and_seed_are_refused():
    with pytest.raises(ValueError, match="two runs labelled 'SFT' under seed 1"):
        paired.by_label([("SFT", 1, {"a": True}), ("SFT", 1, {"a": False})])


def _write_run(folder, label, seed, correct):
    out = folder / "eval_demo"
    out.mkdir(parents=True)
    (folder / "config_resolved.yaml").write_text(f"seed: {seed}\n")
    rows = [{"id": i, "output": "x", "exact_match": c} for i, c in correct.items()]
    rows.append({"id": "open-ended", "output": "x", "exact_match": None})
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = {"exact_match/overall": 100.0 * sum(correct.values()) / len(correct), "n": len(correct)}
    (out / report.RESULTS_FILE).write_text(json.dumps({"label": label, "metrics": metrics}))


def test_compare_appends_the_paired_table_of_a_sweep_over_seeds(tmp_path):
    prompts = [f"p{i}" for i in range(12)]
    for seed in (1, 2):
        _write_run(tmp_path / f"s{seed}_0", "SFT", seed, {p: i < 4 for i, p in enumerate(prompts)})
        _write_run(tmp_path / f"s{seed}_1", "KD", seed, {p: i < 6 for i, p in enumerate(prompts)})
    table, _ = report.compare([tmp_path], out_dir=tmp_path, paired_against=["SFT", "Missing"])
    section = table.split("Paired exact-match comparisons:")[1]
    kd = next(line for line in section.splitlines() if line.startswith("| KD"))
    # KD right on 2 more of 12 prompts under both seeds: +16.7 points, 4 wins, 0 losses, p = 2/16
    assert "+16.7" in kd and "4:0" in kd and "p=0.12" in kd
    assert "vs Missing" not in section and (tmp_path / "compare.md").read_text().count("Paired") == 1
    assert paired.seed_of(tmp_path / "s2_1" / "eval_demo" / report.RESULTS_FILE) == 2
    plain, _ = report.compare([tmp_path])
    assert "Paired" not in plain  # only when asked for


def test_seed_of_a_reference_row_comes_from_its_folder(tmp_path):
    results = tmp_path / "reference_rows" / "seed_3" / "teacher" / report.RESULTS_FILE
    results.parent.mkdir(parents=True)
    assert paired.seed_of(results) == 3
    assert paired.seed_of(tmp_path / "x" / "y" / report.RESULTS_FILE) is None
