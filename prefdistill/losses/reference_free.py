"""Reference-free, length-normalised preference losses: SimPO, SimPER, and plain SFT.

They read :class:`~prefdistill.losses.inputs.PairwiseInputs` but never the reference: they work on
the length-averaged log-likelihood ``A_θ(y|x) = S_θ(y|x) / |y|`` (B,). All arithmetic is float32.
The optional NLL term on the chosen response is called ``nll_weight`` everywhere (SimPO's and
SimPER's repositories call it ``sft_weight``; that name is still accepted).
"""

from __future__ import annotations

import torch

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.log_ratio import WPO_KNOB, knob_needs, weighted
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, reward_metrics, smoothed_sigmoid_loss


def _check_simpo(hp):
    check_choice("simpo", "loss_type", hp["loss_type"], ("sigmoid", "hinge"))


@register(
    "simpo", kind="pairwise", needs={"rejected"}, validate=_check_simpo, renamed={"sft_weight": "nll_weight"},
    hparams={"beta": 2.0, "gamma_beta_ratio": 0.25, "label_smoothing": 0.0, "loss_type": "sigmoid",
             "nll_weight": 0.0},
    source="Meng et al. 2024 (arXiv 2405.14734) Eq. 6; princeton-nlp/SimPO scripts/simpo_trainer.py",
)  # fmt: skip
def simpo(
    x: PairwiseInputs, *, beta: float, gamma_beta_ratio: float, label_smoothing: float, loss_type: str,
    nll_weight: float,
) -> LossOutput:  # fmt: skip
    """SimPO: ``−log σ(β (A_w − A_l − γ/β))``, reference-free and length-normalised.

    Follows princeton-nlp/SimPO ``scripts/simpo_trainer.py::simpo_loss`` (``gamma_beta_ratio`` = γ/β;
    defaults from ``scripts/simpo_config.py``: β = 2.0, γ/β = 0.25, ``sigmoid``).

    * ``label_smoothing`` ε: cDPO form ``−(1−ε) log σ(z) − ε log σ(−z)``.
    * ``loss_type="hinge"``: ``max(0, 1 − β (A_w − A_l − γ/β))``.
    * ``nll_weight`` λ (the repo's ``sft_weight``): adds ``λ · (−A_w)`` per example (README: helps
      GSM8K, hurts chat). Default 0.

    β scales the length-normalised reward ``β A_θ(y)`` (reported as ``reward/*``); with no reference
    there is no KL anchor, so β only sets the sharpness of the sigmoid and γ the target margin.
    """
    _check_simpo({"loss_type": loss_type})
    a_w, a_l = x.averages()
    z = beta * (a_w - a_l - gamma_beta_ratio)  # (B,)
    loss = smoothed_sigmoid_loss(z, label_smoothing) if loss_type == "sigmoid" else torch.relu(1.0 - z)
    if nll_weight:
        loss = loss + nll_weight * (-a_w)
    return LossOutput(loss, reward_metrics(beta * a_w, beta * a_l))


@register(
    "simper", kind="pairwise", needs={"rejected"}, hparams={"nll_weight": 0.0},
    renamed={"sft_weight": "nll_weight"},
    source="Xiao et al., ICLR 2025 (arXiv 2502.00883); tengxiao1/SimPER scripts/simper_trainer.py",
)  # fmt: skip
def simper(x: PairwiseInputs, *, nll_weight: float) -> LossOutput:
    """SimPER: ``−exp(A_θ(y_w)) + exp(A_θ(y_l))`` (inverse perplexities), no β, γ, reference or sigmoid.

    Follows tengxiao1/SimPER ``scripts/simper_trainer.py::simpo_loss``, branch ``loss_type ==
    "SimPER"`` (the repo's YAMLs carry SimPO's β/γ, unused there). The per-example loss lies in
    (−1, 1). ``nll_weight`` λ adds ``λ · (−A_w)`` (default 0). ``reward/*`` are the raw A_θ values, as
    the repo logs them.
    """
    a_w, a_l = x.averages()
    loss = -torch.exp(a_w) + torch.exp(a_l)  # (B,)
    if nll_weight:
        loss = loss + nll_weight * (-a_w)
    return LossOutput(loss, reward_metrics(a_w, a_l))


def _sft_needs(hp):
    return knob_needs(hp, reference=False)


def _check_sft(hp):
    check_choice("sft", "token_mean", hp["token_mean"], ("example", "batch"))


@register(
    "sft", kind="pairwise", needs=_sft_needs, hparams={"token_mean": "example", **WPO_KNOB}, validate=_check_sft,
    source="Supervised fine-tuning (token-mean NLL of the chosen response); TRL loss_type='sft'",
)  # fmt: skip
def sft(x: PairwiseInputs, *, token_mean: str, use_weighting: bool) -> LossOutput:
    """SFT on the chosen response: ``−S_θ(y_w)/|y_w| = −A_θ(y_w)``.

    ``token_mean="example"`` (default): token-mean negative log-likelihood *per example* (so the batch
    mean is separable and gradient accumulation exact; a global token mean weights long responses more).
    ``token_mean="batch"`` (TRL 1.x ``loss_type='sft'``): one token mean over all chosen tokens of the
    batch, ``−Σ_b S_θ(y_w,b) / Σ_b |y_w,b|``, given to every example (batch-coupled). ``use_weighting`` multiplies by WPO's pair weight, as TRL does for every loss in a
    ``loss_type`` list (it then needs the rejected response). Needs nothing else: the rejected response and
    the reference are ignored. Metrics: ``reward/chosen`` = A_θ(y_w) (as SimPER logs it) and
    ``nll/chosen`` = −A_θ(y_w).
    """
    _check_sft({"token_mean": token_mean})
    a_w = x.chosen_average()
    nll = -a_w
    if token_mean == "batch":
        logps = x.chosen_logps.float()
        loss = (-logps.sum() / x.chosen_lengths.float().sum().clamp_min(1.0)).expand(logps.shape[0])
    else:
        loss = nll
    metrics = {"reward/chosen": a_w.detach(), "nll/chosen": nll.detach()}
    return LossOutput(*weighted(loss, metrics, x, use_weighting))
