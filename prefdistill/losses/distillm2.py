"""DistiLLM-2: contrastive distillation on teacher and student responses (same vocabulary).

Ko et al., "DistiLLM-2: A Contrastive Approach Boosts the Distillation of LLMs", ICML 2025 (arXiv
2503.07067); formulas from the released code, ``jongwooko/distillm-2`` ``src/distillm_trainer.py``
(``get_batch_logps``, ``kd_loss``, loss_type ``distillm_v2``). Each row holds a teacher response
``y_t`` (the pair's ``chosen``) and a student response ``y_s`` (``rejected``: the ``rejected_*``
tensors) to one prompt; per response, a token mean::

    loss_b = (2 − β)·SKL_b + β·SRKL_b
    SKL_b  = mean_{t ∈ y_t} KL(p ‖ α₁·p + (1 − α₁)·q_θ)          (skew KL: raises q_θ on y_t)
    SRKL_b = mean_{t ∈ y_s} KL(q_θ ‖ (1 − α₂)·p + α₂·sg(q_θ))     (skew reverse KL: lowers q_θ on y_s)

``sg`` = stop-gradient: the repository detaches the student inside the reverse mixture. α₁ = α₂ =
``alpha`` (0.1) unless ``adaptive_alpha``; β = ``beta_start`` unless ``beta_end`` differs.

* **Curriculum α** (``adaptive_alpha``, the repository's ``update_alpha`` path): per example,
  ``α₁ = clip(1 − (1 − α)·m₁ / (p̄ − q̄ + 1e-5), 0.01, α)`` with ``p̄ = exp(mean_t log p(y_t))``,
  ``q̄`` the student's, and ``m₁`` an anchor of the gap ``p̄ − q̄``; ``α₂`` likewise on ``y_s`` with the
  gap ``q̄ − p̄``. Examples whose gap is small next to the anchor get a small α (closer to plain
  KL), large gaps the full α. Where we chose: the repository stores as anchor its first logged
  average (100 steps); ours is the running mean over the first ``anchor_steps`` training batches,
  kept as the loss's state (checkpointed), the batch's own mean before any training; α is
  detached (the repository lets gradients flow through it, we read that as unintended).
* **Rebalancing β** (the repository's ``gradual_beta``): β rises linearly from ``beta_start`` to
  ``beta_end`` over the first ``beta_ramp`` of training (1 -> 1.5 over the first half), weighting the
  student-response term up as training goes; the module passes ``progress``.

The released training configs hard-code both schedules off (α = 0.1, β = 1):
``adaptive_alpha=false beta_end=1.0`` reproduces them; the defaults here are the schedules the
paper's method describes. A top-k teacher (cache) restricts both divergences to the teacher's top-k
support, renormalised (``divergence.py``); the curriculum then needs ``teacher_label_logps``.
DistiLLM-2 mixes the two distributions token by token, so it needs one vocabulary (a padded one is
fine: the module uses the shared ids); for teachers with another tokenizer use ``uld`` / ``gold``.
"""

from __future__ import annotations

import torch

from prefdistill.losses.divergence import _LOG_FLOOR, _selected_logprobs
from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_range

_ALPHA_FLOOR = 0.01  # the repository's clip minimum


def _per_example(tok: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token values at the masked positions (N,) -> token mean per example (B,), 0 without tokens."""
    rows = mask.nonzero(as_tuple=True)[0]
    return tok.new_zeros(mask.shape[0]).index_add(0, rows, tok) / mask.sum(-1).clamp_min(1)


def _side(x: TokenInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher and student log-probs (N, V or k) at the response positions, and the mask."""
    mask = x.mask.bool()
    lp, lq = _selected_logprobs(
        x.student_logits[mask].float(), mask, x.teacher_logits, x.teacher_topk_logps, x.teacher_topk_ids, 1.0
    )
    return lp, lq, mask


def _mean_probs(x: TokenInputs, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p̄, q̄) (B,): geometric-mean token probabilities of the response under teacher and student (detached)."""
    if x.labels is None:
        raise ValueError(f"loss {x.loss_name!r}: adaptive_alpha needs the response labels")
    labels = x.labels[mask].long()
    if x.teacher_logits is not None:
        teacher = torch.log_softmax(x.teacher_logits[mask].float(), -1).gather(-1, labels[:, None])[:, 0]
    elif x.teacher_label_logps is not None:
        teacher = x.teacher_label_logps[mask].float()
    else:
        raise ValueError(
            f"loss {x.loss_name!r}: adaptive_alpha with a top-k teacher needs teacher_label_logps"
        )
    student = torch.log_softmax(x.student_logits[mask].float(), -1).gather(-1, labels[:, None])[:, 0]
    return _per_example(teacher, mask).exp().detach(), _per_example(student, mask).exp().detach()


def curriculum_alpha(gap: torch.Tensor, anchor: torch.Tensor, alpha: float) -> torch.Tensor:
    """α per example (B,): ``clip(1 − (1 − α)·anchor / (gap + 1e-5), 0.01, α)`` (repository formula)."""
    return (1.0 - (1.0 - alpha) * anchor / (gap + 1e-5)).clamp(_ALPHA_FLOOR, alpha)


def _anchor(state: dict, key: str, gap: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor used now, updated running mean): the stored mean once a batch was seen, else this batch's."""
    count, mean = state["anchor_batches"], state[key].to(gap.device)
    anchor = torch.where(count > 0, mean, gap.mean())
    updated = torch.where(count < steps, (mean * count + gap.mean()) / (count + 1), mean)
    return anchor, updated


def skew_kl(lp: torch.Tensor, lq: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ α·p + (1 − α)·q) per row; ``alpha`` (N, 1)."""
    mix = torch.logaddexp(lp + alpha.log(), lq + torch.log1p(-alpha)).clamp_min(_LOG_FLOOR)
    return (lp.exp() * (lp - mix)).sum(-1)


def skew_reverse_kl(lp: torch.Tensor, lq: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ (1 − α)·p + α·sg(q)) per row; ``alpha`` (N, 1)."""
    mix = torch.logaddexp(lp + torch.log1p(-alpha), lq.detach() + alpha.log()).clamp_min(_LOG_FLOOR)
    return (lq.exp() * (lq - mix)).sum(-1)


def beta_at(progress: float | None, beta_start: float, beta_end: float, beta_ramp: float, name: str) -> float:
    """β after ``progress`` of training: linear from ``beta_start`` to ``beta_end`` over ``beta_ramp``."""
    if beta_end == beta_start:
        return beta_start
    if progress is None:
        raise ValueError(f"loss {name!r}: a β schedule (beta_end != beta_start) needs the training progress")
    return beta_start + (beta_end - beta_start) * min(1.0, progress / beta_ramp)


def _check(hp: dict) -> None:
    check_range("distillm2", "alpha", hp["alpha"], _ALPHA_FLOOR, 1.0 - 1e-6)
    for key in ("beta_start", "beta_end"):
        check_range("distillm2", key, hp[key], 0.0, 2.0)
    check_range("distillm2", "beta_ramp", hp["beta_ramp"], 1e-6, 1.0)
    if hp["anchor_steps"] < 1:
        raise ValueError(f"distillm2: anchor_steps must be >= 1, got {hp['anchor_steps']}")


@register(
    "distillm2", kind="token", needs=("teacher", "token_logps", "rejected"), validate=_check,
    hparams={"alpha": 0.1, "adaptive_alpha": True, "anchor_steps": 100, "beta_start": 1.0, "beta_end": 1.5,
             "beta_ramp": 0.5},
    state={"gap_teacher": 0.0, "gap_student": 0.0, "anchor_batches": 0.0},
    source="Ko et al. 2025 (arXiv 2503.07067) Sec. 3; jongwooko/distillm-2 src/distillm_trainer.py (distillm_v2)",
)  # fmt: skip
def distillm2(
    x: TokenInputs, *, alpha: float, adaptive_alpha: bool, anchor_steps: int, beta_start: float, beta_end: float,
    beta_ramp: float, state: dict,
) -> LossOutput:  # fmt: skip
    """(2 − β)·skew KL on teacher responses + β·skew reverse KL on student responses (token means)."""
    y = x.rejected_side()
    lp_t, lq_t, mask_t = _side(x)
    lp_s, lq_s, mask_s = _side(y)
    b = mask_t.shape[0]
    a_t = a_s = torch.full((b,), float(alpha), device=lp_t.device)
    new_state = dict(state)
    if adaptive_alpha:
        p_t, q_t = _mean_probs(x, mask_t)
        p_s, q_s = _mean_probs(y, mask_s)
        anchor_t, new_state["gap_teacher"] = _anchor(state, "gap_teacher", p_t - q_t, anchor_steps)
        anchor_s, new_state["gap_student"] = _anchor(state, "gap_student", q_s - p_s, anchor_steps)
        new_state["anchor_batches"] = (state["anchor_batches"] + 1).clamp_max(anchor_steps)
        a_t, a_s = curriculum_alpha(p_t - q_t, anchor_t, alpha), curriculum_alpha(q_s - p_s, anchor_s, alpha)
    rows_t, rows_s = mask_t.nonzero(as_tuple=True)[0], mask_s.nonzero(as_tuple=True)[0]
    skl = _per_example(skew_kl(lp_t, lq_t, a_t[rows_t, None]), mask_t)
    srkl = _per_example(skew_reverse_kl(lp_s, lq_s, a_s[rows_s, None]), mask_s)
    beta = beta_at(x.progress, beta_start, beta_end, beta_ramp, x.loss_name)
    loss = (2.0 - beta) * skl + beta * srkl
    metrics = {
        "distillm2/skl": skl.detach(), "distillm2/srkl": srkl.detach(), "distillm2/alpha_teacher": a_t.detach(),
        "distillm2/alpha_student": a_s.detach(), "distillm2/beta": torch.full_like(skl, beta).detach(),
    }  # fmt: skip
    return LossOutput(loss, metrics, new_state)
