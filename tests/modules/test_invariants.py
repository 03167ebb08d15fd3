"""Invariants every loss must keep: batch 2 x accumulation 1 == batch 1 x accumulation 2 gradients,
same seed -> same trajectory, and non-finite losses skipped, counted and eventually fatal."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.data import PreferenceDataModule
from prefdistill.generation.speculative import Speculative
from prefdistill.losses import REGISTRY, get_loss
from prefdistill.models import load_tokenizer
from prefdistill.modules import build_module
from prefdistill.modules.on_policy import OnPolicy
from prefdistill.train import train

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TEACHER = dataclasses.replace(TINY, seed=1)  # teacher=tiny: same model, another init


def _batches(name: str):
    kind = REGISTRY[name].kind
    shipped = {"listwise": "demo_lists"}.get(
        kind, "demo_scored" if "scores" in get_loss(name).needs else "demo"
    )
    dm = PreferenceDataModule(
        source="shipped",
        name=shipped,
        record_type="listwise" if kind == "listwise" else "pairwise",
        unpair=kind == "unpaired",  # 2 pairs -> 4 rows: the first two are the full batch below
        max_samples=2,
        batch_size=2,
        max_length=160,
        max_prompt_length=96,
    )
    dm.connect(load_tokenizer(TINY))
    dm.setup("fit")
    full = next(iter(dm.train_dataloader()))
    dm.batch_size = 1
    halves = list(dm.train_dataloader())[:2]  # the full batch's rows (one permutation whatever the size)
    return full, halves, dm


def _attach_for_aligned_table(module, dm) -> None:
    """Cross-tokenizer losses read the teacher's aligned table of the trainer's datamodule: one 1-step fit
    (lr 0) builds it, and compute() then reads the train split's table."""
    import lightning as L

    module.optimizer_factory = partial(torch.optim.SGD, lr=0.0)
    L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    ).fit(module, datamodule=dm)  # fmt: skip
    module.current_split = lambda: "train"


def _grads(module, batches, scale):
    module.zero_grad()
    for batch in batches:
        loss, _ = module.compute(batch)
        (loss * scale).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gradient_accumulation_matches_a_larger_batch(name):
    torch.manual_seed(0)
    loss = get_loss(name)
    rollouts = "policy_samples" in loss.needs
    speculative = Speculative(top_k=50) if "speculative_samples" in loss.needs else None  # SKD's interleaving
    mix = 0.0 if speculative else 0.2
    on_policy = (
        OnPolicy(fraction=1.0, teacher_mix=mix, speculative=speculative, max_new_tokens=6)
        if rollouts
        else None
    )
    extra = {"on_policy": on_policy} if rollouts else {}
    extra |= {"teacher": TEACHER} if "teacher" in loss.needs else {}
    module = build_module(loss=loss, policy=TINY, optimizer=partial(torch.optim.SGD, lr=0.1), **extra)
    module.configure_model()
    full, halves, dm = _batches(name)
    if "cross_tokenizer" in loss.needs:
        _attach_for_aligned_table(module, dm)
    if rollouts:  # the loss trains on rollouts: one rollout of the full batch, split in two
        full = module.maybe_rollout(full)
        halves = [{k: v[i : i + 1] if torch.is_tensor(v) else v for k, v in full.items()} for i in range(2)]
    assert len(halves) == 2
    one_batch = _grads(module, [full], 1.0)
    accumulated = _grads(module, halves, 0.5)  # Lightning scales each micro-batch by 1/accumulate
    assert one_batch.keys() == accumulated.keys() and one_batch
    for key in one_batch:
        torch.testing.assert_close(
            accumulated[key], one_batch[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}"
        )


def test_same_seed_same_trajectory(tiny_cfg):
    a = train(tiny_cfg("trainer.max_steps=3", "save_model=false", "module.reference_cache=null"))
    b = train(tiny_cfg("trainer.max_steps=3", "save_model=false", "module.reference_cache=null"))
    # every training and held-out metric, except wall-clock measurements (train/perf/*)
    keys = [k for k in a if k.startswith(("train/", "val/")) and not k.startswith("train/perf/")]
    assert "train/loss" in keys
    assert keys
    for key in keys:
        assert a[key] == b[key], key


def test_non_finite_loss_is_skipped_counted_and_fatal_in_a_row():
    module = build_module(
        loss=get_loss("simpo"), policy=TINY, optimizer=partial(torch.optim.SGD, lr=0.1), max_bad_steps=3
    )
    finite = torch.tensor(1.0)
    assert module.guard_finite(finite, torch.tensor([0])) is finite
    assert module.guard_finite(torch.tensor(float("nan")), torch.tensor([4, 7])) is None
    assert module.guard_finite(torch.tensor(float("inf")), torch.tensor([5])) is None
    assert module.bad_steps_total == 2
    with pytest.raises(FloatingPointError, match=r"rows \[9, 11\]"):
        module.guard_finite(torch.tensor(float("nan")), torch.tensor([9, 11]))
