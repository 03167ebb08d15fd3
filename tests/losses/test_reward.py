"""The reward-model loss against its formula: hand-worked values, and value + gradient of an independent
float64 reference on random and edge-case rewards (equal rewards, large magnitudes).

Reference, written from the sources (not imported): Bradley-Terry ``−log σ(r_w − r_l − m)`` (Ouyang et al.
2022, arXiv 2203.02155, Eq. 1; margin m: Touvron et al. 2023, arXiv 2307.09288, Eq. 2) plus TRL's centering
``c (r_w + r_l)²`` (``trl/trainer/reward_trainer.py``, ``center_rewards_coefficient``), averaged over pairs.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss


def reference(chosen, rejected, margin, c):
    rows = []
    for k in range(len(chosen)):
        z = chosen[k] - rejected[k] - (margin[k] if margin is not None else 0.0)
        # −log σ(z) = log(1 + e^{−z}), written stably for both signs
        nll = torch.log1p(torch.exp(-z)) if z >= 0 else -z + torch.log1p(torch.exp(z))
        rows.append(nll + c * (chosen[k] + rejected[k]) ** 2)
    return torch.stack(rows)


def _rewards(case: str, b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = torch.randn(b, generator=g) * 3, torch.randn(b, generator=g) * 3
    if case == "equal":
        rejected = chosen.clone()
    elif case == "large":
        chosen, rejected = chosen * 1e3, rejected * 1e3
    margin = torch.rand(b, generator=g)
    return chosen, rejected, margin


@pytest.mark.parametrize("case", ["random", "equal", "large"])
@pytest.mark.parametrize("hp", [{}, {"margin": True}, {"center_rewards_coefficient": 0.01}])
def test_value_and_gradient_match_the_formula(case, hp):
    chosen, rejected, margin = _rewards(case)
    c_in, r_in = chosen.clone().requires_grad_(True), rejected.clone().requires_grad_(True)
    out = get_loss("reward", **hp)(chosen_rewards=c_in, rejected_rewards=r_in, margin=margin)
    out.loss.mean().backward()
    c_ref, r_ref = chosen.double().requires_grad_(True), rejected.double().requires_grad_(True)
    m = margin.double() if hp.get("margin") else None
    expected = reference(c_ref, r_ref, m, hp.get("center_rewards_coefficient", 0.0))
    expected.mean().backward()
    torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(c_in.grad.double(), c_ref.grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(r_in.grad.double(), r_ref.grad, rtol=1e-5, atol=1e-9)
    if case == "equal" and not hp:
        torch.testing.assert_close(out.loss, torch.full_like(out.loss, math.log(2)))


def test_hand_worked():
    """r_w − r_l = [2, 0, −1]: −log σ(2) = 0.126928, log 2 = 0.693147, −log σ(−1) = 1.313262.
    With m = [1, 0, 0]: −log σ(1) = 0.313262 first. With c = 0.5 and r_w + r_l = [2, 0, 1]: + [2, 0, 0.5]."""
    chosen, rejected = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    out = get_loss("reward")(chosen_rewards=chosen, rejected_rewards=rejected)
    torch.testing.assert_close(out.loss, torch.tensor([0.126928, 0.693147, 1.313262]), atol=1e-6, rtol=0)
    assert out.metrics["reward/accuracy"].tolist() == [1.0, 0.0, 0.0]
    assert out.metrics["reward/margin"].tolist() == [2.0, 0.0, -1.0]
    with_margin = get_loss("reward", margin=True)(
        chosen_rewards=chosen, rejected_rewards=rejected, margin=torch.tensor([1.0, 0.0, 0.0])
    )
    assert with_margin.loss[0].item() == pytest.approx(0.313262, abs=1e-6)
    centred = get_loss("reward", center_rewards_coefficient=0.5)(
        chosen_rewards=chosen, rejected_rewards=rejected
    )
    torch.testing.assert_close(centred.loss - out.loss, torch.tensor([2.0, 0.0, 0.5]))


def test_margin_needs_scores_and_a_margin_tensor():
    assert get_loss("reward").needs == frozenset() and get_loss("reward").kind == "reward"
    loss = get_loss("reward", margin=True)
    assert loss.needs == {"scores"}
    with pytest.raises(ValueError, match="margin"):
        loss(chosen_rewards=torch.zeros(2), rejected_rewards=torch.zeros(2))
    with pytest.raises(ValueError, match="margin must be true or false"):
        get_loss("reward", margin="scores")
    with pytest.raises(ValueError, match="center_rewards_coefficient"):
        get_loss("reward", center_rewards_coefficient=-0.1)


def test_gradient_raises_the_chosen_reward_and_lowers_the_rejected():
    chosen, rejected = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    get_loss("reward")(chosen_rewards=chosen, rejected_rewards=rejected).loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)
