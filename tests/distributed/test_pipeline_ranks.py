"""Pipeline stages on two CPU ranks: sampling and PAD's teacher scoring split the prompts between the ranks,
every shard and part is written once, rank 0 merges once and writes the marker (an SFT stage runs on rank 0
while rank 1 waits), and a later run reuses every stage on both ranks.

16 prompts in shards of 4: rank r samples shards r and r + 2. Sample j of prompt i is seeded by
(seed, i, j) and a shard is generated as one batch whoever runs it, so the samples equal one rank's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ranks_helpers import TWO_RANKS, in_process, launch, lines

from prefdistill.generation.shards import read_shards

pytestmark = pytest.mark.slow

SHORT = ["trainer.max_steps=2", "pipeline.prepare.sampler.shard_size=4"]
SFT = ["pipeline.prepare.sft_student=${pipeline.sft}", "pipeline.sft.max_steps=2"]  # on rank 0; rank 1 waits
PLAD = ["method=plad", "teacher=tiny", *SHORT, *SFT]
PAD = ["method=pad", "teacher=tiny", *SHORT]


def _stage(cache: Path, name: str) -> Path:
    (folder,) = (cache / "stages").glob(f"{name}-*")
    assert (folder / "_COMPLETE.json").is_file()
    return folder


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plad_samples_each_shard_once_on_its_rank_and_a_rerun_reuses_every_stage(tmp_path):
    run = launch(tmp_path, "plad", *TWO_RANKS, *PLAD, "data.batch_size=2", "logger=csv")
    for role in ("teacher", "student"):
        folder = _stage(tmp_path / "cache", f"samples-{role}")
        for k in range(4):
            wrote = lines(run.log, rf"{folder.name}: rank \d of 2 wrote shard-{k:05d}.jsonl")
            assert len(wrote) == 1 and f"rank {k % 2} of 2" in wrote[0], (role, k, wrote)
        records = read_shards(folder)  # raises unless exactly one record per (prompt, sample)
        assert [(r["index"], r["sample"]) for r in records] == [(i, 0) for i in range(16)]
    for stage in ("sft-student", "samples-teacher", "samples-student", "plad-pairs"):
        assert len(lines(run.log, rf"stage {stage} +ran ")) == 1, stage  # the marker: rank 0, once
    pairs = _jsonl(_stage(tmp_path / "cache", "plad-pairs") / "pairs.jsonl")
    assert [row["id"] for row in pairs] == [r["id"] for r in records]  # one pair per prompt, in order
    assert run.metrics()["global_step"] == 2

    again = launch(tmp_path, "plad-again", *TWO_RANKS, *PLAD, "data.batch_size=2", "logger=csv")
    for stage in ("sft-student", "samples-teacher", "samples-student", "plad-pairs"):
        assert len(lines(again.log, rf"stage {stage} +reused ")) == 2, stage  # both ranks
    assert not lines(again.log, "wrote shard|stage .* ran ")


def test_pad_scores_each_rank_its_prompts_and_merges_the_one_rank_lists(tmp_path):
    run = launch(tmp_path, "pad", *TWO_RANKS, *PAD, "data.batch_size=2", "logger=csv")
    for rank in (0, 1):
        assert len(lines(run.log, rf"PAD lists of rank {rank} of 2 \(8 prompts\)")) == 1
    assert len(lines(run.log, r"stage pad-lists +ran ")) == 1
    folder = _stage(tmp_path / "cache", "pad-lists")
    assert sorted(p.name for p in folder.iterdir()) == ["_COMPLETE.json", "lists.jsonl"]  # parts merged away
    two = _jsonl(folder / "lists.jsonl")

    in_process(tmp_path / "one", *PAD, "data.batch_size=4")
    one = _jsonl(_stage(tmp_path / "one" / "cache", "pad-lists") / "lists.jsonl")
    assert [(r["id"], r["responses"]) for r in two] == [(r["id"], r["responses"]) for r in one]
    assert len(two) == 16
    for a, b in zip(one, two):
        for key in ("scores", "scores_mcq", "scores_logp"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (a["id"], key)
