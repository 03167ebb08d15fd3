"""The typed inputs of each loss kind: one small dataclass of tensors, with the shared arithmetic.

A loss receives one of these (built by :class:`~prefdistill.losses.registry.Loss` from the keyword
tensors of the public call) and reads what it needs through its helpers, which cast to float32,
check shapes and name the loss and the missing tensor when something is absent::

    chosen, rejected = x.ratios()      # policy/reference log-ratios, (B,) each
    a_w, a_l = x.averages()            # length-averaged log-probs A = S/|y|

Notation (methods spec, section 0): ``S(y|x)`` summed response log-prob, ``|y|`` response tokens,
``A = S/|y|``, ``h = [S_θ(y_w) − S_ref(y_w)] − [S_θ(y_l) − S_ref(y_l)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def _f32(x: Tensor | None, name: str, loss: str, dim: int = 1) -> Tensor:
    """A required tensor as float32; a clear error naming the loss if it is missing or misshapen."""
    if x is None:
        raise ValueError(f"loss {loss!r} needs {name!r} but it was None")
    if x.dim() != dim:
        raise ValueError(f"loss {loss!r}: {name!r} must have {dim} dims, got shape {tuple(x.shape)}")
    return x.float()


def _counts(x: Tensor | None, name: str, loss: str, dim: int = 1) -> Tensor:
    """Token counts as float32, clamped to >= 1 so an empty response gives A = 0, not NaN."""
    return _f32(x, name, loss, dim).clamp_min(1.0)


@dataclass(frozen=True)
class PairwiseInputs:
    """(B,) tensors of a preference pair: policy (and reference) summed response log-probs, lengths, scores."""

    chosen_logps: Tensor
    rejected_logps: Tensor | None = None
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    ref_chosen_logps: Tensor | None = None
    ref_rejected_logps: Tensor | None = None
    chosen_scores: Tensor | None = None
    rejected_scores: Tensor | None = None
    # (B, T) per-token log-probs of the policy / reference and the response mask (needs "token_logps")
    chosen_token_logps: Tensor | None = None
    rejected_token_logps: Tensor | None = None
    ref_chosen_token_logps: Tensor | None = None
    ref_rejected_token_logps: Tensor | None = None
    chosen_mask: Tensor | None = None
    rejected_mask: Tensor | None = None
    # (B, T) per-token log Σ_v π_θ(v|·)² of the policy, detached (needs "token_sq_probs"; WPO's weights)
    chosen_log_sq_probs: Tensor | None = None
    rejected_log_sq_probs: Tensor | None = None
    loss_name: str = "loss"

    def logps(self) -> tuple[Tensor, Tensor]:
        """Summed policy log-probs ``S_θ(y_w), S_θ(y_l)``, float32 (B,)."""
        return (
            _f32(self.chosen_logps, "chosen_logps", self.loss_name),
            _f32(self.rejected_logps, "rejected_logps", self.loss_name),
        )

    def reference(self) -> tuple[Tensor, Tensor]:
        """Summed reference log-probs ``S_ref(y_w), S_ref(y_l)``, float32 (B,)."""
        missing = [n for n in ("ref_chosen_logps", "ref_rejected_logps") if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"loss {self.loss_name!r} needs reference log-probs but {missing} is None; "
                "provide the reference model's log-probs (or use a reference-free loss)"
            )
        return (
            _f32(self.ref_chosen_logps, "ref_chosen_logps", self.loss_name),
            _f32(self.ref_rejected_logps, "ref_rejected_logps", self.loss_name),
        )

    def ratios(self, reference_free: bool = False) -> tuple[Tensor, Tensor]:
        """Policy/reference log-ratios ``S_θ − S_ref`` of chosen and rejected (``S_θ`` when reference-free)."""
        pc, pr = self.logps()
        if reference_free:
            return pc, pr
        rc, rr = self.reference()
        return pc - rc, pr - rr

    def lengths(self) -> tuple[Tensor, Tensor]:
        """Response token counts ``|y_w|, |y_l|`` as float32, clamped to >= 1."""
        return (
            _counts(self.chosen_lengths, "chosen_lengths", self.loss_name),
            _counts(self.rejected_lengths, "rejected_lengths", self.loss_name),
        )

    def averages(self) -> tuple[Tensor, Tensor]:
        """Length-averaged policy log-probs ``A_θ = S_θ/|y|`` of chosen and rejected."""
        (pc, pr), (lc, lr) = self.logps(), self.lengths()
        return pc / lc, pr / lr

    def chosen_average(self) -> Tensor:
        """``A_θ(y_w)`` alone (chosen-only losses such as SFT)."""
        pc = _f32(self.chosen_logps, "chosen_logps", self.loss_name)
        return pc / _counts(self.chosen_lengths, "chosen_lengths", self.loss_name)

    def scores(self) -> tuple[Tensor, Tensor]:
        """Detached float32 scores ``s(y_w), s(y_l)`` from the data (e.g. a reward model's)."""
        if self.chosen_scores is None or self.rejected_scores is None:
            raise ValueError(f"loss {self.loss_name!r} needs chosen_scores and rejected_scores (B,) tensors")
        return self.chosen_scores.detach().float(), self.rejected_scores.detach().float()


@dataclass(frozen=True)
class UnpairedInputs:
    """(B,) tensors of unpaired completions with a desirable/undesirable label (KTO, BCO).

    ``kl_logps`` / ``ref_kl_logps`` are the policy's and reference's summed log-probs of mismatched
    (prompt, completion) pairs of the same batch (KTO's estimate of the KL term, ``needs`` ``kl_pairs``).
    """

    logps: Tensor
    labels: Tensor
    lengths: Tensor | None = None
    ref_logps: Tensor | None = None
    kl_logps: Tensor | None = None
    ref_kl_logps: Tensor | None = None
    loss_name: str = "loss"

    def desirable(self) -> Tensor:
        """(B,) bool: which completions are desirable."""
        if self.labels is None or self.labels.dim() != 1:
            raise ValueError(f"loss {self.loss_name!r} needs labels as a (B,) bool tensor")
        return self.labels.bool()

    def ratios(self) -> Tensor:
        """``S_θ(y) − S_ref(y)`` (B,), float32."""
        if self.ref_logps is None:
            raise ValueError(f"loss {self.loss_name!r} needs ref_logps (the reference's log-probs)")
        return _f32(self.logps, "logps", self.loss_name) - _f32(self.ref_logps, "ref_logps", self.loss_name)

    def kl_ratios(self) -> Tensor:
        """``S_θ − S_ref`` (B,) of the mismatched pairs, float32."""
        if self.kl_logps is None or self.ref_kl_logps is None:
            raise ValueError(f"loss {self.loss_name!r} needs kl_logps and ref_kl_logps (mismatched pairs)")
        return _f32(self.kl_logps, "kl_logps", self.loss_name) - _f32(
            self.ref_kl_logps, "ref_kl_logps", self.loss_name
        )


@dataclass(frozen=True)
class ListwiseInputs:
    """(B, n) tensors of n responses per prompt: policy summed log-probs, lengths, teacher scores."""

    logps: Tensor
    lengths: Tensor
    teacher_scores: Tensor
    loss_name: str = "loss"

    def checked(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(logps, lengths, teacher_scores)`` as float32 (B, n), shapes checked, teacher detached."""
        for name in ("logps", "lengths", "teacher_scores"):
            t = getattr(self, name)
            if t is None or t.dim() != 2:
                raise ValueError(f"loss {self.loss_name!r}: {name!r} must be a (B, n) tensor")
        if self.logps.shape != self.lengths.shape or self.logps.shape != self.teacher_scores.shape:
            raise ValueError(
                f"loss {self.loss_name!r}: logps {tuple(self.logps.shape)}, lengths "
                f"{tuple(self.lengths.shape)} and teacher_scores {tuple(self.teacher_scores.shape)} "
                "must have the same (B, n) shape"
            )
        return self.logps.float(), self.lengths.float().clamp_min(1.0), self.teacher_scores.detach().float()

    def averages(self) -> Tensor:
        """``A_θ = S_θ/|y|`` (B, n)."""
        logps, lengths, _ = self.checked()
        return logps / lengths


@dataclass(frozen=True)
class TokenInputs:
    """Per-position tensors of token-level distillation (teacher forcing on one response per row).

    ``student_logits[b, t]`` predicts ``labels[b, t]`` (the caller shifts); ``mask`` (B, T) bool marks
    the distilled (response) positions. The teacher comes as full ``teacher_logits`` (B, T, V) or as
    its top-k ``teacher_topk_logps`` / ``teacher_topk_ids`` (B, T, k). For on-policy samples,
    ``sample_logps`` (B, T) are the log-probs of the policy that sampled them and ``sample_mix`` the
    teacher weight α of the proposal they were drawn from (MiniLLM's teacher-mixed sampling), or an
    explicit ``proposal_logps`` (B, T).

    A teacher with another tokenizer (needs ``cross_tokenizer``, :mod:`prefdistill.data.alignment`)
    comes aligned to the student's positions: ``span_start`` (B, T) long is, at every student
    position, the position of the first student token of the aligned text span it belongs to (-1:
    no teacher counterpart); at those span heads ``teacher_topk_logps`` holds the teacher's top-k at
    its own span head, ``teacher_topk_student_ids`` (B, T, k) the student id of each of those tokens
    (same text; -1: none), ``teacher_span_logps`` (B, T) the teacher's log-prob of the span's later
    tokens and ``span_matched`` (B, T) bool whether the span is one token on both sides.
    ``teacher_label_logps`` (B, T) are the teacher's log-probs of ``labels``. A top-k teacher may come with
    ``teacher_tail_logps`` (B, T), the log of its mass outside the top-k (a tail bucket), or be a set of
    tokens drawn from the teacher with ``teacher_sample_weights`` (B, T, k) (Random-Sampling KD; weight 0:
    unused slot); :mod:`prefdistill.losses.sparse_teacher` says how the losses read them. The ``rejected_*``
    tensors are the same for a second response per row (losses that need ``rejected``, e.g.
    DistiLLM-2's student responses; :meth:`rejected_side`), and ``progress`` is the fraction of
    training done (schedules).
    """

    student_logits: Tensor
    mask: Tensor
    labels: Tensor | None = None
    teacher_logits: Tensor | None = None
    teacher_topk_logps: Tensor | None = None
    teacher_topk_ids: Tensor | None = None
    sample_logps: Tensor | None = None
    proposal_logps: Tensor | None = None
    sample_mix: float = 0.0
    teacher_label_logps: Tensor | None = None
    teacher_tail_logps: Tensor | None = None
    teacher_sample_weights: Tensor | None = None
    teacher_topk_student_ids: Tensor | None = None
    teacher_span_logps: Tensor | None = None
    span_start: Tensor | None = None
    span_matched: Tensor | None = None
    rejected_student_logits: Tensor | None = None
    rejected_mask: Tensor | None = None
    rejected_labels: Tensor | None = None
    rejected_teacher_logits: Tensor | None = None
    rejected_teacher_topk_logps: Tensor | None = None
    rejected_teacher_topk_ids: Tensor | None = None
    rejected_teacher_label_logps: Tensor | None = None
    progress: float | None = None
    loss_name: str = "loss"

    def rejected_side(self) -> TokenInputs:
        """The second response of each row (the ``rejected_*`` tensors) as inputs of their own."""
        if self.rejected_student_logits is None or self.rejected_mask is None:
            raise ValueError(
                f"loss {self.loss_name!r} needs a second response per row: rejected_student_logits and "
                "rejected_mask (pairs: chosen = teacher response, rejected = student response)"
            )
        names = ("student_logits", "mask", "labels", "teacher_logits", "teacher_topk_logps", "teacher_topk_ids",
                 "teacher_label_logps")  # fmt: skip
        return TokenInputs(**{n: getattr(self, f"rejected_{n}") for n in names}, loss_name=self.loss_name)


@dataclass(frozen=True)
class RewardInputs:
    """(B,) scalar rewards of a reward model on the chosen and rejected responses (reward-model training)."""

    chosen_rewards: Tensor
    rejected_rewards: Tensor
    margin: Tensor | None = None
    loss_name: str = "loss"

    def rewards(self) -> tuple[Tensor, Tensor]:
        return (
            _f32(self.chosen_rewards, "chosen_rewards", self.loss_name),
            _f32(self.rejected_rewards, "rejected_rewards", self.loss_name),
        )


INPUTS_BY_KIND: dict[str, type] = {
    "pairwise": PairwiseInputs,
    "unpaired": UnpairedInputs,
    "listwise": ListwiseInputs,
    "token": TokenInputs,
    "reward": RewardInputs,
}
