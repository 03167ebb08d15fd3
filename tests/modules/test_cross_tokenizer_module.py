"""DistillModule with a teacher of another tokenizer (uld, gold): the aligned top-k table, end to end."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

import prefdistill.modules.distill as distill
from prefdistill.losses import get_loss
from prefdistill.models import load_model, load_tokenizer
from prefdistill.models.tiny_tokenizer import build

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
SFT_ROWS = {"record_type": "sft", "val_fraction": 0.0}  # the shipped pairs' chosen side, no held-out rows


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory):
    """A tiny teacher with a second tokenizer (the tiny BPE stopped at 400 tokens: it splits more words)."""
    folder = build(tmp_path_factory.mktemp("tok") / "small", vocab_size=400)
    return dataclasses.replace(TINY, tokenizer=str(folder), seed=1)


def test_aligned_table_is_computed_once_and_training_never_holds_the_teacher(
    tiny_data, tiny_module, fit, other_teacher, tmp_path, monkeypatch
):
    dm = tiny_data(**SFT_ROWS)
    first = tiny_module("uld", teacher=other_teacher, teacher_cache=str(tmp_path))
    before = {n: p.detach().clone() for n, p in first.policy.named_parameters()}
    fit(first, dm, read_split="train")
    assert first.teacher is None
    assert any(not torch.equal(p, before[n]) for n, p in first.policy.named_parameters())
    assert len(list(tmp_path.glob("*.pt"))) == 1
    monkeypatch.setattr(distill, "load_model", lambda *a, **k: pytest.fail("teacher loaded again"))
    fit(
        tiny_module("gold", teacher=other_teacher, teacher_cache=str(tmp_path)), dm
    )  # same table for both losses


def test_spans_cover_complete_responses_and_split_words_are_unmatched(
    tiny_data, tiny_module, fit, other_teacher, tmp_path
):
    dm = tiny_data(**SFT_ROWS, max_samples=4)
    module = tiny_module("uld", teacher=other_teacher, teacher_cache=str(tmp_path))
    fit(module, dm, steps=1, read_split="train")
    batch = next(iter(dm.loader("train")))
    _, metrics = module.compute(batch)
    complete = (batch["chosen_labels"] == load_tokenizer(TINY).eos_token_id).any(-1)  # not truncated
    assert complete.any()
    assert (metrics["align/coverage"][complete] == 1).all()  # every response token lies in a span
    assert (metrics["align/matched"] > 0.5).all() and (metrics["align/matched"] < 1).any()
    table = module._teacher_tables[("train", "chosen")]
    heads = table.fields["span_start"] == torch.arange(
        len(table.fields["span_start"])
    ) - torch.repeat_interleave(
        table.offsets[:-1], table.offsets.diff()
    )  # a span head points at itself (indices within the response)
    assert (table.fields["student_ids"][~heads] == -1).all() and (table.fields["logps"][~heads] == 0).all()


def test_with_the_students_own_tokenizer_the_aligned_path_equals_the_online_teacher(
    tiny_data, tiny_module, fit
):
    """Identity alignment: every token its own span; with k = V, ULD from the table = ULD from full logits."""
    dm = tiny_data(**SFT_ROWS, max_samples=4)
    teacher = dataclasses.replace(TINY, seed=1)
    vocab = load_model(TINY).get_output_embeddings().weight.shape[0]
    aligned = tiny_module(
        "uld", teacher=teacher, teacher_topk=vocab, teacher_cache=None, cache_dir=None
    )  # kept in memory
    fit(aligned, dm, steps=1, read_split="train")
    batch = next(iter(dm.loader("train")))
    with torch.no_grad():
        _, got = aligned.compute(batch)
        labels = batch["chosen_labels"][:, 1:]
        want = get_loss("uld")(
            student_logits=distill.next_token_logits(aligned.policy, batch),
            teacher_logits=distill.next_token_logits(load_model(teacher, trainable=False), batch),
            mask=labels != -100, labels=labels,
        )  # fmt: skip
    assert (got["align/matched"] == 1).all() and (got["align/coverage"] == 1).all()
    torch.testing.assert_close(got["kd/divergence"], want.metrics["kd/divergence"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["kd/ce"], want.metrics["kd/ce"], atol=1e-5, rtol=1e-5)


def test_cross_tokenizer_losses_refuse_on_policy_samples(tiny_module, other_teacher):
    from prefdistill.modules.on_policy import OnPolicy

    with pytest.raises(ValueError, match="on-policy samples are new text"):
        tiny_module("uld", teacher=other_teacher, on_policy=OnPolicy(fraction=0.5))


def test_teacher_pass_bounds_the_logits_of_a_chunk_and_gives_the_same_rows(tiny_data, monkeypatch):
    """Chunks of 3 rows (the logit budget of 3 x 624) give the rows one chunk gives."""
    from prefdistill.modules import teacher_cache
    from prefdistill.modules.teacher_formats import TeacherFormat

    batch = next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))
    teacher = load_model(dataclasses.replace(TINY, seed=1), trainable=False)
    labels = batch["chosen_labels"][:, 1:]
    rows = torch.nn.functional.pad(labels != -100, (0, 1), value=False)
    targets = torch.nn.functional.pad(labels.clamp_min(0), (0, 1))
    args = (
        teacher,
        batch["chosen_input_ids"],
        batch["chosen_attention_mask"],
        rows,
        targets,
        TeacherFormat(k=8),
    )
    whole = teacher_cache.teacher_rows(*args)
    monkeypatch.setattr(teacher_cache, "LOGITS_PER_CHUNK", 3 * 624)
    seen = []
    head = teacher.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    chunked = teacher_cache.teacher_rows(*args)
    handle.remove()
    assert max(seen) == 3 and sum(seen) == int(rows.sum())
    assert whole.keys() == chunked.keys() == {"logps", "ids", "label_logps"}
    for key in whole:
        torch.testing.assert_close(whole[key], chunked[key])
