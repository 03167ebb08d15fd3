"""How work is split between ranks, checked in one process: blocks and batches per rank, the train sampler's
global batches, cache parts merged, sampling shards of two ranks, the W&B id created once."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from prefdistill.data.sampler import ResumableRandomSampler, ShardBatches
from prefdistill.generation import SamplingParams, generate_to_shards, read_shards
from prefdistill.generation.base import Completion
from prefdistill.generation.shards import MANIFEST, finish_shards
from prefdistill.utils.cache import TensorCache, merge_parts
from prefdistill.utils.distributed import part, shard_batches


def test_blocks_cover_the_items_in_order_and_differ_by_at_most_one():
    assert [list(part(7, r, 3)) for r in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
    for n in range(0, 30):
        for world in (1, 2, 3, 8):
            blocks = [part(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_batches_of_one_rank_are_plain_batches():
    assert shard_batches(10, 4, 0, 1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_every_rank_gets_the_same_number_of_batches_and_every_row_once():
    # 9 rows, 2 ranks, batch 4: blocks of 4 and 5 rows; the 5 need 2 batches, so the 4 are cut in 3 + 1
    assert shard_batches(9, 4, 0, 2) == [[0, 1, 2], [3]]
    assert shard_batches(9, 4, 1, 2) == [[4, 5, 6, 7], [8]]
    for n in range(2, 40):
        for world in (2, 3, 4):
            for batch_size in (2, 3, 4, 16):
                if n < world:
                    continue
                per_rank = [shard_batches(n, batch_size, r, world) for r in range(world)]
                assert len({len(b) for b in per_rank}) == 1, (n, world, batch_size)
                rows = [i for batches in per_rank for batch in batches for i in batch]
                assert rows == list(range(n))
                assert all(0 < len(batch) <= batch_size for batches in per_rank for batch in batches)


def test_shard_batches_sampler_yields_its_rank_batches():
    sampler = ShardBatches(9, 4, num_replicas=2, rank=1)
    assert list(sampler) == [[4, 5, 6, 7], [8]] and len(sampler) == 2
    assert isinstance(sampler, torch.utils.data.DistributedSampler)  # Lightning keeps it as it is


def test_two_ranks_of_batch_2_take_the_rows_one_rank_of_batch_4_takes():
    n, seed = 16, 42
    one = list(ResumableRandomSampler(n, seed))
    ranks = [list(ResumableRandomSampler(n, seed, num_replicas=2, rank=r)) for r in (0, 1)]
    for step in range(4):
        together = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert sorted(together) == sorted(one[4 * step : 4 * step + 4])
    assert not set(ranks[0]) & set(ranks[1])


def test_datamodule_reads_its_rank_block_of_held_out_and_cache_splits(tiny_cfg):
    from hydra.utils import instantiate

    from prefdistill.models import load_tokenizer

    cfg = tiny_cfg("data.eval_batch_size=3")
    dm = instantiate(cfg.data, _convert_="all")
    dm.connect(load_tokenizer(instantiate(cfg.model)))
    dm.setup("fit")
    n = len(dm.datasets["validation"])
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    rows = [b["index"].tolist() for b in dm.val_dataloader()]
    assert [i for b in rows for i in b] == list(range(n // 2, n))
    assert rows == [b["index"].tolist() for b in dm.loader("validation")]
    assert [ex["index"] for ex in dm.shard("validation")] == list(range(n // 2, n))


def test_parts_merge_into_one_entry_with_rebased_offsets():
    a = {"index": torch.tensor([0, 1]), "offsets": torch.tensor([0, 2, 5]), "logps": torch.arange(5.0)}
    b = {"index": torch.tensor([2]), "offsets": torch.tensor([0, 3]), "logps": torch.arange(5.0, 8.0)}
    merged = merge_parts([a, b])
    assert merged["index"].tolist() == [0, 1, 2]
    assert merged["offsets"].tolist() == [0, 2, 5, 8]  # row 2's tokens are 5..7
    assert merged["logps"].tolist() == list(range(8))
    with pytest.raises(ValueError, match="share rows"):
        merge_parts([a, a])


def test_one_process_computes_once_then_reuses(tmp_path):
    cache, calls = TensorCache(tmp_path, ("index", "x")), []

    def compute():
        calls.append(1)
        return {"index": torch.arange(3), "x": torch.ones(3)}

    first = cache.load_or_compute("k", compute, "table")
    second = cache.load_or_compute("k", compute, "table")
    assert len(calls) == 1 and torch.equal(first["x"], second["x"])
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]


class EchoGenerator:
    def generate_completions(self, prompts, params, keys=None):
        return [[Completion(f"{k}/{j}", 1, "length") for j in range(params.n)] for k in keys]


def test_two_ranks_sample_alternate_shards_and_one_finish_completes_them(tmp_path):
    prompts, params = [f"prompt {i}" for i in range(7)], SamplingParams(n=2)
    generate_to_shards(EchoGenerator(), prompts, tmp_path, params, shard_size=2, part=(1, 2), progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00001.jsonl", "shard-00003.jsonl"]
    assert not json.loads((tmp_path / MANIFEST).read_text())["complete"]
    with pytest.raises(FileNotFoundError, match="shard-00000"):
        finish_shards(tmp_path)  # rank 0's part is missing
    generate_to_shards(EchoGenerator(), prompts, tmp_path, params, shard_size=2, part=(0, 2), progress=False)
    finish_shards(tmp_path)
    one = tmp_path / "one"
    generate_to_shards(EchoGenerator(), prompts, one, params, shard_size=2, progress=False)
    assert read_shards(tmp_path) == read_shards(one)


def test_the_wandb_id_is_created_once(tmp_path):
    from prefdistill.utils.run import _wandb_id

    first = _wandb_id(str(tmp_path))
    assert _wandb_id(str(tmp_path)) == first == (tmp_path / "wandb_id").read_text().strip()
    assert [p.name for p in tmp_path.iterdir()] == ["wandb_id"]  # no temporary file left
