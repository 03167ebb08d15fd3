"""Scored pairs: chosen_score/rejected_score from files into batches, and every way they can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.data import DataError, PairRecord, PreferenceDataModule, collate_pairs, load_records

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
SCORED = {
    "prompt": "Hi?",
    "chosen": "Hello.",
    "rejected": "Go away.",
    "chosen_score": 0.9,
    "rejected_score": 0.2,
}
PLAIN = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def _write(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _dm(tok, **kw):
    dm = PreferenceDataModule(**{"max_length": 96, "max_prompt_length": 64, "batch_size": 4, **kw})
    dm.connect(tok)
    return dm


def test_scores_round_trip_into_batches(tok, tmp_path):
    rows = [{**SCORED, "chosen_score": 1 + i, "rejected_score": -0.5 * i} for i in range(6)]
    dm = _dm(tok, source="local", path=_write(tmp_path / "s.jsonl", rows), val_fraction=0.0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader() if dm.datasets.get("validation") else dm.train_dataloader()))
    idx = batch["index"].tolist()
    assert batch["chosen_scores"].dtype == batch["rejected_scores"].dtype == torch.float32
    assert batch["chosen_scores"].shape == (len(idx),)
    assert batch["chosen_scores"].tolist() == [1.0 + i for i in idx]
    assert batch["rejected_scores"].tolist() == [-0.5 * i for i in idx]


def test_unscored_and_sft_batches_have_no_scores(tok, tmp_path):
    dm = _dm(tok, source="local", path=_write(tmp_path / "p.jsonl", [PLAIN] * 4), val_fraction=0.25)
    dm.setup("fit")
    assert "chosen_scores" not in next(iter(dm.train_dataloader()))
    dm = _dm(tok, source="local", record_type="sft", path=_write(tmp_path / "s.jsonl", [SCORED] * 4))
    dm.setup("fit")
    assert set(next(iter(dm.train_dataloader()))) == {
        "chosen_input_ids",
        "chosen_attention_mask",
        "chosen_labels",
        "index",
    }


def test_collate_scores_only_when_all_scored():
    ex = {"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "index": 0}
    scored = [{**ex, "chosen_score": 0.5, "rejected_score": 0.25, "index": i} for i in range(2)]
    batch = collate_pairs(scored, 0)
    assert batch["chosen_scores"].tolist() == [0.5, 0.5] and batch["rejected_scores"].dtype == torch.float32
    assert "chosen_scores" not in collate_pairs([ex, ex], 0)
    with pytest.raises(ValueError, match="mixes scored and unscored pairs"):
        collate_pairs([scored[0], {**ex, "index": 7}], 0)


def test_mixed_presence_names_first_unscored_row(tok, tmp_path):
    path = _write(tmp_path / "mixed.jsonl", [SCORED, SCORED, PLAIN, PLAIN])
    with pytest.raises(
        DataError, match=r"mixed\.jsonl: row 2 \(line 3\): no 'chosen_score'/'rejected_score', but row 0"
    ):
        _dm(tok, source="local", path=path, val_fraction=0.0).setup("fit")
    with pytest.raises(DataError, match=r"row 0 \(line 1\).*but row 2"):
        load_records("local", "train", path=_write(tmp_path / "m2.jsonl", [PLAIN, PLAIN, SCORED]))


def test_splits_must_agree_on_scores(tok, tmp_path):
    _write(tmp_path / "train.jsonl", [SCORED] * 3)
    _write(tmp_path / "validation.jsonl", [PLAIN] * 3)
    dm = _dm(tok, source="local", path=str(tmp_path), splits={"validation": "validation"})
    with pytest.raises(
        DataError, match=r"\['train'\] have 'chosen_score'/'rejected_score' but \['validation'\]"
    ):
        dm.setup("fit")


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ({**SCORED, "chosen_score": "high"}, r"field 'chosen_score': expected number, got str"),
        ({**SCORED, "rejected_score": True}, r"field 'rejected_score': expected number, got bool"),
        ({**SCORED, "rejected_score": float("nan")}, r"field 'rejected_score': expected a finite number"),
        (
            {**SCORED, "rejected_score": None},
            r"field 'rejected_score': missing while 'chosen_score' is given",
        ),
    ],
)
def test_bad_score_names_file_row_and_field(tmp_path, bad, pattern):
    path = _write(tmp_path / "scored.jsonl", [SCORED, bad])
    with pytest.raises(DataError, match=r"scored\.jsonl: row 1 \(line 2\): " + pattern):
        load_records("local", "train", path=path)
    stats = {}
    assert len(load_records("local", "train", path=path, on_bad_row="skip", stats=stats)) == 1
    assert sum(stats["rows_skipped"].values()) == 1


def test_field_mapping_and_listwise_view(tmp_path):
    row = {"q": "Hi?", "good": "Hello.", "bad": "No.", "s_good": 3, "s_bad": 1}
    path = _write(tmp_path / "mine.jsonl", [row])
    fields = {
        "prompt": "q",
        "chosen": "good",
        "rejected": "bad",
        "chosen_score": "s_good",
        "rejected_score": "s_bad",
    }
    ((_, rec),) = load_records("local", "train", path=path, fields=fields)
    assert rec == PairRecord("Hi?", "Hello.", "No.", "0", 3.0, 1.0)
    ((_, lst),) = load_records("local", "train", path=path, fields=fields, record_type="listwise")
    assert lst.responses == ["Hello.", "No."] and lst.scores == [3.0, 1.0]


def test_ultrafeedback_maps_scores(fixtures):
    pairs = load_records("ultrafeedback", "train", path=str(fixtures / "ultrafeedback_sample.jsonl"))
    assert (pairs[1][1].chosen_score, pairs[1][1].rejected_score) == (9.0, 2.5)


def _config_dm(tok, name: str, **overrides):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.merge_with(OmegaConf.create({"max_samples": 16, **overrides}))
    dm = instantiate(cfg)
    dm.connect(tok)
    dm.setup("fit")
    return dm


def test_demo_scored_config_end_to_end(tok):
    dm = _config_dm(tok, "demo_scored")
    batch = next(iter(dm.train_dataloader()))
    assert batch["chosen_scores"].shape == batch["rejected_scores"].shape == (8,)
    assert (batch["chosen_scores"] == 1.0).all() and (batch["rejected_scores"] < 1.0).all()
    assert dm.stats["train"]["rows_kept"] == 16 and dm.stats["train"]["prompts_truncated"] == 0


def test_demo_lists_config_end_to_end(tok):
    dm = _config_dm(tok, "demo_lists")
    batch = next(iter(dm.val_dataloader()))
    B, n = batch["scores"].shape
    assert (B, n) == (16, 4) and batch["list_size"] == 4 and batch["scores"].dtype == torch.float
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == B * n
    assert all(len(set(row)) == 4 for row in batch["scores"].tolist())
    assert dm.stats["validation"]["responses_truncated"] == 0
    pairs = _config_dm(tok, "demo_lists", record_type="pairwise")
    pb = next(iter(pairs.train_dataloader()))
    assert (pb["chosen_scores"] > pb["rejected_scores"]).all()


@pytest.mark.parametrize("name", ["demo_scored", "demo_lists"])
def test_shipped_configs_do_not_truncate(tok, name):
    dm = _config_dm(tok, name, max_samples=None)
    dm.setup("test")
    for split, stats in dm.stats.items():
        assert stats["prompts_truncated"] == stats["responses_truncated"] == 0, (split, stats)
        assert stats["rows_kept"] == stats["rows_read"] > 0
