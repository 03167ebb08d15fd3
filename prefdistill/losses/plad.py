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
default. PLaD uses no reference model. The reward reported in ``reward/*`` metrics is L itself.

The paper's equations 3-5 could not be checked against its text; the forms here follow its
secondary descriptions and SLiC-HF, and every unverified choice is a hyper-parameter.
"""

from __future__ import annotations

import torch

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, reward_metrics

_LENGTH_NORMS = ("sum", "mean")
# The default margin 1.0 follows SLiC-HF's calibration margin δ = 1 (PLaD's Eq. 3-4 are the
# SLiC calibration losses; the paper's chosen value was not retrievable). With
# length_norm="mean" it asks for a 1-nat per-token log-prob gap between teacher and student
# outputs - of the order of SimPO's per-token target margin γ/β ≈ 0.3-0.55 but larger, so the
# hinge stays active on most pairs. With length_norm="sum", 1.0 is small relative to
# sequence log-probs (tens of nats). Sweep it; the paper says the margin matters slightly.
_HPARAMS = {"margin": 1.0, "length_norm": "mean", "nll_weight": 0.0}
_SOURCE = "Zhang et al., ACL Findings 2024 (arXiv 2406.02886), Eq. {}; SLiC-HF calibration loss"


def _check(hp):
    check_choice("plad", "length_norm", hp["length_norm"], _LENGTH_NORMS)


def _hinge(x: PairwiseInputs, target_margin, length_norm: str, nll_weight: float) -> LossOutput:
    """``max(0, target_margin − L⁺ + L⁻) + nll_weight·(−L⁺)`` and the reward metrics (L = the reward)."""
    _check({"length_norm": length_norm})
    chosen, rejected = x.averages() if length_norm == "mean" else x.logps()
    loss = torch.relu(target_margin - (chosen - rejected))  # difference first: no cancellation at -1e4
    nll = -chosen
    if nll_weight:
        loss = loss + nll_weight * nll
    return LossOutput(loss, {**reward_metrics(chosen, rejected), "plad/nll": nll.detach()})


@register(
    "plad_rank", kind="pairwise", needs={"rejected"}, hparams=_HPARAMS, validate=_check,
    source=_SOURCE.format(3),
)  # fmt: skip
def plad_rank(x: PairwiseInputs, *, margin: float, length_norm: str, nll_weight: float) -> LossOutput:
    """PLaD ranking calibration ``max(0, margin − L⁺ + L⁻)`` (+ optional NLL), (B,).

    ``chosen_*`` is the teacher output y⁺, ``rejected_*`` the student output y⁻; all log-probs are
    the *student's*. Beyond the margin the loss and its gradient are exactly zero.
    """
    return _hinge(x, margin, length_norm, nll_weight)


@register(
    "plad_margin", kind="pairwise", needs={"rejected", "scores"}, hparams=_HPARAMS, validate=_check,
    source=_SOURCE.format(4),
)  # fmt: skip
def plad_margin(x: PairwiseInputs, *, margin: float, length_norm: str, nll_weight: float) -> LossOutput:
    """PLaD margin calibration ``max(0, margin·(s⁺ − s⁻) − L⁺ + L⁻)`` (+ optional NLL), (B,).

    ``chosen_scores`` / ``rejected_scores`` (B,) are s(y⁺), s(y⁻) from the upstream score function;
    they are detached (no gradient reaches the scorer). With s⁺ − s⁻ = 1 this is exactly
    :func:`plad_rank`. A negative score gap makes the target margin negative, i.e. the loss then
    tolerates L⁺ < L⁻ by that much.
    """
    s_plus, s_minus = x.scores()
    return _hinge(x, margin * (s_plus - s_minus), length_norm, nll_weight)
