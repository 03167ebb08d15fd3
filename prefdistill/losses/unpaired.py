"""Unpaired preference losses: KTO and BCO, on single completions labelled desirable or undesirable.

Each reads :class:`~prefdistill.losses.inputs.UnpairedInputs`: (B,) policy and reference summed
log-probs of each (prompt, completion) row, its label (desirable or not), and for KTO the log-probs
of mismatched (prompt, completion) pairs. Notation: the implied reward of a row is
``r(x, y) = β (S_θ(y|x) − S_ref(y|x))`` (reported as ``reward/*``); ``D`` / ``U`` are the desirable
and undesirable rows.

Every unpaired loss reports the per-row implied reward as ``metrics["reward"]`` (the contract of the
kind): the unpaired training module turns it into the mean reward of each class and, for rows cut from
one pair, DPO's pair ``reward/margin`` and ``reward/accuracy``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import UnpairedInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_range


def reward_metrics(rewards: torch.Tensor, desirable: torch.Tensor, threshold: torch.Tensor) -> dict:
    """The metrics every unpaired loss reports, all (B,) detached and finite.

    ``reward``: the row's implied reward r (the unpaired module splits it by label and, for rows cut from
    one pair, into pair margin and accuracy); ``reward/label_accuracy``: the rows the loss's binary
    classifier gets right (r above ``threshold`` -- KTO's β z₀, BCO's δ -- exactly when desirable).
    """
    rewards = rewards.detach().float()
    return {"reward": rewards, "reward/label_accuracy": ((rewards > threshold) == desirable).float()}


def _check_kto(hp):
    for name in ("desirable_weight", "undesirable_weight"):
        check_range("kto", name, hp[name], 0.0, float("inf"))


@register(
    "kto", kind="unpaired", needs={"reference", "kl_pairs"}, validate=_check_kto,
    hparams={"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
    source="Ethayarajh et al. 2024 (arXiv 2402.01306), L_KTO with its batch KL estimate (TRL cites Eq. 7); "
           "TRL trl/trainer/kto_trainer.py (loss_type='kto')",
)  # fmt: skip
def kto(x: UnpairedInputs, *, beta: float, desirable_weight: float, undesirable_weight: float) -> LossOutput:
    """KTO: ``λ_D (1 − σ(β (ρ − z₀)))`` on desirable rows, ``λ_U (1 − σ(β (z₀ − ρ)))`` on undesirable ones.

    ``ρ = S_θ(y|x) − S_ref(y|x)``; ``z₀ = max(0, mean_j [S_θ(y'_j|x_j) − S_ref(y'_j|x_j)])`` over the
    mismatched pairs ``(x_j, y'_j)`` (``kl_logps``/``ref_kl_logps``; in multi-device training the module
    gathers them from every device), detached: the paper's biased batch estimate of KL(π_θ‖π_ref), as TRL
    computes it (``kl = (KL_logps − ref_KL_logps).mean().detach()``, gathered, ``clamp(min=0)``). This is
    the paper's ``λ_y − v(x, y)`` with its value function ``v``. ``desirable_weight`` λ_D and
    ``undesirable_weight`` λ_U (TRL defaults 1.0) rebalance unequal class counts; the paper recommends
    ``λ_D n_D / (λ_U n_U)`` in [1, 4/3].

    Metrics: :func:`reward_metrics` with threshold β z₀, and ``kl/reference`` = z₀.
    """
    desirable = x.desirable()
    rho = x.ratios()  # (B,)
    z0 = x.kl_ratios().mean().clamp_min(0.0).detach()
    value = torch.where(desirable, torch.sigmoid(beta * (rho - z0)), torch.sigmoid(beta * (z0 - rho)))
    weight = torch.where(desirable, desirable_weight, undesirable_weight).to(value)
    metrics = reward_metrics(beta * rho, desirable, beta * z0)
    metrics["kl/reference"] = z0.expand_as(rho).clone()
    return LossOutput(weight * (1.0 - value), metrics)


@register(
    "bco", kind="unpaired", needs={"reference"}, hparams={"beta": 0.1},
    state={"reward_mean": 0.0, "reward_count": 0.0},
    source="Jung et al. 2024 (arXiv 2404.04656), the BCO loss with reward shift δ; "
           "TRL trl/experimental/bco/bco_trainer.py (bco_loss, RunningMoments)",
)  # fmt: skip
def bco(x: UnpairedInputs, *, beta: float, state: dict) -> LossOutput:
    """BCO: ``−log σ(r − δ)`` on desirable rows, ``−log σ(−(r − δ))`` on undesirable ones.

    A binary classifier with logit ``r(x, y) − δ`` (``r = β ρ``) trained with cross-entropy. The reward
    shift δ is the running mean of every reward seen in training, this batch included (TRL's
    ``RunningMoments``: mean ← mean + (batch mean − mean) · n / (count + n)); the running mean and count
    are this loss's ``state``, kept and checkpointed by the module. Held-out batches use the state
    updated with their own rewards, which the module then discards (TRL reads δ without the update there;
    the two differ by one batch's weight in a running mean). The paper's underlying-distribution-matching
    weights (UDM: a prompt classifier on embeddings) are not implemented: every row has weight 1.

    Metrics: :func:`reward_metrics` with threshold δ, and ``reward/delta`` = δ.
    """
    desirable = x.desirable()
    rewards = beta * x.ratios()  # (B,)
    mean, count = state["reward_mean"].double(), state["reward_count"].double()
    n = rewards.numel()
    new_mean = mean + (rewards.detach().double().mean() - mean) * n / (count + n)
    delta = new_mean.float()
    loss = torch.where(desirable, -F.logsigmoid(rewards - delta), -F.logsigmoid(-(rewards - delta)))
    metrics = reward_metrics(rewards, desirable, delta)
    metrics["reward/delta"] = delta.expand_as(rewards).clone()
    return LossOutput(loss, metrics, {"reward_mean": new_mean, "reward_count": count + n})
