"""Reference-free, length-normalised preference losses: SimPO, SimPER, and plain SFT.

Same call signature as :mod:`prefdistill.losses.pairwise` — (B,) **summed** response log-probs
and (B,) response token counts — but no reference model is used (``ref_*`` are accepted and
ignored). These losses work on the length-averaged log-likelihood::

    A_θ(y|x) = S_θ(y|x) / |y|          (B,)

All arithmetic is float32 whatever the input dtype.
"""

from __future__ import annotations

import torch

from prefdistill.losses.pairwise import _f32, _lengths, reward_metrics, smoothed_sigmoid_loss
from prefdistill.losses.registry import LossOutput, register


def _avg(loss: str, logps, lengths, which: str) -> torch.Tensor:
    """A = S/|y| as float32 (B,); lengths clamped to >= 1."""
    return _f32(f"{which}_logps", logps, loss) / _lengths(f"{which}_lengths", lengths, loss)


# --------------------------------------------------------------------------- SimPO
def _simpo_needs(hp):
    if hp.get("loss_type", "sigmoid") not in ("sigmoid", "hinge"):
        raise ValueError(f"loss 'simpo': loss_type must be 'sigmoid' or 'hinge', got {hp['loss_type']!r}")
    return {"rejected"}


@register("simpo", needs=_simpo_needs, kind="pairwise")
def simpo(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.25,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    sft_weight: float = 0.0,
) -> LossOutput:
    """SimPO, Meng et al. 2024 (arXiv 2405.14734), Eq. 6::

        L = −log σ( β A_θ(y_w) − β A_θ(y_l) − γ ) = −log σ( β (A_w − A_l − γ/β) )

    following princeton-nlp/SimPO ``scripts/simpo_trainer.py::simpo_loss`` (``gamma_beta_ratio``
    = γ/β; defaults from ``scripts/simpo_config.py``: β = 2.0, γ/β = 0.25, ``sigmoid``).

    * ``label_smoothing`` ε: cDPO form ``−(1−ε) log σ(z) − ε log σ(−z)``.
    * ``loss_type="hinge"``: ``max(0, 1 − β (A_w − A_l − γ/β))``.
    * ``sft_weight`` λ: adds ``λ · (−A_w)`` per example (NLL of chosen, token mean; README: helps
      GSM8K, hurts chat). Default 0.

    β scales the length-normalised reward ``β A_θ(y)`` (reported as ``reward/*``); with no
    reference there is no KL anchor, so β only sets the sharpness of the sigmoid and γ the target
    margin. ``ref_*`` are ignored.
    """
    if loss_type not in ("sigmoid", "hinge"):
        raise ValueError(f"loss 'simpo': loss_type must be 'sigmoid' or 'hinge', got {loss_type!r}")
    a_w = _avg("simpo", chosen_logps, chosen_lengths, "chosen")  # (B,)
    a_l = _avg("simpo", rejected_logps, rejected_lengths, "rejected")  # (B,)
    z = beta * (a_w - a_l - gamma_beta_ratio)  # (B,)
    if loss_type == "sigmoid":
        loss = smoothed_sigmoid_loss(z, label_smoothing)
    else:
        loss = torch.relu(1.0 - z)
    if sft_weight:
        loss = loss + sft_weight * (-a_w)
    return LossOutput(loss, reward_metrics(beta * a_w, beta * a_l))


# --------------------------------------------------------------------------- SimPER
@register("simper", needs={"rejected"}, kind="pairwise")
def simper(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    sft_weight: float = 0.0,
) -> LossOutput:
    """SimPER, Xiao et al., ICLR 2025 (arXiv 2502.00883), the SimPER objective::

        L = −exp(A_θ(y_w)) + exp(A_θ(y_l))

    i.e. −(inverse perplexity of chosen) + (inverse perplexity of rejected); follows
    tengxiao1/SimPER ``scripts/simper_trainer.py::simpo_loss``, branch ``loss_type == "SimPER"``.
    No β, no γ, no reference, no sigmoid (the repo's YAMLs carry SimPO's β/γ, unused there). The
    per-example loss lies in (−1, 1). ``sft_weight`` λ adds ``λ · (−A_w)`` (default 0).
    ``reward/*`` are the raw A_θ values, as the repo logs them. ``ref_*`` are ignored.
    """
    a_w = _avg("simper", chosen_logps, chosen_lengths, "chosen")  # (B,)
    a_l = _avg("simper", rejected_logps, rejected_lengths, "rejected")  # (B,)
    loss = -torch.exp(a_w) + torch.exp(a_l)  # (B,)
    if sft_weight:
        loss = loss + sft_weight * (-a_w)
    return LossOutput(loss, reward_metrics(a_w, a_l))


# --------------------------------------------------------------------------- SFT
@register("sft", needs=(), kind="pairwise")
def sft(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor | None = None,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
) -> LossOutput:
    """Supervised fine-tuning on the chosen response: ``L = −S_θ(y_w)/|y_w| = −A_θ(y_w)``.

    Token-mean negative log-likelihood *per example* (so the batch mean is separable and gradient
    accumulation exact; a global token mean would weight long responses more). Needs nothing: the
    rejected response and the reference are accepted and ignored. ``chosen_lengths`` is required.
    Metrics: ``reward/chosen`` = A_θ(y_w) (as SimPER logs it) and ``nll/chosen`` = −A_θ(y_w).
    """
    a_w = _avg("sft", chosen_logps, chosen_lengths, "chosen")  # (B,)
    nll = -a_w
    return LossOutput(nll, {"reward/chosen": a_w.detach(), "nll/chosen": nll.detach()})
