"""A reward model trained here, as a cached stage that evaluation and the scoring pipelines share.

    rm = trained_reward_model(base=spec, data={...}, max_steps=100, lr=1e-4, batch_size=8, seed=0,
                              cache_dir="~/.cache/prefdistill")      # nothing runs yet (a plan can list it)
    rm.score(prompts, responses)     # trains once (or reuses the folder), then scores (input_format chat)
    rm.stage.info                    # {"model", "tokens", "val_accuracy", "val_pairs", "val_margin"}

Stage ``reward-model`` trains the ``reward`` loss (Bradley-Terry, ``prefdistill/losses/reward.py``; what
``python train.py method=reward`` runs) with :class:`~prefdistill.modules.RewardModule` on the pairs of
``data`` (its train split; ``chosen`` preferred), then measures the held-out pair accuracy on its
validation split and saves a standalone ``AutoModelForSequenceClassification`` folder. The stage is
keyed by the base model and the recipe, so every job of a sweep -- the evaluation suite's ``reward``
scorer, PLaD's margin scores (``pipeline.prepare.scorer``), PAD's reward-model scores -- loads the same
folder by building the same config node (``configs/experiment/distill_study.yaml``: ``reward_model``).
The PLaD protocol (Zhang et al., 2024, Sec. 5) needs such a model for its RM win rates; a
:class:`StageRewardModel` also carries its stage, so a row that trains on its scores counts its cost. It
runs the stage when first used (``stage``, ``name``, ``score``), not when built: building a run's objects
(the preflight plan) trains nothing, and ``planned_stage()`` describes the stage without running it.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import lightning as L
import torch

from prefdistill.eval.reward import RewardModel
from prefdistill.pipeline.stages import Stage, StageResult
from prefdistill.pipeline.steps import INHERIT, PlannedStage, sft_spec
from prefdistill.utils.cache import hash_inputs


class StageRewardModel:
    """The reward model of a ``reward-model`` stage: a :class:`RewardModel` (``input_format="chat"``) of the
    stage's folder, the stage run (or reused) when first needed. ``stage`` is that stage's result."""

    uses_reference = False

    def __init__(self, base, recipe: dict, cache_dir: str | os.PathLike, **scoring):
        self.base, self.recipe, self.cache_dir, self.scoring = base, recipe, cache_dir, scoring
        inputs = {"model": base.identity(), "reward": recipe}
        if base.lora is not None:  # a LoRA RM and a full one are two models (identity() leaves adapters out);
            inputs["adapter"] = dict(base.lora)  # a full fine-tuning's key stays what it was
        self.key = hash_inputs(inputs)
        self._stage: StageResult | None = None
        self._model: RewardModel | None = None

    @property
    def ready(self) -> bool:
        """Whether the stage has run (or been reused) in this process: its name (held-out accuracy) is known."""
        return self._stage is not None

    @property
    def stage(self) -> StageResult:
        if self._stage is None:

            def build(folder: Path) -> dict:
                counters = train_reward_model(self.base, folder / "model", **self.recipe)
                return {"model": str(folder / "model"), **counters}

            desc = {"model": self.base.name_or_path, **self.recipe}
            self._stage = Stage("reward-model", self.key, build, description=desc).run(self.cache_dir)
        return self._stage

    def planned_stage(self) -> PlannedStage:
        """The stage as a plan lists it: it trains ``base``; its key is known before it runs."""
        return PlannedStage("reward-model", (("reward model", self.base),), self.key, trains=True)

    @property
    def model(self) -> RewardModel:
        if self._model is None:
            self._model = RewardModel(str(self.stage.path / "model"), input_format="chat", **self.scoring)
        return self._model

    @property
    def name(self) -> str:
        info = self.stage.info or {}
        return (
            f"rm:{self.stage.path.name} (held-out pair accuracy {info.get('val_accuracy', float('nan')):.3f})"
        )

    @property
    def cache_identity(self) -> dict | None:
        return self.model.cache_identity

    def score(self, prompts, responses, references=None) -> list[float]:
        return self.model.score(prompts, responses, references)


def train_reward_model(
    spec, out_dir: str | Path, *, data: dict, max_steps: int, lr: float, batch_size: int, seed: int
) -> dict:
    """Train a reward model on ``data`` (PreferenceDataModule arguments), save it at ``out_dir``; returns
    ``{"tokens", "val_accuracy", "val_margin", "val_pairs"}`` (held-out: the validation split)."""
    from prefdistill.callbacks import ThroughputMonitor, stage_progress
    from prefdistill.data import PreferenceDataModule
    from prefdistill.losses import get_loss
    from prefdistill.models import load_tokenizer, merge_and_save
    from prefdistill.modules import RewardModule

    L.seed_everything(seed, workers=True)
    tokenizer = load_tokenizer(spec)
    datamodule = PreferenceDataModule(
        **{**data, "record_type": "pairwise", "batch_size": batch_size, "seed": seed}
    )
    datamodule.connect(tokenizer)
    module = RewardModule(policy=spec, loss=get_loss("reward"), optimizer=partial(torch.optim.AdamW, lr=lr))
    monitor = ThroughputMonitor()
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=-1, devices=1, logger=False, enable_checkpointing=False,
        limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False,
        callbacks=[monitor, stage_progress()],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    judge = L.Trainer(devices=1, logger=False, enable_model_summary=False, enable_progress_bar=False)
    held_out = judge.validate(module, datamodule=datamodule, verbose=False)[0]  # every validation pair
    merge_and_save(module.policy, tokenizer, out_dir, standalone=True)
    return {
        "tokens": monitor.totals()["forward_tokens"],
        "val_accuracy": round(float(held_out["val/reward/accuracy"]), 4),
        "val_margin": round(float(held_out["val/reward/margin"]), 4),
        "val_pairs": len(datamodule.datasets["validation"]),
    }


def trained_reward_model(
    *,
    base,
    data: dict,
    cache_dir: str | os.PathLike,
    max_steps: int = 100,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    score_batch_size: int = 16,
    max_length: int = 1024,
    lora: dict | str | None = INHERIT,
) -> StageRewardModel:
    """The reward model of stage ``reward-model`` (trained when first used, or reused): ``base`` (a ModelSpec; LoRA
    trains adapters + head) fine-tuned ``max_steps`` steps of ``batch_size`` pairs at ``lr`` on ``data``
    (``PreferenceDataModule`` arguments). ``score_batch_size`` and ``max_length`` are how it scores
    (``RewardModel``); it renders prompts with the template it was trained with (``data["template"]``).
    ``lora``: the adapter the reward model trains, as an SFT recipe's (``inherit`` = ``base``'s own, null = full
    fine-tuning), so ``base`` can be a frozen teacher spec."""
    recipe = {"data": data, "max_steps": max_steps, "lr": lr, "batch_size": batch_size, "seed": seed}
    template = data.get("template", "auto")
    return StageRewardModel(
        sft_spec(base, lora), recipe, cache_dir, batch_size=score_batch_size, max_length=max_length, template=template
    )
