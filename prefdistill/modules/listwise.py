"""Listwise preference distillation (PAD): n responses per prompt, scored by a teacher.

The student's score of each response is its length-averaged log-prob (computed by the
loss from summed log-probs and lengths); the teacher's scores come with the data (the
sampling/scoring stage writes them). One forward runs all B*n responses.
"""

from __future__ import annotations

import torch

from prefdistill.losses import ListwiseInputs
from prefdistill.models import response_logps
from prefdistill.modules.base import PolicyModule


class ListwiseModule(PolicyModule):
    """Trains ``policy`` on a listwise loss over (B, n) responses with (B, n) teacher scores."""

    def __init__(
        self,
        *args,
        **kw,
    ):
        super().__init__(*args, **kw)
        if self.loss.kind != "listwise":
            raise ValueError(f"ListwiseModule trains listwise losses; {self.loss.name!r} is {self.loss.kind}")

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = batch["scores"]  # (B, n)
        b, n = scores.shape
        logps, lengths = response_logps(
            self.policy,
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            chunk_size=self.chunk_size,
        )
        out = self.call_loss(
            ListwiseInputs(logps=logps.view(b, n), lengths=lengths.view(b, n), teacher_scores=scores.float())
        )
        loss = out.loss.mean()
        return loss, {**out.metrics, "loss": loss.detach()}

    def training_step(self, batch, batch_idx):
        loss, metrics = self.compute(batch)
        self.log_metrics("train", metrics, batch_size=batch["scores"].shape[0])
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=batch["scores"].shape[0])
