"""Pairwise preference training (DPO and variants, SimPO, SimPER, PLaD, SFT on chosen).

One concatenated forward of ``[chosen; rejected]`` through the policy gives the (B,)
summed response log-probs; the reference (when the loss ``needs`` one) runs the same
tensors without gradients. With LoRA the reference is the same network with adapters
disabled, so no second copy is held; with full fine-tuning it is a frozen copy built
from the ``reference`` spec (default: the policy's spec).

The module branches only on ``loss.needs`` (``reference``, ``rejected``, ``scores``),
never on the loss name.
"""

from __future__ import annotations

import contextlib

import torch

from prefdistill.models import ModelSpec, load_model, response_logps
from prefdistill.modules.base import PolicyModule

SIDES = ("chosen", "rejected")


class PreferenceModule(PolicyModule):
    """Trains ``policy`` on a pairwise loss; see the module docstring."""

    def __init__(self, *args, reference: ModelSpec | None = None, teacher: ModelSpec | None = None, **kw):
        super().__init__(*args, **kw)
        if self.loss.kind != "pairwise":
            raise ValueError(
                f"PreferenceModule trains pairwise losses; {self.loss.name!r} is a {self.loss.kind} loss"
            )
        self.reference_spec = reference
        self.reference: torch.nn.Module | None = None
        # A teacher is used upstream (it wrote the pairs); pairwise losses never call it.
        self.teacher_spec = teacher

    @property
    def needs_reference(self) -> bool:
        return "reference" in self.loss.needs

    def configure_extra_models(self) -> None:
        if self.needs_reference and not self.uses_lora and self.reference is None:
            self.reference = load_model(self.reference_spec or self.policy_spec, trainable=False)

    # -- forward -----------------------------------------------------------------------
    def sides(self, batch) -> tuple[str, ...]:
        wanted = SIDES if "rejected" in self.loss.needs else SIDES[:1]
        missing = [s for s in wanted if f"{s}_input_ids" not in batch]
        if missing:
            raise KeyError(f"loss {self.loss.name!r} needs {missing} responses but the batch has none")
        return wanted

    def _concat(self, batch, sides):
        return [torch.cat([batch[f"{s}_{k}"] for s in sides]) for k in ("input_ids", "attention_mask", "labels")]

    def sequence_logps(self, model, batch, sides) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(sides)*B,) summed response log-probs (fp32) and token counts, one forward."""
        input_ids, attention_mask, labels = self._concat(batch, sides)
        return response_logps(model, input_ids, attention_mask, labels, chunk_size=self.chunk_size)

    @torch.no_grad()
    def reference_logps(self, batch, sides) -> torch.Tensor:
        if "ref_chosen_logps" in batch:  # precomputed (reference cache)
            return torch.cat([batch[f"ref_{s}_logps"] for s in sides]).float()
        if self.uses_lora:
            ctx = self.policy.disable_adapter()
            model = self.policy
        else:
            ctx, model = contextlib.nullcontext(), self.reference
        with ctx:
            logps, _ = self.sequence_logps(model, batch, sides)
        return logps

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sides = self.sides(batch)
        n = batch["chosen_input_ids"].shape[0]
        logps, lengths = self.sequence_logps(self.policy, batch, sides)
        inputs = {
            "chosen_logps": logps[:n],
            "chosen_lengths": lengths[:n],
            "rejected_logps": logps[n:] if len(sides) == 2 else None,
            "rejected_lengths": lengths[n:] if len(sides) == 2 else None,
        }
        if self.needs_reference:
            ref = self.reference_logps(batch, sides)
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref[:n], ref[n:]
        if "scores" in self.loss.needs:
            inputs |= {f"{s}_scores": batch[f"{s}_scores"] for s in sides}
        out = self.loss(**inputs)
        metrics = dict(out.metrics)
        metrics["logps/chosen"] = inputs["chosen_logps"].detach()
        if len(sides) == 2:
            metrics["logps/rejected"] = inputs["rejected_logps"].detach()
            mean_w = inputs["chosen_logps"] / inputs["chosen_lengths"]
            mean_l = inputs["rejected_logps"] / inputs["rejected_lengths"]
            metrics["logps/accuracy"] = (mean_w > mean_l).float().detach()
        loss = out.loss.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # -- Lightning hooks ---------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss, metrics = self.compute(batch)
        self.log_metrics("train", metrics, batch_size=batch["chosen_input_ids"].shape[0])
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=batch["chosen_input_ids"].shape[0])

    def test_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("test", metrics, batch_size=batch["chosen_input_ids"].shape[0])
