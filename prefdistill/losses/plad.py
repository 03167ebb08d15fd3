"""PLaD calibration losses (Zhang et al., ACL Findings 2024, arXiv 2406.02886).

PLaD distils a teacher into a student with *pseudo-preference pairs*: the teacher's output
``y⁺`` is assumed better than the (initial) student's output ``y⁻`` for the same prompt. The
student is then calibrated so that its sequence likelihood ranks ``y⁺`` above ``y⁻``. Both
losses are hinge losses on the student's (length-normalised) log-likelihood::

    L(y)    = S_θ(y|x)            (length_norm="sum",  summed response log-prob)
            = S_θ(y|x) / |y|      (length_norm="mean", length-averaged; the default)
    rank:     max(0, β − L(y⁺) + L(y⁻))                           (paper Eq. 3, "ranking calibration")
    margin:   max(0, β·(s(y⁺) − s(y⁻)) − L(y⁺) + L(y⁻))           (Eq. 4, SLiC-style "margin calibration")

β is the paper's margin, called ``margin`` here so it is not confused with DPO's β. The score
function ``s`` of the margin loss (ROUGE-L vs. the reference, a reward model, the teacher's
likelihood, ...) is computed upstream; this module only receives the (B,) score tensors.
An optional NLL regulariser ``−nll_weight · L(y⁺)`` (SLiC-HF's ``−λ log P(y_ref|x)``, on the
teacher output, same normalisation as L) can be added; the paper is silent, so it is off by
default. PLaD uses no reference model: ``ref_*`` inputs are accepted (the pairwise signature
is shared) and ignored. The reward reported in ``reward/*`` metrics is L itself.

The paper's equations 3-5 could not be checked against its text; the forms here follow its
secondary descriptions and SLiC-HF, and every unverified choice is a hyper-parameter.
"""

from __future__ import annotations

import torch

from prefdistill.losses.registry import LossOutput, register

_LENGTH_NORMS = ("sum", "mean")


def _seq_logp(logps: torch.Tensor, lengths: torch.Tensor, length_norm: str) -> torch.Tensor:
    """L(y): summed (``sum``) or length-averaged (``mean``) log-prob, float32, (B,)."""
    if length_norm not in _LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {_LENGTH_NORMS}, got {length_norm!r}")
    logps = logps.float()
    if length_norm == "mean":
        logps = logps / lengths.float().clamp_min(1.0)
    return logps


def _hinge(
    target_margin, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, length_norm, nll_weight
):
    """``max(0, target_margin − L⁺ + L⁻) + nll_weight·(−L⁺)`` and the reward metrics."""
    chosen = _seq_logp(chosen_logps, chosen_lengths, length_norm)
    rejected = _seq_logp(rejected_logps, rejected_lengths, length_norm)
    loss = torch.relu(target_margin - chosen + rejected)
    nll = -chosen
    if nll_weight:
        loss = loss + nll_weight * nll
    c, r = chosen.detach(), rejected.detach()
    metrics = {
        "reward/chosen": c,
        "reward/rejected": r,
        "reward/margin": c - r,
        "reward/accuracy": (c > r).float(),
        "plad/nll": nll.detach(),
    }
    return LossOutput(loss, metrics)


# The default margin 1.0 follows SLiC-HF's calibration margin δ = 1 (PLaD's Eq. 3-4 are the
# SLiC calibration losses; the paper's chosen value was not retrievable). With
# length_norm="mean" it asks for a 1-nat per-token log-prob gap between teacher and student
# outputs - of the order of SimPO's per-token target margin γ/β ≈ 0.3-0.55 but larger, so the
# hinge stays active on most pairs. With length_norm="sum", 1.0 is small relative to
# sequence log-probs (tens of nats). Sweep it; the paper says the margin matters slightly.
@register("plad_rank", needs={"rejected"}, kind="pairwise")
def plad_rank(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    margin: float = 1.0,
    length_norm: str = "mean",
    nll_weight: float = 0.0,
) -> LossOutput:
    """PLaD ranking calibration loss ``max(0, margin − L⁺ + L⁻)`` (+ optional NLL), (B,).

    ``chosen_*`` is the teacher output y⁺, ``rejected_*`` the student output y⁻; all log-probs
    are the *student's* summed response log-probs (B,), lengths are response token counts.
    Beyond the margin the loss and its gradient are exactly zero.
    """
    return _hinge(
        margin, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, length_norm, nll_weight
    )


@register("plad_margin", needs={"rejected", "scores"}, kind="pairwise")
def plad_margin(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    chosen_scores: torch.Tensor | None = None,
    rejected_scores: torch.Tensor | None = None,
    *,
    margin: float = 1.0,
    length_norm: str = "mean",
    nll_weight: float = 0.0,
) -> LossOutput:
    """PLaD margin calibration loss ``max(0, margin·(s⁺ − s⁻) − L⁺ + L⁻)`` (+ optional NLL), (B,).

    ``chosen_scores`` / ``rejected_scores`` (B,) are s(y⁺), s(y⁻) from the upstream score
    function; they are detached (no gradient reaches the scorer). With s⁺ − s⁻ = 1 this is
    exactly :func:`plad_rank`. A negative score gap makes the target margin negative, i.e.
    the loss then tolerates L⁺ < L⁻ by that much.
    """
    if chosen_scores is None or rejected_scores is None:
        raise ValueError("loss 'plad_margin' needs chosen_scores and rejected_scores (B,) tensors")
    gap = chosen_scores.detach().float() - rejected_scores.detach().float()
    return _hinge(
        margin * gap, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, length_norm, nll_weight
    )
