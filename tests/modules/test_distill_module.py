"""DistillModule: the top-k teacher cache, on-policy rollouts (GKD), teacher-mixed rollouts (MiniLLM)."""

from __future__ import annotations

import dataclasses
from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.generation import SamplingParams
from prefdistill.generation.hf import HFGenerator
from prefdistill.generation.mixture import MixtureGenerator
from prefdistill.losses import get_loss
from prefdistill.models import load_model, load_tokenizer
from prefdistill.modules import DistillModule
from prefdistill.modules.distill import next_token_logits
from prefdistill.modules.on_policy import OnPolicy, split_prompts
from prefdistill.modules.teacher_cache import TeacherCache, TeacherTable

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
SFT_ROWS = {"record_type": "sft", "val_fraction": 0.0}  # the shipped pairs' chosen side, no held-out rows
TEACHER = dataclasses.replace(TINY, seed=1)


# ------------------------------------------------------------------ teacher top-k cache
def test_teacher_cache_is_computed_once_then_reused_without_loading_the_teacher(
    tiny_data, tiny_module, fit, tmp_path, monkeypatch, caplog
):
    dm = tiny_data(**SFT_ROWS)
    first = tiny_module("kd_fkl", teacher=TEACHER, teacher_cache=str(tmp_path), teacher_topk=8)
    assert first.teacher is None  # never held during training
    fit(first, dm)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    second = tiny_module("kd_fkl", teacher=TEACHER, teacher_cache=str(tmp_path), teacher_topk=8)
    monkeypatch.setattr(DistillModule, "_load_teachers", lambda self: pytest.fail("teacher loaded"))
    with caplog.at_level("INFO", logger="prefdistill.utils.cache"):
        fit(second, dm)
    assert "reused" in caplog.text
    monkeypatch.undo()
    fit(
        tiny_module("kd_fkl", teacher=TEACHER, teacher_cache=str(tmp_path), teacher_topk=4), dm
    )  # another k: another key
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_full_vocabulary_topk_cache_gives_the_online_loss(tiny_data, tiny_module, fit, tmp_path):
    dm = tiny_data(**SFT_ROWS, max_samples=4)
    vocab = load_model(TINY).get_output_embeddings().weight.shape[0]
    cached = tiny_module("kd_fkl", teacher=TEACHER, teacher_cache=str(tmp_path), teacher_topk=vocab)
    fit(cached, dm, steps=1)  # writes the cache (lr applies to the policy only)
    data = TeacherCache(tmp_path).load(next(tmp_path.glob("*.pt")).stem)
    batch = next(iter(dm.loader("train")))
    online = tiny_module("kd_fkl", teacher=TEACHER)
    online.policy.load_state_dict(cached.policy.state_dict())
    labels = batch["chosen_labels"][:, 1:]
    mask = labels != -100
    student = next_token_logits(online.policy, batch)
    with torch.no_grad():
        teacher = online.teacher(
            input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]
        )
    loss = get_loss("kd_fkl")
    expected = loss(student_logits=student, mask=mask, labels=labels, teacher_logits=teacher.logits[:, :-1])
    got = loss(
        student_logits=student, mask=mask, labels=labels, **TeacherTable(data).batch(batch["index"], mask)
    )
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-4, rtol=1e-4)


def test_teacher_cache_refuses_on_policy_and_mismatched_rows(tiny_module, tmp_path):
    with pytest.raises(ValueError, match="online teacher"):
        tiny_module("kd_fkl", teacher=TEACHER, teacher_cache=str(tmp_path), on_policy=OnPolicy(fraction=0.5))
    table = TeacherTable(
        {
            "index": torch.tensor([0]),
            "offsets": torch.tensor([0, 2]),
            "logps": torch.zeros(2, 3),
            "ids": torch.zeros(2, 3),
        }
    )
    with pytest.raises(ValueError, match="row 0 holds 2 response tokens but the batch has 3"):
        table.batch(torch.tensor([0]), torch.tensor([[True, True, True]]))
    with pytest.raises(KeyError, match="row 5"):
        table.batch(torch.tensor([5]), torch.tensor([[True, True]]))


# ------------------------------------------------------------------ on-policy rollouts
def test_rollout_keeps_prompts_and_rows_and_is_independent_of_batch_mates(tiny_data, tiny_module):
    module = tiny_module("kd_fkl", teacher=TEACHER, on_policy=OnPolicy(fraction=1.0, max_new_tokens=6))
    batch = next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))
    torch.manual_seed(0)
    rollout = module.maybe_rollout(batch)
    assert rollout["rollout"] and torch.equal(rollout["index"], batch["index"])
    assert split_prompts(rollout) == split_prompts(batch)
    response_tokens = (rollout["chosen_labels"] != -100).sum(-1)
    assert ((response_tokens >= 1) & (response_tokens <= 7)).all()  # <= max_new_tokens + eos
    torch.manual_seed(0)
    again = module.maybe_rollout(batch)
    assert torch.equal(again["chosen_input_ids"], rollout["chosen_input_ids"])
    torch.manual_seed(0)
    alone = module.maybe_rollout({k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()})
    n = int(alone["chosen_attention_mask"][0].sum())
    assert torch.equal(alone["chosen_input_ids"][0, :n], rollout["chosen_input_ids"][0, :n])


def test_on_policy_fraction_zero_and_one(tiny_data, tiny_module):
    batch = next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))
    never = tiny_module("kd_fkl", teacher=TEACHER, on_policy=OnPolicy(fraction=0.0))
    assert never.maybe_rollout(batch) is batch
    always = tiny_module("kd_fkl", teacher=TEACHER, on_policy=OnPolicy(fraction=1.0, max_new_tokens=4))
    assert all(always.maybe_rollout(batch).get("rollout") for _ in range(3))


def test_mixture_sampling_endpoints_equal_each_models_own_samples():
    tok = load_tokenizer(TINY)
    policy, teacher = load_model(TINY), load_model(TEACHER)
    prompts = [tok("hello there")["input_ids"], tok("a longer prompt for the test")["input_ids"]]
    params, seeds = SamplingParams(temperature=1.0, max_new_tokens=8), [11, 12]

    def tokens(gen):
        return [c.token_ids for c in gen.complete_ids(prompts, seeds, params)]

    own_policy = tokens(HFGenerator(TINY, model=policy, tokenizer=tok, progress=False))
    own_teacher = tokens(HFGenerator(TEACHER, model=teacher, tokenizer=tok, progress=False))
    assert own_policy != own_teacher
    mixed = partial(MixtureGenerator, TINY, model=policy, tokenizer=tok, progress=False, teacher=teacher)
    assert tokens(mixed(teacher_mix=0.0)) == own_policy
    assert tokens(mixed(teacher_mix=1.0)) == own_teacher
    assert tokens(mixed(teacher_mix=0.5)) not in (own_policy, own_teacher)


def test_minillm_needs_rollouts_and_reuses_each_for_reuse_steps(tiny_data, tiny_module):
    with pytest.raises(ValueError, match="on_policy.fraction=1"):
        tiny_module("minillm", teacher=TEACHER)
    module = tiny_module(
        "minillm",
        teacher=TEACHER,
        on_policy=OnPolicy(fraction=1.0, teacher_mix=0.2, max_new_tokens=6, reuse=2),
    )
    batch = next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))
    first = module.maybe_rollout(batch)
    assert "sample_logps" in first
    assert module.maybe_rollout(batch) is first  # second step: same rollout
    assert module.maybe_rollout(batch) is not first
    loss, metrics = module.compute(first)
    assert torch.isfinite(loss)
    assert not torch.allclose(metrics["minillm/ratio"], torch.ones(4))  # importance weights q / p~ != 1
    loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())


def test_minillm_trains_end_to_end_and_the_ratio_moves_off_one_on_reused_rollouts(tiny_data, tiny_module):
    module = tiny_module(
        "minillm",
        teacher=TEACHER,
        on_policy=OnPolicy(fraction=1.0, teacher_mix=0.2, max_new_tokens=6, reuse=2),
    )
    dm = tiny_data(**SFT_ROWS, max_samples=8)
    ratios = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            ratios.append(float(trainer.callback_metrics["train/minillm/ratio"]))

    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Record()],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert len(ratios) == 2
    assert ratios[0] == pytest.approx(1.0, abs=0.3)  # importance weights only: q / p~ near 1
    assert ratios[1] != ratios[0]  # the policy moved between the two uses of one rollout


# ------------------------------------------------------------------ padded vocabularies
@pytest.fixture(scope="module")
def padded_tokenizer(tmp_path_factory):
    """The tiny tokenizer plus 16 added special padding tokens: it differs from tiny only in padding."""
    from transformers import AutoTokenizer

    from prefdistill.models.tiny_tokenizer import TINY_TOKENIZER_DIR

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    tok.add_tokens([f"<|pad_{i}|>" for i in range(16)], special_tokens=True)
    folder = tmp_path_factory.mktemp("padded")
    tok.save_pretrained(folder)
    return str(folder)


def test_a_teacher_whose_vocabulary_differs_only_in_padding_is_distilled_on_the_shared_ids(
    tiny_data, tiny_module, padded_tokenizer, caplog
):
    teacher = dataclasses.replace(TEACHER, tokenizer=padded_tokenizer)  # 640 output rows vs the student's 624
    with caplog.at_level("INFO", logger="prefdistill.modules.distill"):
        module = tiny_module("kd_fkl", teacher=teacher)
    assert module.teacher.get_output_embeddings().weight.shape[0] == 640 and module.vocab_limit == 624
    assert "uses the first 624 logits" in caplog.text
    batch = next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))
    loss, _ = module.compute(batch)
    labels = batch["chosen_labels"][:, 1:]
    with torch.no_grad():
        teacher_logits = next_token_logits(module.teacher, batch)[..., :624]
    expected = get_loss("kd_fkl")(
        student_logits=next_token_logits(module.policy, batch), teacher_logits=teacher_logits,
        mask=labels != -100, labels=labels,
    )  # fmt: skip
    torch.testing.assert_close(loss, expected.loss.mean())


def test_a_teacher_with_another_tokenizer_is_refused_naming_both_and_the_cross_tokenizer_losses(
    tiny_module, tmp_path
):
    from prefdistill.models.tiny_tokenizer import build

    other = dataclasses.replace(TEACHER, tokenizer=str(build(tmp_path / "small", vocab_size=400)))
    with pytest.raises(ValueError, match=r"tokenizers/tiny \(624 tokens\).*small \(400 tokens\).*method=uld"):
        tiny_module("kd_fkl", teacher=other)


# ------------------------------------------------------------------ DistiLLM-2: both responses
def test_distillm2_distills_both_responses_online_and_from_the_cache_alike(
    tiny_data, tiny_module, fit, tmp_path
):
    dm = tiny_data(val_fraction=0.0, max_samples=4)
    vocab = load_model(TINY).get_output_embeddings().weight.shape[0]
    loss = get_loss("distillm2", adaptive_alpha=False, beta_end=1.0)  # no state: both modules compute alike
    cached = tiny_module(loss, teacher=TEACHER, teacher_cache=str(tmp_path), teacher_topk=vocab)
    fit(cached, dm, steps=1)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # one top-k table per response side
    online = tiny_module(loss, teacher=TEACHER)
    online.policy.load_state_dict(cached.policy.state_dict())
    cached.current_split = lambda: "train"
    batch = next(iter(dm.loader("train")))
    with torch.no_grad():
        got, want = cached.compute(batch)[1], online.compute(batch)[1]
    for key in ("distillm2/skl", "distillm2/srkl", "loss"):
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
    assert (want["distillm2/srkl"] > 0).all() and (want["distillm2/skl"] > 0).all()
