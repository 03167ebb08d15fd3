"""Reference-free paired losses with an NLL term built in: ORPO and CPO (with its SimPO and AlphaPO forms).

Both read :class:`~prefdistill.losses.inputs.PairwiseInputs` and never the reference. Their NLL term on
the chosen response is ``nll_weight · (−A_θ(y_w))`` *per example* (``A = S/|y|``), so the batch mean is
separable and gradient accumulation exact. TRL's trainers (``trl/experimental/orpo/orpo_trainer.py``,
``trl/experimental/cpo/cpo_trainer.py``) use one cross-entropy token mean over the batch instead, and
ORPO's there also covers the *prompt* tokens; with equal-length responses (CPO) the numbers agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, reward_metrics, smoothed_sigmoid_loss

_LOG_P_MAX = -1e-6  # log P(y) is clamped here so log(1 − P) stays finite (P → 1 makes the odds infinite)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − e^x)`` for x < 0, accurate on both sides of −log 2 (Mächler 2012, "Accurately computing
    log(1 − exp(−|a|))")."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def log_odds(average_logp: torch.Tensor) -> torch.Tensor:
    """``log odds(y) = log P − log(1 − P)`` of the length-averaged probability ``P = exp(A)`` (ORPO Eq. 4)."""
    a = average_logp.clamp_max(_LOG_P_MAX)
    return a - log1mexp(a)


@register(
    "orpo", kind="pairwise", needs={"rejected"}, hparams={"beta": 0.1},
    source="Hong et al. 2024 (arXiv 2403.07691) Eq. 6-7; TRL trl/experimental/orpo/orpo_trainer.py",
)  # fmt: skip
def orpo(x: PairwiseInputs, *, beta: float) -> LossOutput:
    """ORPO: ``−A_θ(y_w) − β · log σ(log odds(y_w) − log odds(y_l))``, reference-free.

    The odds use the length-averaged probability ``P = exp(A_θ)`` (the paper's Eq. 4 and TRL's
    ``average_log_prob=True``); β is the paper's λ (TRL default 0.1). ``A`` is clamped at −1e-6 before
    ``log(1 − P)`` so a response the policy already assigns probability ~1 gives finite values and
    gradients (TRL's numbers are the same below that). The NLL is the chosen response's token mean per
    example (the paper's L_SFT; see the module docstring for TRL's batch-level, prompt-including form).
    Metrics: ``reward/*`` = ``β·A`` (as TRL), ``orpo/log_odds_ratio`` = ``log σ(·)``,
    ``orpo/log_odds_chosen`` = the log-odds difference, ``nll/chosen``.
    """
    a_w, a_l = x.averages()
    odds = log_odds(a_w) - log_odds(a_l)
    ratio = F.logsigmoid(odds)
    nll = -a_w
    metrics = reward_metrics(beta * a_w, beta * a_l) | {
        "orpo/log_odds_ratio": ratio.detach(),
        "orpo/log_odds_chosen": odds.detach(),
        "nll/chosen": nll.detach(),
    }
    return LossOutput(nll - beta * ratio, metrics)


_CPO_TYPES = ("sigmoid", "hinge", "ipo", "simpo")


def _check_cpo(hp):
    check_choice("cpo", "loss_type", hp["loss_type"], _CPO_TYPES)
    if hp["label_smoothing"] and hp["loss_type"] in ("hinge", "ipo"):
        raise ValueError(f"loss 'cpo': label_smoothing has no effect with loss_type={hp['loss_type']!r}; set it to 0")


def alphapo_reward(logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO's reward ``(1 − P^{−α})/α`` of ``P = exp(logps)`` (α = 0: ``log P``), ``−expm1(−α·logps)/α``."""
    if alpha == 0.0:
        return logps
    return -torch.expm1(-alpha * logps) / alpha


@register(
    "cpo", kind="pairwise", needs={"rejected"}, validate=_check_cpo, renamed={"cpo_alpha": "nll_weight"},
    hparams={"beta": 0.1, "label_smoothing": 0.0, "loss_type": "sigmoid", "nll_weight": 1.0, "simpo_gamma": 0.5,
             "alpha": 0.0},
    source="Xu et al. 2024 (arXiv 2401.08417) Eq. 3; AlphaPO: Gupta et al. 2025 (arXiv 2501.03884); "
    "TRL trl/experimental/cpo/cpo_trainer.py",
)  # fmt: skip
def cpo(
    x: PairwiseInputs, *, beta: float, label_smoothing: float, loss_type: str, nll_weight: float,
    simpo_gamma: float, alpha: float,
) -> LossOutput:  # fmt: skip
    """CPO: a reference-free preference term on rewards ``r`` plus ``nll_weight · (−A_θ(y_w))``.

    ``r(y) = S_θ(y)`` (summed) for ``sigmoid``/``hinge``, ``A_θ(y)`` (length-averaged) for ``ipo``/``simpo``
    (TRL's ``average_log_prob``); with ``alpha`` ≠ 0 (AlphaPO) ``r = (1 − e^{−α·logp})/α`` of those.
    With ``d = r_w − r_l``:

    * ``sigmoid`` (CPO, Eq. 3): ``−log σ(βd)``, cDPO-smoothed by ``label_smoothing``;
    * ``hinge``: ``max(0, 1 − βd)``;  ``ipo``: ``(d − 1/(2β))²``;
    * ``simpo`` (CPO-SimPO): ``−log σ(β(d − γ/β))`` with γ = ``simpo_gamma``, smoothed like ``sigmoid``.

    ``nll_weight`` is TRL's ``cpo_alpha`` (the old name is accepted); SimPO proper is ``loss_type=simpo
    nll_weight=0``, and **AlphaPO** (TRL's ``loss_type="alphapo"``) is ``loss_type=simpo nll_weight=0
    alpha=<α>`` (the paper tunes α per model; a positive α tempers likelihood displacement).
    ``label_smoothing`` with ``hinge``/``ipo`` is an error (it would do nothing). ``reward/*`` = ``β·r``.
    """
    _check_cpo({"loss_type": loss_type, "label_smoothing": label_smoothing})
    averaged = loss_type in ("ipo", "simpo")
    p_w, p_l = x.averages() if averaged else x.logps()
    r_w, r_l = alphapo_reward(p_w, alpha), alphapo_reward(p_l, alpha)
    d = r_w - r_l
    if loss_type == "simpo":
        loss = smoothed_sigmoid_loss(beta * (d - simpo_gamma / beta), label_smoothing)
    elif loss_type == "sigmoid":
        loss = smoothed_sigmoid_loss(beta * d, label_smoothing)
    elif loss_type == "hinge":
        loss = torch.relu(1.0 - beta * d)
    else:
        loss = (d - 1.0 / (2.0 * beta)) ** 2
    nll = -x.chosen_average()
    metrics = reward_metrics(beta * r_w, beta * r_l) | {"nll/chosen": nll.detach()}
    return LossOutput(loss + nll_weight * nll, metrics)
