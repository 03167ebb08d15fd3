"""Terms shared by several losses: the (label-smoothed) sigmoid loss and the reward metrics.

Kept here, public, so every loss family imports them from one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """The shared reward metrics of a pair, all (B,) and detached.

    ``reward/accuracy`` is TRL's (``chosen > rejected``; a tie counts as wrong), kept for comparability. While
    the policy equals the reference (before training, DPO's implicit rewards are all 0) every pair is a tie
    and it reads 0, so ``reward/ties`` (the fraction of tied pairs) and ``reward/accuracy_ties_half`` (a tie
    counts 1/2, the convention of the win rates in ``eval/``) are reported beside it.
    """
    chosen, rejected = chosen.detach(), rejected.detach()
    wins, ties = (chosen > rejected).float(), (chosen == rejected).float()
    return {
        "reward/chosen": chosen,
        "reward/rejected": rejected,
        "reward/margin": chosen - rejected,
        "reward/accuracy": wins,
        "reward/ties": ties,
        "reward/accuracy_ties_half": wins + 0.5 * ties,
    }


def smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """cDPO form ``−(1−ε) log σ(z) − ε log σ(−z)``; ε = 0 is plain ``−log σ(z)``. (B,) -> (B,)."""
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def check_choice(loss: str, name: str, value, choices) -> None:
    """A clear ValueError when a string hyper-parameter is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"loss {loss!r}: {name} must be one of {list(choices)}, got {value!r}")


def check_range(loss: str, name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    """A clear ValueError when ``value`` is outside ``[low, high]`` (or ``[low, high)``)."""
    above = value >= high if high_open else value > high
    if value < low or above:
        bracket = ")" if high_open else "]"
        raise ValueError(f"loss {loss!r}: {name} must be in [{low:g}, {high:g}{bracket}, got {value}")
