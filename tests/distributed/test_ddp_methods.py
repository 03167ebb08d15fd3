"""A listwise (PAD's pd on scored lists) and a token-level (forward-KL KD from a cached teacher top-k) method
on two CPU ranks follow one rank with the global batch, and the teacher table is computed once; a loss that
is non-finite on one rank only stops both (no rank waits for the other).

Why the two runs must agree, and the tolerance: see ``test_ddp_pairwise.py``. Both losses are means of
per-example terms (pd: one Plackett-Luce divergence per list; kd_fkl: each example's token mean), so the
averaged gradients of two batches of 2 are the gradient of the batch of 4. (pad_pd's ``released`` form pools
its mixture over the micro-batch and is not batch-size invariant; the default ``jsd`` is.)
"""

from __future__ import annotations

import pytest
import torch
from ranks_helpers import (
    TWO_RANKS,
    assert_cached_once_by_two_ranks,
    assert_same_training,
    in_process,
    launch,
    lines,
)

pytestmark = pytest.mark.slow

TOL = {"rel": 1e-5, "abs": 1e-5}
LISTWISE = ["method=pad_pd", "data=demo_lists"]
TEACHER_CACHE = "module.teacher_cache=${paths.cache_dir}/teacher_topk"
TOKEN = ["method=kd_fkl", "teacher=tiny", TEACHER_CACHE]


def test_listwise_two_ranks_follow_one_rank(tmp_path):
    one = in_process(tmp_path / "one", *LISTWISE, "data.batch_size=4")
    two = launch(tmp_path, "two", *TWO_RANKS, *LISTWISE, "data.batch_size=2", "logger=csv")
    assert_same_training(one, two, **TOL)


def test_token_level_two_ranks_follow_one_rank_and_share_one_teacher_table(tmp_path):
    one = in_process(tmp_path / "one", *TOKEN, "data.batch_size=4")
    two = launch(tmp_path, "two", *TWO_RANKS, *TOKEN, "data.batch_size=2", "logger=csv")
    assert_same_training(one, two, **TOL)
    for split in ("validation", "train"):
        label = rf"teacher top-64 \[{split}, chosen\]"
        assert_cached_once_by_two_ranks(two.log, label)
    assert not lines(two.log, "reused")
    # the merged tables hold the one-rank tables: rows in order, the same top-k
    files = sorted(p.name for p in (tmp_path / "cache" / "teacher_topk").iterdir())
    assert len(files) == 2 and all(name.endswith(".pt") and ".part-" not in name for name in files)
    for name in files:
        a = torch.load(tmp_path / "one" / "cache" / "teacher_topk" / name, weights_only=True)
        b = torch.load(tmp_path / "cache" / "teacher_topk" / name, weights_only=True)
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["offsets"], b["offsets"])
        assert torch.equal(a["ids"], b["ids"])
        torch.testing.assert_close(b["logps"], a["logps"], rtol=1e-5, atol=1e-5)


def test_a_loss_non_finite_on_one_rank_stops_both_ranks_at_once(tmp_path):
    nan = [
        "+callbacks.nan._target_=train_helpers.NonFiniteLossOnRank",
        "+callbacks.nan.rank=1",
        "+callbacks.nan.step=2",
    ]
    # Exit status 1 (rank 0's error ends the launch), or -9 when Lightning's child-process observer sees a
    # rank end first and kills the launch (its "Forcefully terminating all other processes"): a race between
    # the two ranks' errors, both of which stop the run.
    run = launch(tmp_path, "nan", *TWO_RANKS, "data.batch_size=2", "logger=csv", *nan, expect=(1, -9), timeout=120)
    # rank 0 stops on rank 1's NaN (rank 1 stops on its own, or is ended by rank 0's launcher first)
    assert lines(run.log, r"FloatingPointError: non-finite loss on another rank at step 2 ")
    assert not (run.folder / "metrics.json").exists()
