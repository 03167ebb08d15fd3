"""Reference log-prob cache: keys, torn files, equivalence with the live reference, reuse across jobs."""

from __future__ import annotations

import pytest
import torch

from prefdistill.modules import PreferenceModule
from prefdistill.modules.reference_cache import ReferenceCache, lookup_table
from prefdistill.train import train
from prefdistill.utils.cache import tokenized_data_key as cache_key

EXAMPLES = [
    {"index": 0, "prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
    {"index": 3, "prompt_ids": [1, 9], "chosen_ids": [7], "rejected_ids": [8, 8]},
]
IDENTITY = {"name_or_path": "tiny", "dtype": "float32", "seed": 0}


def test_key_changes_with_everything_that_changes_the_logps():
    base = cache_key(EXAMPLES, IDENTITY)
    assert cache_key([dict(e) for e in EXAMPLES], dict(IDENTITY)) == base
    other_tokens = [EXAMPLES[0], {**EXAMPLES[1], "chosen_ids": [7, 1]}]  # tokenizer/template/truncation
    other_rows = [EXAMPLES[0], {**EXAMPLES[1], "index": 4}]  # split / dataset rows
    assert cache_key(other_tokens, IDENTITY) != base
    assert cache_key(other_rows, IDENTITY) != base
    assert cache_key(EXAMPLES[:1], IDENTITY) != base
    assert cache_key(EXAMPLES, {**IDENTITY, "dtype": "bfloat16"}) != base
    assert cache_key(EXAMPLES, {**IDENTITY, "revision": "abc"}) != base


def test_round_trip_and_lookup(tmp_path):
    cache = ReferenceCache(tmp_path)
    path = cache.save("k", torch.tensor([0, 3]), torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -4.0]))
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))
    table = lookup_table(cache.load("k"))
    assert table.shape == (4, 2)
    assert table[3].tolist() == [-2.0, -4.0]
    assert torch.isnan(table[1]).all()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_key"])
def test_a_torn_or_foreign_file_is_never_read(tmp_path, damage):
    cache = ReferenceCache(tmp_path)
    path = cache.save("k", torch.tensor([0]), torch.tensor([-1.0]), torch.tensor([-2.0]))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:
        cache.save("other", torch.tensor([0]), torch.tensor([-1.0]), torch.tensor([-2.0]))
        path.write_bytes(cache.path("other").read_bytes())
    assert cache.load("k") is None


def _run(tiny_cfg, *extra):
    result = train(tiny_cfg("save_model=false", "trainer.max_steps=2", *extra))
    return result


def test_cached_reference_gives_the_same_training_as_the_live_reference(tiny_cfg, tmp_path):
    live = _run(tiny_cfg, "module.reference_cache=null")
    cached = _run(tiny_cfg, f"module.reference_cache={tmp_path / 'ref'}")
    for key in ("val/loss", "val/reward/margin", "before/val/loss"):
        assert cached[key] == pytest.approx(live[key], rel=1e-4, abs=1e-6), key


def test_second_sweep_job_reuses_the_cache(tiny_cfg, tmp_path, monkeypatch):
    calls = []
    original = PreferenceModule._compute_reference

    def counting(self, loader, split):
        calls.append(split)
        return original(self, loader, split)

    monkeypatch.setattr(PreferenceModule, "_compute_reference", counting)
    ref = f"module.reference_cache={tmp_path / 'ref'}"
    _run(tiny_cfg, ref, "method.beta=0.1")
    assert sorted(calls) == ["train", "validation"]
    calls.clear()
    _run(tiny_cfg, ref, "method.beta=0.5", "module.optimizer.lr=1e-3")  # another sweep point
    assert calls == []
    _run(tiny_cfg, ref, "data.max_prompt_length=8")  # other tokens (prompts cut) -> recomputed
    assert sorted(calls) == ["train", "validation"]


def test_no_reference_model_is_held_with_the_cache(tiny_cfg, tmp_path, monkeypatch):
    held = {}
    original = PreferenceModule.on_fit_start if hasattr(PreferenceModule, "on_fit_start") else None

    def spy(self):
        held["reference"] = self.reference
        if original:
            original(self)

    monkeypatch.setattr(PreferenceModule, "on_fit_start", spy)
    _run(tiny_cfg, f"module.reference_cache={tmp_path / 'ref'}")
    assert held["reference"] is None
