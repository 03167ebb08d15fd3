"""Teacher tables in their three formats and weighted mixtures of teachers, through DistillModule and train.py."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, assert_sane_losses

from prefdistill.losses import get_loss
from prefdistill.models import load_model
from prefdistill.modules import build_module
from prefdistill.modules.distill import next_token_logits
from prefdistill.modules.response_rows import gather_rows, response_index
from prefdistill.modules.teacher_cache import TeacherCache, same_vocabulary_topk
from prefdistill.modules.teacher_formats import TeacherFormat, bytes_per_token
from prefdistill.modules.teachers import Teachers

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
A, B = dataclasses.replace(TINY, seed=1), dataclasses.replace(TINY, seed=2)
SFT_ROWS = {"record_type": "sft", "val_fraction": 0.0}


@pytest.fixture
def make(tiny_module):
    """A DistillModule of ``teacher`` (kd_fkl unless ``loss`` is given)."""
    return lambda teacher, loss="kd_fkl", **kw: tiny_module(loss, teacher=teacher, **kw)


def _hand_mixed(batch, weights=(0.3, 0.7)) -> torch.Tensor:
    """log(w_a softmax(z_a) + w_b softmax(z_b)) of the two tiny teachers, (B, T-1, V)."""
    probs = [
        torch.softmax(next_token_logits(load_model(s, trainable=False), batch).detach(), -1) for s in (A, B)
    ]
    return (weights[0] * probs[0] + weights[1] * probs[1]).log()


# ------------------------------------------------------------------ mixtures
def test_online_mixture_equals_the_hand_mixed_distribution(caplog, tiny_data, make):
    batch = next(iter(tiny_data(**SFT_ROWS).loader("train")))
    with caplog.at_level("INFO", logger="prefdistill.modules.teachers"):
        module = make([A, B], teacher_weights=[0.3, 0.7])
    assert "mixture of 2 teachers, weights [tiny 0.3, tiny 0.7]" in caplog.text
    assert module.teacher is None and len(module.teacher_models) == 2
    inputs = module._side_inputs(batch, "chosen")
    index, mask = response_index(
        batch["chosen_labels"][:, 1:] != -100
    )  # the response positions, left-aligned
    assert torch.equal(inputs.mask, mask)
    mixed = gather_rows(_hand_mixed(batch), index)
    torch.testing.assert_close(torch.log_softmax(inputs.teacher_logits, -1), mixed, atol=1e-5, rtol=1e-5)
    loss = get_loss("kd_fkl")
    kw = {"student_logits": inputs.student_logits, "mask": inputs.mask}
    torch.testing.assert_close(loss(inputs).loss, loss(teacher_logits=mixed, **kw).loss)
    alone = loss(
        teacher_logits=gather_rows(next_token_logits(module.teacher_models[0], batch), index), **kw
    ).loss
    assert not torch.allclose(alone, loss(inputs).loss)


def test_cached_mixture_stores_the_top_k_of_the_hand_mixed_distribution(tmp_path, tiny_data, make, fit):
    dm = tiny_data(**SFT_ROWS, max_samples=4)
    fit(make([A, B], teacher_weights=[0.3, 0.7], teacher_cache=str(tmp_path), teacher_topk=8), dm, steps=1)
    data = TeacherCache(tmp_path, TeacherFormat().fields).load(next(tmp_path.glob("*.pt")).stem)
    batch = next(iter(dm.loader("train")))
    mask = batch["chosen_labels"][:, 1:] != -100
    values, ids = _hand_mixed(batch)[mask].topk(8, dim=-1)
    torch.testing.assert_close(data["ids"].long(), ids, atol=0, rtol=0)
    torch.testing.assert_close(data["logps"].float(), values, atol=2e-3, rtol=1e-3)  # float16


def test_mixture_weights_are_validated():
    for weights, message in (
        ([0.5], "1 weights for 2 teacher"),
        ([0.5, 0.6], "must sum to 1"),
        ([1.5, -0.5], ">= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            Teachers([A, B], weights)
    with pytest.raises(ValueError, match="for several teachers"):
        Teachers([A], [1.0])
    assert Teachers([A, B]).weights == [0.5, 0.5]
    with pytest.raises(ValueError, match="no teacher is set"):
        build_module(loss=get_loss("kd_fkl"), policy=TINY, optimizer=partial(torch.optim.SGD, lr=0.1),
                     teacher_weights=[1.0])  # fmt: skip


def test_teacher_list_composes_and_trains_a_mixture(tiny_cfg, caplog):
    """``teacher=[a,b]`` with each teacher's keys as ``teachers.<name>.<key>``; ``teacher.<key>`` is refused."""
    from prefdistill.train import train

    small = "teachers.llama_1b_random"
    overrides = [
        "method=kd_fkl", "teacher=[tiny,llama_1b_random]", "module.teacher_weights=[0.25,0.75]", "debug=fdr",
        f"{small}.random_init.hidden_size=64", f"{small}.random_init.num_hidden_layers=1",
        f"{small}.random_init.num_attention_heads=4", f"{small}.random_init.num_key_value_heads=2",
        f"{small}.random_init.intermediate_size=128", f"{small}.random_init.vocab_size=624",
        f"{small}.dtype=float32",
    ]  # fmt: skip
    cfg = tiny_cfg(*overrides)
    assert list(cfg.teachers) == ["tiny", "llama_1b_random"]
    with caplog.at_level("INFO", logger="prefdistill.modules.teachers"):
        assert_sane_losses(train(cfg), cfg.paths.output_dir)
    assert "weights [tiny 0.25, llama-1b-random 0.75]" in caplog.text
    with pytest.raises(ValueError, match="would apply to none of them"):
        train(tiny_cfg(*overrides, "teacher.dtype=bfloat16"))
    with pytest.raises(ValueError, match="set its keys as teacher.<key>"):
        train(tiny_cfg("method=kd_fkl", "teacher=tiny", "teachers.tiny.seed=5"))


# ------------------------------------------------------------------ stored formats
def test_formats_store_16_bit_values_and_int32_ids_with_their_bytes_per_token(tiny_data):
    loader = tiny_data(**SFT_ROWS, max_samples=4).loader("train")
    teacher = load_model(A, trainable=False)
    tables = {
        name: same_vocabulary_topk(teacher, loader, "chosen", TeacherFormat(name, 8))
        for name in ("topk", "topk_tail")
    }
    assert bytes_per_token(tables["topk"]) == 8 * (2 + 4) + 2  # logps + ids + the response token's log-prob
    assert bytes_per_token(tables["topk_tail"]) == 8 * (2 + 4) + 2 + 2  # + the tail's log-mass
    tail = tables["topk_tail"]["tail_logps"].float().exp()
    top = tables["topk"]["logps"].float().exp().sum(-1)
    torch.testing.assert_close(tail + top, torch.ones_like(tail), atol=5e-3, rtol=0)
    sampled = same_vocabulary_topk(teacher, loader, "chosen", TeacherFormat("sampled", 32, seed=3))
    width = sampled["ids"].shape[1]
    assert sampled["weights"].dtype == torch.float16 and sampled["ids"].dtype == torch.int32
    assert bytes_per_token(sampled) == width * (2 + 4 + 2) + 2 and width <= 32
    torch.testing.assert_close(
        sampled["weights"].float().sum(-1), torch.ones(len(sampled["weights"])), atol=2e-3, rtol=0
    )


def test_sampled_draws_depend_on_seed_and_row_not_on_batching(tiny_data):
    teacher = load_model(A, trainable=False)
    fmt = TeacherFormat("sampled", 16, seed=0)
    by4 = same_vocabulary_topk(teacher, tiny_data(**SFT_ROWS, max_samples=6).loader("train"), "chosen", fmt)
    dm2 = tiny_data(**SFT_ROWS, max_samples=6)
    dm2.eval_batch_size = 2
    by2 = same_vocabulary_topk(teacher, dm2.loader("train"), "chosen", fmt)
    for key in by4:
        torch.testing.assert_close(by4[key], by2[key], atol=0, rtol=0)
    other = same_vocabulary_topk(teacher, dm2.loader("train"), "chosen", dataclasses.replace(fmt, seed=1))
    assert not torch.equal(other["ids"][:, :4], by2["ids"][:, :4])


@pytest.mark.parametrize("support", ["topk_tail", "sampled"])
def test_modules_train_from_each_format_and_key_caches_by_format(support, tmp_path, tiny_data, make, fit):
    dm = tiny_data(**SFT_ROWS)
    fit(make(A, teacher_cache=str(tmp_path), teacher_topk=8), dm)
    module = make(A, teacher_cache=str(tmp_path), teacher_topk=8, teacher_support=support)
    assert module.teacher is None
    trainer = fit(module, dm)
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))
    assert len(list(tmp_path.glob("*.pt"))) == 2  # topk and this format: two entries


def test_format_settings_that_would_do_nothing_are_refused(tmp_path, make):
    with pytest.raises(ValueError, match="format of stored teacher tables: set module.teacher_cache"):
        make(A, teacher_support="topk_tail")
    with pytest.raises(ValueError, match=r"reads teacher formats \['topk', 'topk_tail'\], not .*sampled"):
        make(A, loss="kd_rkl", teacher_cache=str(tmp_path), teacher_support="sampled")
    with pytest.raises(ValueError, match="not one of auto, topk, topk_tail, sampled"):
        make(A, teacher_cache=str(tmp_path), teacher_support="dense")
