"""Reward-model training: a Bradley-Terry loss on the scalar rewards of a preference pair.

Reads :class:`~prefdistill.losses.inputs.RewardInputs`: (B,) rewards ``r(x, y_w)`` and ``r(x, y_l)``
that a scalar head on the policy network gives the chosen and rejected responses (the reward module
computes them), and optionally the pair's margin from the data.
"""

from __future__ import annotations

import torch.nn.functional as F

from prefdistill.losses.inputs import RewardInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_range, reward_metrics


def _reward_needs(hp):
    return {"scores"} if hp["margin"] else set()


def _check_reward(hp):
    if not isinstance(hp["margin"], bool):
        raise ValueError(f"loss 'reward': margin must be true or false, got {hp['margin']!r}")
    check_range("reward", "center_rewards_coefficient", hp["center_rewards_coefficient"], 0.0, float("inf"))


@register(
    "reward", kind="reward", needs=_reward_needs, validate=_check_reward,
    hparams={"margin": False, "center_rewards_coefficient": 0.0},
    source="Ouyang et al. 2022 (arXiv 2203.02155) Eq. 1; margin: Touvron et al. 2023 (arXiv 2307.09288) "
           "Eq. 2; centering: Eisenstein et al. 2023 (arXiv 2312.09244) Eq. 2; "
           "TRL trl/trainer/reward_trainer.py (RewardTrainer.compute_loss)",
)  # fmt: skip
def reward(x: RewardInputs, *, margin: bool, center_rewards_coefficient: float) -> LossOutput:
    """Bradley-Terry: ``−log σ(r_w − r_l − m) + c (r_w + r_l)²``.

    ``margin=true`` subtracts the pair's margin ``m = s(y_w) − s(y_l)`` from the data (scored pairs,
    ``chosen_score``/``rejected_score``; TRL's ``margin`` column, Llama 2's m(r)); false: m = 0.
    ``center_rewards_coefficient`` c (TRL's, recommended 0.01; 0 = off) pulls the rewards towards mean
    zero, per pair as TRL computes it (``c · mean((r_w + r_l)²)``). Metrics: ``reward/chosen``,
    ``reward/rejected``, ``reward/margin`` (r_w − r_l) and ``reward/accuracy`` (r_w > r_l), the held-out
    pair accuracy of the reward model.
    """
    chosen, rejected = x.rewards()
    m = 0.0
    if margin:
        if x.margin is None:
            raise ValueError("loss 'reward' with margin=true needs the pairs' margin (scored pairs)")
        m = x.margin.detach().float()
    loss = -F.logsigmoid(chosen - rejected - m)  # (B,)
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * (chosen + rejected) ** 2
    return LossOutput(loss, reward_metrics(chosen, rejected))
