"""Token-level distillation (forward/reverse KL, TVD, generalized JSD, skew KL, MiniLLM, ULD, DistiLLM-2).

The student is trained with teacher forcing on responses: the dataset's (the ``chosen`` side of
pairs, or SFT records), or, with ``on_policy`` set, responses sampled from the student itself
during training (GKD's λ; MiniLLM's teacher-mixed rollouts, see ``on_policy.py``). The teacher's
next-token distributions come from

* the frozen teacher run online on the same tokens (eval mode, no grad), or
* with ``teacher_cache`` set, its top-k log-probs computed once per (data, teacher, k) and read from
  disk, so no teacher is held during training (``teacher_cache.py`` states the approximation;
  ``teacher_support`` picks the stored format: ``topk``, ``topk_tail`` or the unbiased ``sampled``, see
  ``teacher_formats.py``). Rollouts are new text, so on-policy training runs the teacher online;
* a served teacher (``teacher=served``, ``prefdistill/models/served.py``): its top-k over HTTP, once into a
  table for dataset responses (in ``teacher_cache`` when set, else in memory) and per batch for rollouts;
* several teachers (``teacher=[a,b]``, ``teacher_weights``): their weighted mixture (``teachers.py``).

The module branches on the loss's needs:

* **one vocabulary** (default): the teacher must share the student's tokenizer. Tokenizers that
  differ only in padding (the same token at every id below the smaller output size, e.g.
  Qwen2.5-7B's 152064 rows vs 0.5B's 151936) are accepted and both models' logits are cut to the
  shared ids (logged once); any other mismatch is refused naming both tokenizers.
* ``cross_tokenizer`` (``uld``, ``gold``): the teacher reads its own tokenization of the same text
  (its own chat template when it has one, raw text otherwise: Gemma-3-270M base has none) and its
  top-k, aligned to the student's tokens, is computed once per split in the data path
  (``teacher_cache.cross_tokenizer_topk``) and kept in ``teacher_cache``, else in
  ``<cache_dir>/teacher_topk``, else in memory.
* ``rejected`` (``distillm2``): batches are pairs (teacher response = chosen, student response =
  rejected); both sides are distilled and reach the loss as ``TokenInputs``' ``rejected_*`` tensors.
* ``policy_samples`` (MiniLLM, OPD, SKD): every batch must be a rollout; the sampling policy's and the
  proposal's log-probs (``sample_logps``, ``proposal_logps``) go to the loss.
* ``speculative_samples`` (SKD): the rollouts must be interleaved, the teacher replacing the student's
  proposals outside its top-k (``on_policy.speculative``).

Every call passes ``progress`` (fraction of the training steps done) for losses with schedules. Held-out
batches also log the forward and reverse KL to the teacher (``val/teacher/forward_kl``, ``reverse_kl``; token
mean, τ = 1; on the cached top-k support with a teacher cache): one yardstick whatever the loss.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch

from prefdistill.data.alignment import one_vocabulary, vocabulary_map
from prefdistill.data.templates import PromptEncoder
from prefdistill.losses import TokenInputs, get_loss
from prefdistill.models import ModelSpec, load_model, load_tokenizer
from prefdistill.models.logprobs import selective_log_softmax
from prefdistill.models.served import ServedTeacher
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.held import HeldModel
from prefdistill.modules.on_policy import OnPolicy, rollout_batch, rollout_generator
from prefdistill.modules.response_rows import response_index, response_logits
from prefdistill.modules.teacher_cache import (
    CROSS_FIELDS,
    TeacherCache,
    TeacherTable,
    cross_tokenizer_topk,
    same_vocabulary_topk,
    teacher_cache_key,
)
from prefdistill.modules.teachers import Teachers, served_inputs, served_table, teacher_format
from prefdistill.utils.cache import computed_by_ranks, content_hash

log = logging.getLogger(__name__)
_SIDE_FIELDS = ("student_logits", "mask", "labels", "teacher_logits", "teacher_topk_logps", "teacher_topk_ids",
                "teacher_label_logps")  # fmt: skip


def next_token_logits(model: torch.nn.Module, batch: dict, side: str = "chosen") -> torch.Tensor:
    """(B, T-1, V) logits of one side of the batch: position t predicts token t+1."""
    return model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits[
        :, :-1
    ]


def vocab_size(model: torch.nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def token_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log-softmax(logits) at ``labels`` (0 where ``mask`` is False), float32."""
    return torch.where(mask, selective_log_softmax(logits, labels.masked_fill(~mask, 0).long()), 0.0)


class DistillModule(PolicyModule):
    """Trains ``policy`` (the student) against ``teacher`` distributions; see the module docstring."""

    kind = "token"

    def __init__(
        self,
        *args,
        teacher: ModelSpec | ServedTeacher | list | None = None,
        teacher_cache: str | os.PathLike | None = None,
        teacher_topk: int | str = 64,
        teacher_support: str = "auto",
        teacher_weights: list[float] | None = None,
        on_policy: OnPolicy | None = None,
        **kw,
    ):
        super().__init__(*args, **kw)
        needs = self.loss.needs
        if teacher is None and teacher_weights is not None:
            raise ValueError("module.teacher_weights mixes several teachers, but no teacher is set")
        if "teacher" in needs and teacher is None:
            raise ValueError(f"loss {self.loss.name!r} needs a teacher: add teacher=<model config>")
        if "policy_samples" in needs and (on_policy is None or on_policy.fraction < 1.0):
            raise ValueError(
                f"loss {self.loss.name!r} trains on responses sampled from the policy: set "
                "on_policy.fraction=1 (method=minillm does)"
            )
        if "speculative_samples" in needs and (on_policy is None or on_policy.speculative is None):
            raise ValueError(
                f"loss {self.loss.name!r} trains on interleaved samples (the teacher replaces the student's tokens "
                "outside its top-k): set on_policy.speculative (on_policy=skd; method=skd does)"
            )
        teachers = None if teacher is None else Teachers(teacher, teacher_weights)
        sampling = on_policy is not None and on_policy.fraction > 0
        if sampling and (teacher_cache is not None or {"cross_tokenizer", "rejected"} & needs):
            raise ValueError(
                f"on-policy samples are new text: they need the online teacher of the student's vocabulary, and "
                f"{self.loss.name!r} reads dataset responses only; set on_policy=null (or module.teacher_cache=null "
                "for a token-level loss of one vocabulary)"
            )
        teacher_topk = 64 if teacher_topk == "auto" else teacher_topk
        if teacher_topk < 1:
            raise ValueError(f"teacher_topk must be >= 1, got {teacher_topk}")
        self.teacher_format = teacher_format(
            self.loss, teacher_support, teacher_topk, teachers, teacher_cache, on_policy
        )
        self.cross = "cross_tokenizer" in needs
        if self.cross and teacher_cache is None:  # the aligned table always exists; on disk when possible
            teacher_cache = self.auto_cache("auto", "teacher_topk")
        self.teachers = teachers
        self.teacher_spec = None if teachers is None else teachers.first
        self.teacher: torch.nn.Module | None = None
        self.teacher_models: list[torch.nn.Module] = []  # the mixture's members, online
        fields = CROSS_FIELDS if self.cross else self.teacher_format.fields
        self.teacher_cache = None if teacher_cache is None else TeacherCache(teacher_cache, fields)
        self.teacher_topk = int(teacher_topk)
        self.on_policy = on_policy
        self.vocab_limit: int | None = None  # shared ids of a padded teacher vocabulary
        self._teacher_tables: dict[tuple[str, str], TeacherTable] = {}
        self._vocabulary_map: torch.Tensor | None = None  # teacher id -> student id (cross_tokenizer)
        self._total_steps: int | None = None
        self._generator = None
        self._rollout: dict | None = None
        self._rollout_uses = 0

    # -- models ------------------------------------------------------------------------
    def teacher_source(self) -> str | None:
        """Where the teacher's distributions come from: None (no teacher), ``"table"`` (top-k computed once per
        split by the teacher(s) loaded for that pass: ``teacher_cache``, or cross-tokenizer losses), ``"online"``
        (frozen teacher(s) held in training) or ``"served"`` (asked over HTTP: no weights here).
        :meth:`configure_extra_models` and :meth:`held_models` both ask."""
        if self.teachers is None:
            return None
        if self._served is not None:
            return "served"
        return "table" if self.cross or self.teacher_cache is not None else "online"

    def configure_extra_models(self) -> None:
        if self.teacher is None and not self.teacher_models and self.teacher_source() == "online":
            models = self._load_teachers()
            if self.teachers.mixture:
                self.teacher_models = models
            else:
                self.teacher = models[0]

    def held_models(self) -> list[HeldModel]:
        source, held = self.teacher_source(), super().held_models()
        if source is None:
            return held
        if source == "served":
            note = f"served at {self._served.url}: its top-{self.teacher_topk} asked over HTTP, no weights here"
            return [*held, HeldModel("teacher", self._served, "shared", note=note)]
        if source == "online":
            return [*held, *(HeldModel("teacher", spec, "frozen") for spec in self.teachers.specs)]
        folder = None if self.teacher_cache is None else str(self.teacher_cache.root)
        fmt = self.teacher_format
        note = f"top-{fmt.k}" if fmt.name == "topk" else f"{fmt.name} k={fmt.k}"
        note = "aligned to the student's tokens" if self.cross else note
        return [*held, *(HeldModel("teacher", spec, "pass", folder, note) for spec in self.teachers.specs)]

    @property
    def _served(self) -> ServedTeacher | None:
        return None if self.teachers is None else self.teachers.served

    def _live_teachers(self) -> list[torch.nn.Module]:
        return self.teacher_models or [self.teacher]

    def _load_teachers(self) -> list[torch.nn.Module]:
        """Every local teacher, frozen, each checked against the student's vocabulary (a mixture: one output size)."""
        models = self.teachers.load()
        if len({vocab_size(m) for m in models}) != 1:
            raise ValueError(
                f"teacher mixture: output sizes {[vocab_size(m) for m in models]} differ; one vocabulary"
            )
        if not self.cross:
            limits = {self._shared_vocabulary(vocab_size(self.policy), vocab_size(m), s)
                      for m, s in zip(models, self.teachers.specs)}  # fmt: skip
            if len(limits) > 1:
                raise ValueError(
                    f"teacher mixture: the teachers share {sorted(limits, key=str)} ids with the student"
                )
            self.vocab_limit = limits.pop()
        return [m.to(self.device) if self._device_known() else m for m in models]

    def _shared_vocabulary(self, student: int, other: int, spec: ModelSpec) -> int | None:
        """None (one vocabulary), the shared size of a padded one (logged once), or an error naming both tokenizers."""
        if student == other and spec.tokenizer_source == self.policy_spec.tokenizer_source:
            return None
        s_tok, t_tok = load_tokenizer(self.policy_spec), load_tokenizer(spec)
        shared = one_vocabulary(s_tok, t_tok, student, other, f"token-level loss {self.loss.name!r}")
        if shared is not None and self.vocab_limit is None:
            log.info(
                "teacher vocabulary padded: student %d and teacher %d output rows, the tokenizers agree on every id "
                "below %d; token-level KD uses the first %d logits of both", student, other, shared, shared,
            )  # fmt: skip
        return shared

    def _device_known(self) -> bool:
        return self.policy is not None and next(self.policy.parameters()).device.type != "meta"

    # -- teacher distributions -----------------------------------------------------------
    def _teacher_table(self, split: str, side: str) -> TeacherTable:
        if (split, side) not in self._teacher_tables:
            key, compute, label = self._cross_entry(split) if self.cross else self._topk_entry(split, side)
            data = (
                computed_by_ranks(compute)  # each rank its rows, all of them on every rank
                if self.teacher_cache is None
                else self.teacher_cache.load_or_compute(key, compute, label)
            )
            self._teacher_tables[(split, side)] = TeacherTable(data)
        return self._teacher_tables[(split, side)]

    def _topk_entry(self, split: str, side: str):
        dm = self.trainer.datamodule
        key = teacher_cache_key(
            dm.datasets[split],
            self.teachers.identity(),
            self.teacher_topk,
            side,
            storage=self.teacher_format.key(),
        )
        fmt = self.teacher_format
        label = (
            f"teacher {f'top-{fmt.k}' if fmt.name == 'topk' else f'{fmt.name} k={fmt.k}'} [{split}, {side}]"
        )
        return key, lambda: self._compute_teacher_topk(dm.loader(split), label, side), label

    def _cross_entry(self, split: str):
        dm = self.trainer.datamodule
        template = "raw" if dm.template == "raw" else "auto"  # the teacher's own chat template, if any
        records = dm.records[split]
        texts = content_hash(
            [[i, r.prompt, getattr(r, "chosen", None) or r.response] for i, r in sorted(records.items())]
        )
        key = teacher_cache_key(
            dm.datasets[split], self.teacher_spec.identity(), self.teacher_topk, "chosen", alignment="cross_tokenizer",
            teacher_template=template, policy=dataclasses.asdict(dm.policy), texts=texts,
            student_tokenizer=self.policy_spec.tokenizer_source,
        )  # fmt: skip
        label = f"teacher top-{self.teacher_topk} across tokenizers [{split}]"

        def compute():  # the teacher is held for this pass only
            teacher = load_model(self.teacher_spec, trainable=False).to(self.device)
            t_tok = load_tokenizer(self.teacher_spec)
            if self._vocabulary_map is None:  # one per run: the splits share it
                rows = vocab_size(teacher)
                self._vocabulary_map = torch.tensor(
                    vocabulary_map(dm.tokenizer, t_tok, rows), dtype=torch.long
                )
            return cross_tokenizer_topk(
                teacher, t_tok, dm.tokenizer, dm.shard(split), records, policy=dm.policy,  # this rank's rows
                student_template=PromptEncoder(dm.tokenizer, dm.template).template, teacher_template=template,
                topk=self.teacher_topk, batch_size=dm.eval_batch_size, chunk_size=self.chunk_size,
                device=self.device, label=label, mapping=self._vocabulary_map,
            )  # fmt: skip

        return key, compute, label

    def _compute_teacher_topk(self, loader, label: str, side: str) -> dict[str, torch.Tensor]:
        if self._served is not None:  # no weights: the server answers
            return served_table(self._served, loader, side, self.teacher_format, self._tokenizer(), label)
        models = [m.to(self.device) for m in self._load_teachers()]  # held only for this pass
        return same_vocabulary_topk(
            models, loader, side, self.teacher_format, weights=self.teachers.weights, chunk_size=self.chunk_size,
            vocab_limit=self.vocab_limit, device=self.device, label=label,
        )  # fmt: skip

    def _tokenizer(self):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "tokenizer", None) or load_tokenizer(self.policy_spec)

    # -- on-policy rollouts --------------------------------------------------------------
    def _rollout_generator(self):
        if self._generator is None:
            self._generator = rollout_generator(
                self.on_policy, self.policy_spec, self.policy, self.teacher, version=self.global_step
            )
        sync = getattr(self._generator, "sync_weights", None)  # a separate engine (vLLM) follows the policy
        if sync is not None:
            sync(self.global_step)
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
    def _side_inputs(self, batch: dict, side: str) -> TokenInputs:
        """The loss's tensors for one response side of the batch (student logits, teacher, mask, labels)."""
        labels = batch[f"{side}_labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        index, mask = response_index(labels != -100)  # (B, R): the response positions only, left-aligned
        student = response_logits(self.policy, batch, side, index, self.vocab_limit)
        inputs = {"student_logits": student, "mask": mask, "labels": labels.gather(1, index)}
        if batch.get("rollout"):
            sampled = batch.get("sample_logps")
            inputs |= {"sample_logps": None if sampled is None else sampled.gather(1, index),
                       "sample_mix": self.on_policy.teacher_mix}  # fmt: skip
        if (self.cross or self.teacher_cache is not None or self._served) and not batch.get("rollout"):
            inputs |= self._teacher_table(self.current_split(), side).batch(batch["index"].cpu(), mask)
        elif self._served is not None:  # a rollout: ask the server now
            inputs |= served_inputs(self._served, batch, side, self.teacher_format, self._tokenizer(), mask)
        else:
            inputs["teacher_logits"] = self.teachers.logits(
                self._live_teachers(), batch, side, index, self.vocab_limit
            )
        return TokenInputs(**inputs)

    def on_train_start(self) -> None:
        steps = self.trainer.estimated_stepping_batches
        self._total_steps = int(steps) if steps and steps != float("inf") else None

    def progress(self) -> float:
        """Fraction of the training steps done (0 before training or when the length is unknown)."""
        return min(1.0, self.global_step / self._total_steps) if self._total_steps else 0.0

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self._side_inputs(batch, "chosen")
        if "rejected" in self.loss.needs:
            y = self._side_inputs(batch, "rejected")
            x = dataclasses.replace(
                x, **{f"rejected_{k}": v for k, v in vars(y).items() if k in _SIDE_FIELDS}
            )
        out = self.call_loss(dataclasses.replace(x, progress=self.progress()))
        loss = out.loss.mean()
        metrics = {**out.metrics, "loss": loss.detach()}
        if not self.training and not self.cross and "teacher" in self.loss.needs:
            metrics |= {f"teacher/{kl}": get_loss(f"kd_{d}")(x).metrics["kd/divergence"]
                        for kl, d in (("forward_kl", "fkl"), ("reverse_kl", "rkl"))}  # fmt: skip
        if batch.get("rollout"):
            metrics["on_policy/response_tokens"] = x.mask.sum(-1).float()
            metrics |= {f"on_policy/{k}": torch.tensor(v) for k, v in batch.get("rollout_stats", {}).items()}
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
