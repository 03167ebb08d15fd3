"""Token-level distillation (forward/reverse KL, TVD, generalized JSD, skew KL, MiniLLM).

The student is trained with teacher forcing on responses: the dataset's (the ``chosen`` side of
pairs, or SFT records), or, with ``on_policy`` set, responses sampled from the student itself
during training (GKD's λ; MiniLLM's teacher-mixed rollouts, see ``on_policy.py``). The teacher's
next-token distributions come from

* the frozen teacher run online on the same tokens (eval mode, no grad), or
* with ``teacher_cache`` set, its top-k log-probs computed once per (data, teacher, k) and read from
  disk, so no teacher is held during training (``teacher_cache.py`` states the approximation).
  Rollouts are new text, so on-policy training always runs the teacher online.

Token-level losses compare next-token distributions, so the teacher must share the student's
vocabulary: a mismatch is refused with both sizes named. The module branches on the loss's needs:
``policy_samples`` (MiniLLM) requires every batch to be a rollout and passes the sampling policy's
log-probs and the proposal's (``sample_logps``, ``proposal_logps``) to the loss.
"""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from prefdistill.generation.mixture import MixtureGenerator
from prefdistill.losses import TokenInputs
from prefdistill.models import ModelSpec, load_model, load_tokenizer
from prefdistill.models.logprobs import selective_log_softmax
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.on_policy import OnPolicy, rollout_batch
from prefdistill.modules.teacher_cache import TeacherCache, TeacherTable, teacher_cache_key, topk_rows


def next_token_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """(B, T-1, V) logits of the responses' batch: position t predicts token t+1."""
    return model(input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]).logits[
        :, :-1
    ]


def vocab_size(model: torch.nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log-softmax(logits) at ``labels`` (0 where ``mask`` is False), float32."""
    return torch.where(mask, selective_log_softmax(logits, labels.masked_fill(~mask, 0).long()), 0.0)


class DistillModule(PolicyModule):
    """Trains ``policy`` (the student) against ``teacher`` distributions; see the module docstring."""

    def __init__(
        self,
        *args,
        teacher: ModelSpec | None = None,
        teacher_cache: str | os.PathLike | None = None,
        teacher_topk: int | str = 64,
        on_policy: OnPolicy | None = None,
        **kw,
    ):
        super().__init__(*args, **kw)
        if self.loss.kind != "token":
            raise ValueError(
                f"DistillModule trains token-level losses; {self.loss.name!r} is {self.loss.kind}"
            )
        if "teacher" in self.loss.needs and teacher is None:
            raise ValueError(f"loss {self.loss.name!r} needs a teacher: add teacher=<model config>")
        if "policy_samples" in self.loss.needs and (on_policy is None or on_policy.fraction < 1.0):
            raise ValueError(
                f"loss {self.loss.name!r} trains on responses sampled from the policy: set "
                "on_policy.fraction=1 (method=minillm does)"
            )
        if teacher_cache is not None and on_policy is not None and on_policy.fraction > 0:
            raise ValueError(
                "teacher_cache holds the teacher on dataset responses only; on-policy samples are new "
                "text and need the online teacher: set module.teacher_cache=null"
            )
        teacher_topk = 64 if teacher_topk == "auto" else teacher_topk
        if teacher_topk < 1:
            raise ValueError(f"teacher_topk must be >= 1, got {teacher_topk}")
        self.teacher_spec = teacher
        self.teacher: torch.nn.Module | None = None
        self.teacher_cache = TeacherCache(teacher_cache) if teacher_cache is not None else None
        self.teacher_topk = int(teacher_topk)
        self.on_policy = on_policy
        self._teacher_tables: dict[str, TeacherTable] = {}
        self._generator = None
        self._rollout: dict | None = None
        self._rollout_uses = 0

    # -- models ------------------------------------------------------------------------
    def configure_extra_models(self) -> None:
        if self.teacher is None and self.teacher_spec is not None and self.teacher_cache is None:
            self.teacher = self._load_teacher()

    def _load_teacher(self) -> torch.nn.Module:
        teacher = load_model(self.teacher_spec, trainable=False)
        student, other = vocab_size(self.policy), vocab_size(teacher)
        if student != other:
            raise ValueError(
                f"token-level loss {self.loss.name!r} needs one vocabulary, but the student has "
                f"{student} tokens and the teacher {other}; use a sequence-level method "
                "(seqkd, plad, pad) for teachers with another tokenizer"
            )
        return teacher.to(self.device) if self._device_known() else teacher

    def _device_known(self) -> bool:
        return self.policy is not None and next(self.policy.parameters()).device.type != "meta"

    # -- teacher distributions -----------------------------------------------------------
    def _teacher_table(self, split: str) -> TeacherTable:
        if split not in self._teacher_tables:
            dm = self.trainer.datamodule
            data = self.teacher_cache.load_or_compute(
                teacher_cache_key(dm.datasets[split], self.teacher_spec.identity(), self.teacher_topk),
                lambda: self._compute_teacher_topk(dm.loader(split), split),
                f"teacher top-{self.teacher_topk} [{split}]",
            )
            self._teacher_tables[split] = TeacherTable(data)
        return self._teacher_tables[split]

    @torch.no_grad()
    def _compute_teacher_topk(self, loader, split: str) -> dict[str, torch.Tensor]:
        teacher = self._load_teacher().to(self.device)  # held only for this pass
        index, counts, logps, ids = [], [], [], []
        for batch in tqdm(loader, desc=f"teacher top-{self.teacher_topk} [{split}]", leave=False):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            mask = batch["chosen_labels"][:, 1:] != -100
            values, top = topk_rows(next_token_logits(teacher, batch), mask, self.teacher_topk)
            index.append(batch["index"].cpu())
            counts.append(mask.sum(-1).cpu())
            logps.append(values.cpu())
            ids.append(top.cpu())
        del teacher
        counts = torch.cat(counts)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return {
            "index": torch.cat(index),
            "offsets": offsets,
            "logps": torch.cat(logps),
            "ids": torch.cat(ids),
        }

    # -- on-policy rollouts --------------------------------------------------------------
    def _rollout_generator(self):
        if self._generator is None:
            self._generator = MixtureGenerator(
                self.policy_spec, model=self.policy, tokenizer=load_tokenizer(self.policy_spec), progress=False,
                teacher=self.teacher, teacher_mix=self.on_policy.teacher_mix,
                batch_size=64,
            )  # fmt: skip
        return self._generator

    def maybe_rollout(self, batch: dict) -> dict:
        """``batch``, or (with probability on_policy.fraction) a batch of responses sampled now."""
        if self.on_policy is None or self.on_policy.fraction == 0.0:
            return batch
        if self._rollout is not None and self._rollout_uses < self.on_policy.reuse:
            self._rollout_uses += 1
            return self._rollout
        draw = torch.rand(()).item()  # torch's global RNG: saved in checkpoints, so resumes replay it
        seed = int(torch.randint(0, 2**62, ()).item())
        if draw >= self.on_policy.fraction:
            self._rollout = None
            return batch
        was_training = self.policy.training
        self.policy.eval()
        try:
            rollout = rollout_batch(self._rollout_generator(), batch, seed, self.on_policy.sampling)
            if self.on_policy.reuse > 1:  # later steps need the log-probs of the policy that sampled
                mask = rollout["chosen_labels"][:, 1:] != -100
                with torch.no_grad():
                    logits = next_token_logits(self.policy, rollout)
                rollout["sample_logps"] = token_logps(logits, rollout["chosen_labels"][:, 1:], mask)
        finally:
            self.policy.train(was_training)
        self._rollout, self._rollout_uses = rollout, 1
        return rollout

    # -- loss ----------------------------------------------------------------------------

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["chosen_labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        mask = labels != -100
        student_logits = next_token_logits(self.policy, batch)
        inputs = {"student_logits": student_logits.float(), "mask": mask, "labels": labels}
        if batch.get("rollout"):
            inputs |= {"sample_logps": batch.get("sample_logps"), "sample_mix": self.on_policy.teacher_mix}
        if self.teacher_cache is not None and not batch.get("rollout"):
            inputs |= self._teacher_table(self.current_split()).batch(batch["index"].cpu(), mask)
        else:
            with torch.no_grad():
                inputs["teacher_logits"] = next_token_logits(self.teacher, batch).float()
        out = self.call_loss(TokenInputs(**inputs))
        loss = out.loss.mean()
        metrics = {**out.metrics, "loss": loss.detach()}
        if batch.get("rollout"):
            metrics["on_policy/response_tokens"] = mask.sum(-1).float()
        return loss, metrics

    def training_step(self, batch, batch_idx):
        batch = self.maybe_rollout(batch)
        loss, metrics = self.compute(batch)
        if self.on_policy is not None:
            metrics["on_policy/fraction"] = torch.tensor(float(bool(batch.get("rollout"))))
        self.log_metrics("train", metrics, batch_size=batch["chosen_input_ids"].shape[0])
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=batch["chosen_input_ids"].shape[0])
