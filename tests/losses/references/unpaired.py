"""Reference formulas of the unpaired losses (KTO, BCO) and of reward-model training, float64, one row at
a time; plus the input cases of the ``unpaired`` and ``reward`` kinds.

* KTO (Ethayarajh et al. 2024, arXiv 2402.01306; TRL ``trl/trainer/kto_trainer.py``, loss_type ``kto``):
  ``λ_y − v(x, y)``, ``v = λ_D σ(β(ρ − z0))`` (desirable) or ``λ_U σ(β(z0 − ρ))`` (undesirable),
  ``ρ = S_θ − S_ref``, ``z0 = max(0, mean_j(S_θ(y'_j|x_j) − S_ref(y'_j|x_j)))`` detached.
* BCO (Jung et al. 2024, arXiv 2404.04656; TRL ``trl/experimental/bco/bco_trainer.py``): ``−log σ(r − δ)``
  (desirable) or ``−log σ(−(r − δ))``, ``r = β ρ``, δ = TRL's ``RunningMoments`` mean after merging this
  batch's rewards: ``mean + (batch_mean − mean) · n / (count + n)``.
* Reward model (Ouyang et al. 2022, arXiv 2203.02155, Eq. 1; Touvron et al. 2023, arXiv 2307.09288, Eq. 2;
  TRL ``trl/trainer/reward_trainer.py``): ``−log σ(r_w − r_l − m) + c (r_w + r_l)²``.
"""

from __future__ import annotations

import torch
from conformance import Case, Reference


def _neg_log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """−log σ(z) = log(1 + e^{−z}), the stable branch for each sign."""
    return torch.log1p(torch.exp(-z)) if z >= 0 else -z + torch.log1p(torch.exp(z))


def _kto(t, *, beta, desirable_weight, undesirable_weight):
    shifts = [float(a.detach()) - float(b) for a, b in zip(t["kl_logps"], t["ref_kl_logps"])]
    z0 = max(0.0, sum(shifts) / len(shifts))  # a number: no gradient through the KL estimate
    rows = []
    for k in range(len(t["logps"])):
        rho = t["logps"][k] - t["ref_logps"][k]
        if bool(t["labels"][k]):
            rows.append(desirable_weight * (1 - 1 / (1 + torch.exp(-beta * (rho - z0)))))
        else:
            rows.append(undesirable_weight * (1 - 1 / (1 + torch.exp(-beta * (z0 - rho)))))
    return torch.stack(rows)


def _bco(t, *, beta, state):
    rewards = [beta * (t["logps"][k] - t["ref_logps"][k]) for k in range(len(t["logps"]))]
    n = len(rewards)
    batch_mean = sum(float(r.detach()) for r in rewards) / n
    mean = state["reward_mean"] + (batch_mean - state["reward_mean"]) * n / (state["reward_count"] + n)
    rows = []
    for k, r in enumerate(rewards):
        rows.append(_neg_log_sigmoid(r - mean) if bool(t["labels"][k]) else _neg_log_sigmoid(-(r - mean)))
    return torch.stack(rows), {"reward_mean": mean, "reward_count": state["reward_count"] + n}


def _reward(t, *, margin, center_rewards_coefficient):
    rows = []
    for k in range(len(t["chosen_rewards"])):
        r_w, r_l = t["chosen_rewards"][k], t["rejected_rewards"][k]
        m = t["margin"][k] if margin else 0.0
        rows.append(_neg_log_sigmoid(r_w - r_l - m) + center_rewards_coefficient * (r_w + r_l) ** 2)
    return torch.stack(rows)


def unpaired_case(case: str, b: int = 6, seed: int = 0) -> Case:
    """Rows of both labels. random: sums over 1..30 tokens, reference and mismatched pairs a few nats away;
    equal: reference = policy everywhere (ρ = z0 = 0); length1: one-token completions; large: sums near −1e4
    (multiples of 1/8, exact in float32); masked_nan: no masked positions here, another random draw."""
    g = torch.Generator().manual_seed(seed + (1 if case == "masked_nan" else 0))
    lengths = (
        torch.ones(b, dtype=torch.long) if case == "length1" else torch.randint(1, 31, (b,), generator=g)
    )
    logps = -torch.rand(b, generator=g) * 2.0 * lengths
    ref = logps + torch.randn(b, generator=g) * 3.0
    kl = -torch.rand(b, generator=g) * 2.0 * lengths
    ref_kl = kl + torch.randn(b, generator=g) * 2.0
    if case == "equal":
        ref, ref_kl = logps.clone(), kl.clone()
    elif case == "large":
        eighths = [torch.randint(0, 64, (b,), generator=g).float() / 8 for _ in range(4)]
        logps, ref, kl, ref_kl = (-1e4 - e for e in eighths)
    labels = torch.arange(b) % 3 != 1  # both classes, unequal counts
    tensors = {"logps": logps, "labels": labels, "lengths": lengths, "ref_logps": ref, "kl_logps": kl,
               "ref_kl_logps": ref_kl}  # fmt: skip
    return Case(tensors, ("logps", "kl_logps"))


def reward_case(case: str, b: int = 6, seed: int = 0) -> Case:
    """Scalar rewards. random: N(0, 3); equal: rejected = chosen; large: rewards near ±1e4 (the sigmoid
    saturates); length1 and masked_nan (no lengths, no masks here): other random draws."""
    g = torch.Generator().manual_seed(seed + {"length1": 1, "masked_nan": 2}.get(case, 0))
    chosen, rejected = torch.randn(b, generator=g) * 3.0, torch.randn(b, generator=g) * 3.0
    if case == "equal":
        rejected = chosen.clone()
    elif case == "large":
        chosen, rejected = chosen * 3e3, rejected * 3e3
    margin = torch.rand(b, generator=g) * 2.0
    return Case({"chosen_rewards": chosen, "rejected_rewards": rejected, "margin": margin},
                ("chosen_rewards", "rejected_rewards"))  # fmt: skip


CASE_BUILDERS = {"unpaired": unpaired_case, "reward": reward_case}
REFERENCES = {
    "kto": Reference(_kto, ({}, {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.75})),
    "bco": Reference(_bco, ({}, {"beta": 1.0}), state={"reward_mean": 0.25, "reward_count": 12.0}),
    "reward": Reference(
        _reward,
        ({}, {"margin": True}, {"center_rewards_coefficient": 0.01}),
    ),
}
