"""On-policy distillation in the module: OPD (λ = 1), SKD's interleaved rollouts, TAID's checkpointed schedule.

Rollouts are deterministic under a seed; a run stopped and resumed from its checkpoint ends exactly where the
uninterrupted run ends (weights, the loss's state); the needs are enforced; the held-out KL to the teacher is
logged for every token loss; ``method=opd`` is GKD with λ = 1 and β = 1.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, compose_train

from prefdistill.generation.speculative import Speculative
from prefdistill.losses import get_loss
from prefdistill.modules.on_policy import OnPolicy

TEACHER = dataclasses.replace(instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml")), seed=1)
OPD = OnPolicy(fraction=1.0, temperature=1.0, max_new_tokens=6)
SKD = OnPolicy(fraction=1.0, temperature=1.0, max_new_tokens=6, speculative=Speculative(top_k=300))
SFT_ROWS = {"record_type": "sft", "val_fraction": 0.0}


@pytest.fixture(scope="module")
def batch(tiny_data):
    return next(iter(tiny_data(**SFT_ROWS, max_samples=4).loader("train")))


class SaveAt(L.Callback):
    """Save a checkpoint right after optimizer step ``step``, as the run's checkpoint callback does."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_the_needs_and_the_sampling_settings_are_enforced(tiny_module):
    with pytest.raises(ValueError, match="on_policy.fraction=1"):
        tiny_module("opd", teacher=TEACHER, on_policy=OnPolicy(fraction=0.5))
    with pytest.raises(ValueError, match="on_policy.speculative"):
        tiny_module("skd", teacher=TEACHER, on_policy=OPD)
    with pytest.raises(ValueError, match="two ways of sampling"):
        OnPolicy(teacher_mix=0.2, speculative=Speculative())
    with pytest.raises(ValueError, match="samples the student alone"):
        OnPolicy(backend="vllm", speculative=Speculative())
    with pytest.raises(ValueError, match="needs on_policy.backend=vllm"):
        OnPolicy(gpu_memory_utilization=0.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        OnPolicy(backend="sglang")
    assert OnPolicy(speculative={"top_k": 3}).speculative == Speculative(
        top_k=3
    )  # a mapping from the command line


@pytest.mark.parametrize(("loss", "on_policy"), [("opd", OPD), ("skd", SKD)])
def test_rollouts_are_deterministic_under_a_seed(tiny_module, batch, loss, on_policy):
    def rollout(seed: int) -> dict:
        torch.manual_seed(seed)
        return tiny_module(loss, teacher=TEACHER, on_policy=on_policy).maybe_rollout(batch)

    first, again, other = rollout(0), rollout(0), rollout(1)
    assert first["rollout"] and torch.equal(first["chosen_input_ids"], again["chosen_input_ids"])
    assert not torch.equal(first["chosen_input_ids"], other["chosen_input_ids"])
    if on_policy.speculative is not None:  # top-300 of 624 tokens: some proposals kept, some replaced
        assert 0.0 < first["rollout_stats"]["teacher_replaced"] < 1.0


@pytest.mark.parametrize(("loss", "on_policy"), [("opd", OPD), ("skd", SKD), ("taid", None)])
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(
    tiny_data, tiny_module, tmp_path, loss, on_policy
):
    def run(ckpt_in=None, callbacks=()):
        torch.manual_seed(0)
        module = tiny_module(loss, teacher=TEACHER, **({"on_policy": on_policy} if on_policy else {}))
        trainer = L.Trainer(
            max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=list(callbacks),
        )  # fmt: skip
        trainer.fit(module, datamodule=tiny_data(**SFT_ROWS, max_samples=16), ckpt_path=ckpt_in)
        return module

    whole = run(callbacks=[SaveAt(2, tmp_path / "half.ckpt")])  # the run that is not stopped
    resumed = run(ckpt_in=tmp_path / "half.ckpt")  # a second run from its step-2 checkpoint
    for (name, a), b in zip(whole.policy.named_parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b), name
    assert whole.loss_state.keys() == resumed.loss_state.keys()
    assert all(torch.equal(whole.loss_state[k], resumed.loss_state[k]) for k in whole.loss_state)
    if loss == "taid":  # the schedule moved, and the checkpoint carried it
        assert whole.loss_state["t"].item() > 0.4


def test_held_out_batches_log_the_kl_to_the_teacher_for_every_token_loss(tiny_module, batch):
    module = tiny_module("taid", teacher=TEACHER)
    module.eval()
    with torch.no_grad():
        _, metrics = module.compute(batch)
        x = module._side_inputs(batch, "chosen")
    assert torch.allclose(metrics["teacher/forward_kl"], get_loss("kd_fkl")(x).loss)
    assert torch.allclose(metrics["teacher/reverse_kl"], get_loss("kd_rkl")(x).loss)
    module.train()
    _, metrics = module.compute(batch)
    assert "teacher/forward_kl" not in metrics  # training steps pay nothing for it


def test_method_opd_is_gkd_with_lambda_1_and_beta_1(tmp_path):
    opd = compose_train(tmp_path, ["method=opd"])
    gkd = compose_train(tmp_path, ["method=gkd", "on_policy.fraction=1", "method.beta=1"])
    assert instantiate(opd.on_policy).fraction == instantiate(gkd.on_policy).fraction == 1.0
    g = torch.Generator().manual_seed(0)
    inputs = {"student_logits": torch.randn(2, 4, 9, generator=g), "teacher_logits": torch.randn(2, 4, 9, generator=g),
              "mask": torch.ones(2, 4, dtype=torch.bool), "labels": torch.randint(0, 9, (2, 4), generator=g)}  # fmt: skip
    same = instantiate(opd.method)(**inputs).loss, instantiate(gkd.method)(**inputs).loss
    assert torch.allclose(*same, atol=1e-6)
    skd = compose_train(tmp_path, ["method=skd"])
    assert instantiate(skd.on_policy).speculative == Speculative(
        top_k=25, teacher_temperature=0.2, teacher_top_p=0.5
    )
