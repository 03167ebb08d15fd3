"""PreferenceDataModule end to end with the tiny tokenizer: setup, batches, stats, splits."""

from __future__ import annotations

import logging

import pytest
import torch

from prefdistill.data import DataError, PreferenceDataModule

SMALL = dict(max_length=96, max_prompt_length=64, batch_size=4, max_samples=40)


def _dm(tok, **kw):
    dm = PreferenceDataModule(**{**SMALL, **kw})
    dm.connect(tok)
    return dm


def test_shipped_end_to_end(tok, caplog):
    dm = _dm(tok)
    with caplog.at_level(logging.INFO, logger="prefdistill.data.datamodule"):
        dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["chosen_input_ids"].shape
    assert B == 4 and batch["rejected_input_ids"].shape == (B, T) and T <= 96
    for side in ("chosen", "rejected"):
        ids, mask, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        assert (ids[:, 0] == tok.bos_token_id).all() and ((ids == tok.bos_token_id) & (mask == 1)).sum() == B
        assert ((labels != -100) <= (mask == 1)).all()  # labels only on real tokens
    assert set(dm.stats) == {"train", "validation"}
    s = dm.stats["train"]
    assert s["rows_read"] == 40 and s["rows_kept"] == 40 and sum(s["rows_skipped"].values()) == 0
    assert any("data[train]: 40 rows read, 40 kept, 0 skipped" in r.message for r in caplog.records)
    assert len(dm.val_dataloader().dataset) == 40


def test_train_shuffle_is_seeded_and_eval_is_not(tok):
    dm = _dm(tok)
    dm.setup("fit")
    first = [b["index"].tolist() for b in dm.train_dataloader()]
    again = [b["index"].tolist() for b in dm.train_dataloader()]
    assert first == again and sum(first, []) != sorted(sum(first, []))
    assert sum((b["index"].tolist() for b in dm.val_dataloader()), []) == list(range(40))


def test_connect_required():
    dm = PreferenceDataModule(**SMALL)
    with pytest.raises(RuntimeError, match=r"connect\(tokenizer\)"):
        dm.setup("fit")


def test_unknown_source_lists_known():
    with pytest.raises(DataError, match="known sources"):
        PreferenceDataModule(source="imaginary")


def test_sft_batches(tok):
    dm = _dm(tok, record_type="sft")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"chosen_input_ids", "chosen_attention_mask", "chosen_labels", "index"}


def test_hub_schema_with_carved_validation_and_test_fallback(tok, fixtures, caplog):
    dm = _dm(
        tok, source="hh_rlhf", path=str(fixtures / "hh_rlhf_sample.jsonl"), val_fraction=0.3, template="raw"
    )
    dm.setup("fit")
    train_idx = {i for b in dm.train_dataloader() for i in b["index"].tolist()}
    val_idx = {i for b in dm.val_dataloader() for i in b["index"].tolist()}
    assert len(val_idx) == 1 and train_idx | val_idx == {0, 1, 2} and not train_idx & val_idx
    assert dm.stats["train"]["rows_to_validation"] == 1
    batch = next(iter(dm.train_dataloader()))
    text = tok.decode(batch["chosen_input_ids"][0][batch["chosen_attention_mask"][0].bool()])
    assert text.startswith("<|endoftext|>\n\nHuman: ") and "\n\nAssistant: " in text
    with caplog.at_level(logging.WARNING):
        assert len(dm.test_dataloader().dataset) == 1
    assert "no test split" in caplog.text


def test_listwise(tok, fixtures):
    dm = _dm(
        tok, source="ultrafeedback", path=str(fixtures / "ultrafeedback_sample.jsonl"), record_type="listwise"
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["list_size"] == 2 and batch["scores"].dtype == torch.float
    assert batch["input_ids"].shape[0] == 2 * batch["scores"].shape[0]


def test_skip_policy_flows_into_stats(tok, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(
        '{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."}\n{"prompt": "Hi?", "chosen": ""}\n' * 5
    )
    dm = _dm(tok, source="local", path=str(f), on_bad_row="skip", val_fraction=0.2)
    dm.setup("fit")
    assert dm.stats["train"]["rows_read"] == 10
    assert dm.stats["train"]["rows_skipped"] == {"empty_field": 5}
    assert len(dm.datasets["train"]) + len(dm.datasets["validation"]) == 5
    with pytest.raises(DataError, match=r"mine\.jsonl: row 1 \(line 2\): field 'chosen': empty string"):
        _dm(tok, source="local", path=str(f)).setup("fit")


def test_the_data_log_line_adds_up(tok, tmp_path, caplog):
    """Rows read = kept + skipped + moved to validation (carved from train), all in the one line."""
    import json

    rows = [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No idea."}
        for i in range(30)
    ]
    del rows[7]["chosen"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = _dm(tok, source="local", path=str(path), on_bad_row="skip", max_samples=None, val_fraction=0.05)
    with caplog.at_level(logging.INFO, logger="prefdistill.data.datamodule"):
        dm.setup("fit")
    # 29 readable rows: ceil(29 * 0.05) = 2 to validation, 27 kept for training
    assert any(r.message.startswith("data[train]: 30 rows read, 27 kept, 1 skipped (missing_field=1), "
                                    "2 moved to validation, 0 prompts truncated") for r in caplog.records), caplog.text  # fmt: skip


def test_the_train_loader_is_resumable_in_lightnings_sense(tok):
    """Lightning warns "dataloader is not resumable ... unreliable results" unless the loader has
    state_dict/load_state_dict; restored, it continues the epoch's order where it stopped."""
    from lightning.fabric.utilities.types import _Stateful

    dm = _dm(tok)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, _Stateful)
    full = [batch["index"].tolist() for batch in loader]
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches_done": 3})
    assert [batch["index"].tolist() for batch in resumed] == full[3:]
