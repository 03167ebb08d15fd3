"""Token-level distillation (forward/reverse KL, TVD, generalized JSD, skew KL) with an online teacher.

The student is trained on the dataset responses (the ``chosen`` side of pairs, or SFT
records) with teacher forcing; the frozen teacher (eval mode, no grad) runs the same
tokens. Token-level losses compare next-token distributions, so the teacher must share
the student's vocabulary: a mismatch is refused with both sizes named.
"""

from __future__ import annotations

import torch

from prefdistill.models import ModelSpec, load_model
from prefdistill.modules.base import PolicyModule


def vocab_size(model: torch.nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


class DistillModule(PolicyModule):
    """Trains ``policy`` (the student) against ``teacher`` logits; see the module docstring."""

    def __init__(
        self,
        *args,
        teacher: ModelSpec | None = None,
        **kw,
    ):
        super().__init__(*args, **kw)
        if self.loss.kind != "token":
            raise ValueError(
                f"DistillModule trains token-level losses; {self.loss.name!r} is {self.loss.kind}"
            )
        if "teacher" in self.loss.needs and teacher is None:
            raise ValueError(f"loss {self.loss.name!r} needs a teacher: add teacher=<model config>")
        self.teacher_spec = teacher
        self.teacher: torch.nn.Module | None = None

    def configure_extra_models(self) -> None:
        if self.teacher is None and self.teacher_spec is not None:
            self.teacher = load_model(self.teacher_spec, trainable=False)
            student, teacher = vocab_size(self.policy), vocab_size(self.teacher)
            if student != teacher:
                raise ValueError(
                    f"token-level loss {self.loss.name!r} needs one vocabulary, but the student has "
                    f"{student} tokens and the teacher {teacher}; use a sequence-level method "
                    "(seqkd, plad_*, pad_*) for teachers with another tokenizer"
                )

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        input_ids, attention_mask = batch["chosen_input_ids"], batch["chosen_attention_mask"]
        labels = batch["chosen_labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        student_logits = self.policy(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        out = self.loss(
            student_logits=student_logits.float(),
            teacher_logits=teacher_logits.float(),
            mask=labels != -100,
            labels=labels,
        )
        loss = out.loss.mean()
        return loss, {**out.metrics, "loss": loss.detach()}

    def training_step(self, batch, batch_idx):
        loss, metrics = self.compute(batch)
        self.log_metrics("train", metrics, batch_size=batch["chosen_input_ids"].shape[0])
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=batch["chosen_input_ids"].shape[0])
