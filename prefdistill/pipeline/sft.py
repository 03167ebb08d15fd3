"""Supervised fine-tuning as a pipeline stage (PLaD/PAD: SFT teacher and student before sampling).

``sft_step(...)`` builds an :class:`SFTStep` whose function trains a model on the (prompt,
response) records of a dataset with the ``sft`` loss (NLL of the response) through the same
module and data code as ``train.py``, then writes a plain transformers folder (LoRA merged) that
the next stages load. The recipe (data, steps, lr, ...) is the stage's cache key, so a re-run
with the same settings reuses the fine-tuned model. The trainer runs the
:class:`~prefdistill.callbacks.ThroughputMonitor`, and the stage records the tokens it trained on
(``{"tokens": ...}`` in its marker, the cost columns' count; ``prefdistill/utils/cost.py``).
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import lightning as L
import torch

from prefdistill.callbacks import ThroughputMonitor, stage_progress
from prefdistill.data import PreferenceDataModule
from prefdistill.losses import get_loss
from prefdistill.models import ModelSpec, load_tokenizer, merge_and_save
from prefdistill.modules import PreferenceModule
from prefdistill.pipeline.steps import INHERIT, SFTStep, check_adapter, sft_spec


def sft_finetune(
    spec: ModelSpec,
    out_dir: str | Path,
    *,
    data: dict,
    max_steps: int = 100,
    max_epochs: int | None = None,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    lora: dict | str | None = INHERIT,
    accelerator: str = "auto",
) -> dict:
    """Fine-tune ``spec`` on ``data`` (PreferenceDataModule arguments; responses = its ``chosen``);
    returns ``{"tokens": n}``, the tokens every model forwarded in training (the policy's only).

    Stops at ``max_steps`` or after ``max_epochs`` epochs, whichever comes first (``max_steps=-1``
    with ``max_epochs=1``: one epoch, as PLaD's SFT). ``lora``: the adapter this SFT trains (merged into
    the saved weights), ``inherit`` = the spec's own, null = full fine-tuning."""
    if max_steps < 0 and not max_epochs:
        raise ValueError("the SFT recipe needs max_steps >= 0 or max_epochs >= 1 to end")
    spec = sft_spec(spec, lora)
    L.seed_everything(seed, workers=True)
    tokenizer = load_tokenizer(spec)
    datamodule = PreferenceDataModule(
        **{**data, "record_type": "sft", "batch_size": batch_size, "seed": seed}
    )
    datamodule.connect(tokenizer)
    module = PreferenceModule(policy=spec, loss=get_loss("sft"), optimizer=partial(torch.optim.AdamW, lr=lr))
    monitor = ThroughputMonitor()
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=max_epochs or -1, accelerator=accelerator, devices=1, logger=False,
        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False,
        callbacks=[monitor, stage_progress()],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    out_dir = Path(out_dir)
    if not module.uses_lora:
        merge_and_save(module.policy, tokenizer, out_dir)
    else:
        staging = out_dir.parent / f".{out_dir.name}.adapter"
        merge_and_save(module.policy, tokenizer, staging, merge=True)
        shutil.move(str(staging / "merged"), str(out_dir))  # the plain, merged model
        shutil.rmtree(staging, ignore_errors=True)
    return {"tokens": monitor.totals()["forward_tokens"]}


def sft_step(
    *,
    data: dict,
    max_steps: int = 100,
    max_epochs: int | None = None,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    lora: dict | str | None = INHERIT,
) -> SFTStep:
    """An :class:`SFTStep` for the pipeline; its recipe is the cache key of the fine-tuned model.

    ``lora`` decides how the SFT trains apart from how the run trains afterwards: a student SFT'd with full
    fine-tuning (``lora: null``) and then distilled through a LoRA adapter (PLaD's recipe), or a teacher given
    an adapter for its SFT although the teacher group has none. ``inherit`` trains the spec's own."""
    recipe = {"data": data, "max_steps": max_steps, "lr": lr, "batch_size": batch_size, "seed": seed}
    if max_epochs is not None:  # absent from older recipes: their cached models stay valid
        recipe["max_epochs"] = max_epochs
    if check_adapter(lora) != INHERIT:  # likewise
        recipe["lora"] = lora
    return SFTStep(fn=partial(sft_finetune, **recipe), config=recipe)
