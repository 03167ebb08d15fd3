"""DPO on two CPU ranks (DDP over gloo) against one rank: the same run, caches computed once, one set of
outputs, and a kill of both ranks that resumes where the uninterrupted run went.

The comparison is fair by construction: one rank with batch 4 and two ranks with batch 2 see the same 4
rows at every step. The epoch's permutation is the same; rank ``r`` takes its positions ``r, r+2, ...``,
so its ``k``-th batch of 2 holds positions ``4k + r`` and ``4k + 2 + r``, and the two ranks together hold
positions ``4k .. 4k+3``, the one-rank batch (16 rows: no padding). The DPO loss is a mean of per-pair
terms and DDP averages the two ranks' gradients of their 2-pair means, which is the gradient of the
4-pair mean; clipping then sees the same global norm.

Tolerance ``rel=1e-5, abs=1e-5``: only the order of float32 additions differs (gradients summed by gloo
across ranks, reference log-probs and held-out batches of 2 rows instead of 4, packed with other
padding). Log-probs are sums of ~50 token terms of size ~100 (float32 spacing 8e-6 there), and rewards
are beta = 0.1 times differences of such sums, so a few units in the last place of a log-prob is ~1e-6
absolute; after 6 Adam steps on this tiny model the measured gap is below 2e-6 (5e-7 relative on the loss).
"""

from __future__ import annotations

import json

import pytest
import torch
from ranks_helpers import (
    TWO_RANKS,
    assert_cached_once_by_two_ranks,
    assert_same_training,
    in_process,
    launch,
    lines,
    recorded,
    wait_gone,
)

pytestmark = pytest.mark.slow

RECORD = ["+callbacks.record._target_=train_helpers.RecordRankBatches"]
KILL = ["+callbacks.killer._target_=train_helpers.KillAtStep", "+callbacks.killer.step=3"]
TOL = {"rel": 1e-5, "abs": 1e-5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One rank (batch 4) and two ranks (batch 2 each) of the same 6-step DPO run."""
    tmp = tmp_path_factory.mktemp("dpo")
    one = in_process(tmp / "one", "data.batch_size=4")
    record = tmp / "straight.jsonl"
    two = launch(tmp, "straight", *TWO_RANKS, "data.batch_size=2", "logger=wandb", *RECORD,
                 f"+callbacks.record.path={record}")  # fmt: skip
    return tmp, one, two, record


def test_two_ranks_follow_one_rank_with_the_global_batch(runs):
    _, one, two, _ = runs
    assert_same_training(one, two, **TOL)
    assert two.metrics()["after"]["val/loss"] < two.metrics()["before"]["val/loss"]  # it trained


def test_reference_log_probs_are_computed_once_each_rank_its_half(runs):
    tmp, one, two, _ = runs
    for split in ("validation", "train"):
        label = rf"reference log-probs \[{split}\]"
        assert_cached_once_by_two_ranks(two.log, label)
    files = sorted((tmp / "cache" / "reference_logps").iterdir())
    assert [f.suffix for f in files] == [".pt", ".pt"]  # one file per split, the parts removed
    # the merged table is the one-rank table: rows in order, the same log-probs
    for name in [f.name for f in files]:
        a = torch.load(one.folder.parent.parent / "cache" / "reference_logps" / name, weights_only=True)
        b = torch.load(tmp / "cache" / "reference_logps" / name, weights_only=True)
        assert torch.equal(a["index"], b["index"]) and torch.equal(b["index"], torch.arange(16))
        torch.testing.assert_close(b["chosen"], a["chosen"], rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(b["rejected"], a["rejected"], rtol=1e-6, atol=1e-4)


def test_metrics_are_written_once_and_wandb_has_one_run(runs):
    _, _, two, _ = runs
    assert len(lines(two.log, r"\[prefdistill.train\]\[INFO\] - metrics: ")) == 1
    offline = list((two.folder / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith((two.folder / "wandb_id").read_text().strip())
    assert two.metrics()["paths"]["wandb"] == str(offline[0])
    assert sorted(p.name for p in two.folder.iterdir() if p.name.endswith(".json")) == [
        "metrics.json",
        "policy_spec.json",
        "run_fingerprint.json",
    ]


def test_each_rank_trains_on_its_own_rows(runs):
    _, _, _, record = runs
    batches = recorded(record)
    assert [(rank, step) for rank, step, _ in batches] == [(r, s) for s in range(6) for r in (0, 1)]
    epoch = [row for _, step, rows in batches if step < 4 for row in rows]
    assert sorted(epoch) == list(range(16))  # epoch 0: every row once, over both ranks
    for step in range(6):
        a, b = (set(rows) for _, s, rows in batches if s == step)
        assert len(a) == len(b) == 2 and not a & b


def test_both_ranks_killed_resume_to_the_uninterrupted_run(runs):
    tmp, _, two, record = runs
    killed_record = tmp / "killed.jsonl"
    common = [*TWO_RANKS, "data.batch_size=2", "logger=csv", "callbacks.model_checkpoint.every_n_train_steps=2",
              *RECORD]  # fmt: skip
    killed = launch(tmp, "resumed", *common, *KILL, f"+callbacks.record.path={killed_record}", expect=-9)
    wait_gone(killed_record.with_name(killed_record.name + ".pids"))
    assert (killed.folder / "checkpoints" / "last.ckpt").is_file()
    assert not (killed.folder / "metrics.json").exists()
    resumed_record = tmp / "resumed.jsonl"
    resumed = launch(tmp, "resumed", *common, f"+callbacks.record.path={resumed_record}")
    assert len(lines(resumed.log, r"\[prefdistill.train\]\[INFO\] - resuming run resumed from step 2 of")) == 2
    # caches: written by the first run, read by both ranks of each later one, never computed again
    assert not lines(killed.log + resumed.log, "computed and cached")  # (the preflight plan says "computed by")
    assert len(lines(resumed.log, r"reference log-probs \[train\]: reused")) == 2
    # rows: steps 0-1 from the killed launch (its step-2 checkpoint), 2-5 from the resumed one
    effective = [b for b in recorded(killed_record) if b[1] < 2] + recorded(resumed_record)
    assert effective == recorded(record)
    a, b = two.metrics(), json.loads((resumed.folder / "metrics.json").read_text())
    for key, value in a["after"].items():
        assert b["after"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
