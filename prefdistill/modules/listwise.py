"""Listwise preference distillation (PAD): n responses per prompt, scored by a teacher.

The student's score of each response is its length-averaged log-prob (computed by the
loss from summed log-probs and lengths); the teacher's scores come with the data (the
sampling/scoring stage writes them). One forward runs all B*n responses: with
``forward="shared_prompt"`` (default) each prompt and its n responses are one packed sequence, the prompt
computed once (``prefdistill.models.packing``; equal log-probs); ``"padded"`` runs B*n padded rows.
"""

from __future__ import annotations

import torch

from prefdistill.losses import ListwiseInputs
from prefdistill.models import response_logps
from prefdistill.models.packing import grouped_response_logps
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.pair_forward import forward_mode


class ListwiseModule(PolicyModule):
    """Trains ``policy`` on a listwise loss over (B, n) responses with (B, n) teacher scores."""

    kind = "listwise"

    def __init__(self, *args, forward: str = "shared_prompt", **kw):
        super().__init__(*args, **kw)
        self.forward_mode = forward_mode(forward)

    def list_logps(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*n,) summed response log-probs (fp32) and token counts, rows ``b*n + j`` (see the docstring)."""
        rows = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.forward_mode == "shared_prompt":
            n = batch["scores"].shape[1]
            return grouped_response_logps(self.policy, *rows, n, chunk_size=self.chunk_size)
        return response_logps(self.policy, *rows, chunk_size=self.chunk_size)

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = batch["scores"]  # (B, n)
        b, n = scores.shape
        logps, lengths = self.list_logps(batch)
        out = self.call_loss(
            ListwiseInputs(logps=logps.view(b, n), lengths=lengths.view(b, n), teacher_scores=scores.float())
        )
        loss = out.loss.mean()
        return loss, {**out.metrics, "loss": loss.detach()}
