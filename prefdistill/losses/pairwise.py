"""Reference-based pairwise preference losses: DPO / cDPO, robust DPO, IPO, hinge, RPO.

Each takes :class:`~prefdistill.losses.inputs.PairwiseInputs` ((B,) **summed** response log-probs,
token counts, the reference's log-probs) and returns a (B,) per-example loss plus (B,) detached
metrics, in float32 whatever the input dtype. Notation (methods spec, section 0)::

    h = [S_θ(y_w) − S_ref(y_w)] − [S_θ(y_l) − S_ref(y_l)]        (log-ratio margin)

β is the KL coefficient of the RLHF objective the losses are derived from; it scales the implicit
reward ``r(y) = β (S_θ(y) − S_ref(y))`` (reported as ``reward/*``). Larger β makes departures from
π_ref more costly. Equation numbers refer to arXiv v1 of each paper; where we could not check the
number we name the objective instead.

DPO, robust, IPO and hinge also take TRL's family-wide options (``prefdistill.losses.log_ratio``):
``f_divergence_type`` / ``f_alpha_divergence_coef`` (f-DPO: the log-ratios enter through f'), ``ld_alpha``
(LD-DPO) and ``use_weighting`` (WPO). Their defaults leave the losses exactly as written below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.log_ratio import (
    F_KNOBS,
    LD_KNOB,
    WPO_KNOB,
    check_knobs,
    f_scores,
    knob_needs,
    length_desensitized,
    weighted,
)
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, check_range, reward_metrics, smoothed_sigmoid_loss

REFERENCE_PAIR = frozenset({"reference", "rejected"})
KNOBS = {**F_KNOBS, **LD_KNOB, **WPO_KNOB}  # TRL's family-wide options, with TRL's defaults


def reference_needs(hp: dict) -> set[str]:
    """A reference-ratio loss needs the reference and the rejected response, plus what its knobs need."""
    return set(REFERENCE_PAIR) | knob_needs(hp, reference=True)


def _dpo_needs(hp):
    if hp.get("reference_free"):
        return {"rejected"} | knob_needs(hp, reference=False)
    return reference_needs(hp)


def _check_knobs(name: str):
    def check(hp: dict) -> None:
        check_knobs(name, hp)

    return check


@register(
    "dpo", kind="pairwise", needs=_dpo_needs, aliases=("sigmoid",), validate=_check_knobs("dpo"),
    hparams={"beta": 0.1, "label_smoothing": 0.0, "reference_free": False, **KNOBS},
    source="Rafailov et al. 2023 (arXiv 2305.18290) Eq. 7; cDPO: eric-mitchell/direct-preference-optimization; "
    "TRL loss_type='sigmoid'",
)  # fmt: skip
def dpo(
    x: PairwiseInputs, *, beta: float, label_smoothing: float, reference_free: bool, f_divergence_type: str,
    f_alpha_divergence_coef: float, ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """DPO: ``−log σ(β h)``; cDPO with ``label_smoothing`` ε: ``−(1−ε) log σ(βh) − ε log σ(−βh)``.

    cDPO follows eric-mitchell/direct-preference-optimization ``trainers.py::preference_loss``
    (``loss.label_smoothing``; TRL ≤ 0.2x ``sigmoid`` + ``label_smoothing`` — TRL 1.x dropped it).
    ``reference_free=True`` sets ``S_ref ≡ 0`` (eric-mitchell ``loss.reference_free``) and then needs no
    reference. β (TRL default 0.1; the paper used 0.1 on HH and 0.5 on TL;DR) is the KL-penalty
    coefficient: the implicit reward is ``β (S_θ − S_ref)``, which is what ``reward/*`` reports.
    TRL's name for this loss is ``sigmoid``. With ``f_divergence_type`` ≠ ``reverse_kl``, h is formed from
    the f-DPO scores f'(e^u) of the log-ratios u (``reward/*`` stays ``β u``); ``ld_alpha`` and
    ``use_weighting`` as in ``prefdistill.losses.log_ratio``.
    """
    x = length_desensitized(x, ld_alpha, reference=not reference_free)
    cr, rr = x.ratios(reference_free)
    cs, rs = f_scores(cr, rr, f_divergence_type, f_alpha_divergence_coef)
    loss = smoothed_sigmoid_loss(beta * (cs - rs), label_smoothing)  # (B,)
    return LossOutput(*weighted(loss, reward_metrics(beta * cr, beta * rr), x, use_weighting))


def _check_robust(hp):
    check_range("robust", "label_smoothing (ε)", hp["label_smoothing"], 0.0, 0.5, high_open=True)
    check_knobs("robust", hp)


@register(
    "robust", kind="pairwise", needs=reference_needs, validate=_check_robust,
    hparams={"beta": 0.1, "label_smoothing": 0.1, **KNOBS},
    source="Chowdhury et al. 2024 (arXiv 2403.00409), rDPO; TRL loss_type='robust'",
)  # fmt: skip
def robust(
    x: PairwiseInputs, *, beta: float, label_smoothing: float, f_divergence_type: str, f_alpha_divergence_coef: float,
    ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """Robust DPO: ``[−(1−ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)``.

    An unbiased estimate of the clean-label DPO loss when labels flip with probability ε
    (``label_smoothing``, must be in [0, 0.5); ε = 0 is DPO). Note the ``+ε`` sign: unlike cDPO
    this is *not* a convex combination. β and ``reward/*`` as in DPO; the TRL options as in DPO.
    """
    _check_robust({"label_smoothing": label_smoothing})
    x = length_desensitized(x, ld_alpha, reference=True)
    cr, rr = x.ratios()
    cs, rs = f_scores(cr, rr, f_divergence_type, f_alpha_divergence_coef)
    z, eps = beta * (cs - rs), label_smoothing
    loss = (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return LossOutput(*weighted(loss, reward_metrics(beta * cr, beta * rr), x, use_weighting))


def _check_ipo(hp):
    check_choice("ipo", "length_norm", hp["length_norm"], ("mean", "sum"))
    check_knobs("ipo", hp)


@register(
    "ipo", kind="pairwise", needs=reference_needs, validate=_check_ipo,
    hparams={"beta": 0.1, "length_norm": "mean", **KNOBS},
    source="Azar et al. 2023 (arXiv 2310.12036), sampled IPO loss; TRL loss_type='ipo'",
)  # fmt: skip
def ipo(
    x: PairwiseInputs, *, beta: float, length_norm: str, f_divergence_type: str, f_alpha_divergence_coef: float,
    ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """IPO: ``(h̄ − 1/(2β))²`` (β plays τ).

    ``length_norm`` picks how h̄ is formed:

    * ``"mean"`` (default, **TRL convention**, ``loss_type="ipo"``; "confirmed with IPO authors"):
      every log-prob — policy *and* reference — is divided by its response length first,
      ``h̄ = (S_θ(y_w) − S_ref(y_w))/|y_w| − (S_θ(y_l) − S_ref(y_l))/|y_l|``. Needs the lengths.
    * ``"sum"`` (**eric-mitchell/direct-preference-optimization** ``preference_loss(ipo=True)``):
      h̄ = h on summed log-probs.

    Small β pushes the target margin 1/(2β) far out (weaker regularisation to π_ref).
    ``reward/*`` is ``β (S_θ − S_ref)`` on summed log-probs under both conventions. The TRL options as in
    DPO (with an f-divergence, the f-scores are what is divided by the lengths, as TRL does).
    """
    _check_ipo({"length_norm": length_norm})
    x = length_desensitized(x, ld_alpha, reference=True)
    cr, rr = x.ratios()
    cs, rs = f_scores(cr, rr, f_divergence_type, f_alpha_divergence_coef)
    if length_norm == "mean":
        lc, lr = x.lengths()
        h = cs / lc - rs / lr
    else:
        h = cs - rs
    loss = (h - 1.0 / (2.0 * beta)) ** 2  # (B,)
    return LossOutput(*weighted(loss, reward_metrics(beta * cr, beta * rr), x, use_weighting))


@register(
    "hinge", kind="pairwise", needs=reference_needs, hparams={"beta": 0.1, **KNOBS}, validate=_check_knobs("hinge"),
    source="SLiC-HF (Zhao et al. 2023, arXiv 2305.10425) in the reference-ratio form of RSO "
    "(arXiv 2309.06657); TRL loss_type='hinge'",
)  # fmt: skip
def hinge(
    x: PairwiseInputs, *, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float,
    ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """Hinge on the DPO log-ratio margin: ``max(0, 1 − β h)``.

    β = 1/margin: the loss (and its gradient) is exactly zero once h ≥ 1/β. The original SLiC-HF is
    reference-free with an extra NLL regulariser; this is the TRL/RSO variant. ``reward/*`` and the TRL
    options as in DPO.
    """
    x = length_desensitized(x, ld_alpha, reference=True)
    cr, rr = x.ratios()
    cs, rs = f_scores(cr, rr, f_divergence_type, f_alpha_divergence_coef)
    loss = torch.relu(1.0 - beta * (cs - rs))  # (B,)
    return LossOutput(*weighted(loss, reward_metrics(beta * cr, beta * rr), x, use_weighting))


@register(
    "rpo", kind="pairwise", needs=REFERENCE_PAIR, hparams={"beta": 0.1, "nll_weight": 1.0},
    renamed={"alpha": "nll_weight"},
    source="Pang et al. 2024 (arXiv 2404.19733), L_DPO+NLL; TRL loss_type=['sigmoid','sft']",
)  # fmt: skip
def rpo(x: PairwiseInputs, *, beta: float, nll_weight: float) -> LossOutput:
    """RPO: ``L_DPO + nll_weight · NLL(y_w)``, ``NLL(y_w) = −S_θ(y_w)/|y_w|`` per example.

    ``nll_weight`` is the paper's α (1.0 recommended; the old hyper-parameter name ``alpha`` is still
    accepted). TRL ≤ 0.2x (``rpo_alpha``) used one *batch-level* token mean over all chosen tokens,
    added to every pair; we keep it per example so the loss stays separable and gradient
    accumulation is exact. TRL 1.x expresses RPO as a mixture, ``loss_type=["sigmoid","sft"]``,
    ``loss_weights=[1, α]``; here that is ``method=mixture method.losses=[dpo,sft] method.weights=[1,α]``,
    which gives exactly this loss (the mixture also takes the TRL options). Logs ``nll/chosen`` besides
    ``reward/*``.
    """
    cr, rr = x.ratios()
    nll = -x.chosen_average()
    loss = -F.logsigmoid(beta * (cr - rr)) + nll_weight * nll  # (B,)
    metrics = reward_metrics(beta * cr, beta * rr)
    metrics["nll/chosen"] = nll.detach()
    return LossOutput(loss, metrics)
