"""ORPO and CPO (with its SimPO and AlphaPO forms): hand-worked values and errors."""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss


def ls(z: float) -> float:
    return -math.log1p(math.exp(-z))


def pair(s_w, s_l, lengths=(1, 1)):
    return {
        "chosen_logps": torch.tensor([float(s_w)]),
        "rejected_logps": torch.tensor([float(s_l)]),
        "chosen_lengths": torch.tensor([lengths[0]]),
        "rejected_lengths": torch.tensor([lengths[1]]),
    }


def test_orpo_by_hand():
    """P_w = ½ (odds 1, log-odds 0), P_l = ¼ (odds 1/3): loss = -log ½ - β·log σ(log 3)."""
    out = get_loss("orpo", beta=0.1)(**pair(math.log(0.5), math.log(0.25)))
    assert out.loss.item() == pytest.approx(math.log(2.0) - 0.1 * math.log(0.75), rel=1e-6)
    assert out.metrics["orpo/log_odds_chosen"].item() == pytest.approx(math.log(3.0), rel=1e-6)
    assert out.metrics["nll/chosen"].item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_orpo_uses_length_averaged_probabilities_and_stays_finite_at_probability_one():
    two_tokens = get_loss("orpo")(**pair(2 * math.log(0.5), 2 * math.log(0.25), lengths=(2, 2))).loss
    one_token = get_loss("orpo")(**pair(math.log(0.5), math.log(0.25))).loss
    torch.testing.assert_close(two_tokens, one_token)
    s = torch.tensor([0.0], requires_grad=True)  # P(y_w) = 1: odds infinite without the clamp
    out = get_loss("orpo")(chosen_logps=s, rejected_logps=torch.tensor([-1.0]), chosen_lengths=torch.tensor([1]),
                           rejected_lengths=torch.tensor([1]))  # fmt: skip
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize(
    ("hp", "want"),
    [
        # S_w = -1, S_l = -3 (lengths 2, 3: A_w = -½, A_l = -1), β = 0.1, NLL = ½
        ({}, -ls(0.1 * 2.0) + 0.5),  # sigmoid on summed log-probs
        ({"loss_type": "hinge"}, (1 - 0.1 * 2.0) + 0.5),
        ({"loss_type": "ipo"}, (0.5 - 5.0) ** 2 + 0.5),  # averaged log-probs, (d - 1/(2β))²
        ({"loss_type": "simpo", "nll_weight": 0.0}, -ls(0.1 * (0.5 - 0.5 / 0.1))),  # SimPO: γ = 0.5
        ({"label_smoothing": 0.2, "nll_weight": 0.0}, -0.8 * ls(0.2) - 0.2 * ls(-0.2)),
    ],
)
def test_cpo_loss_types_by_hand(hp, want):
    assert get_loss("cpo", **hp)(**pair(-1.0, -3.0, lengths=(2, 3))).loss.item() == pytest.approx(want, rel=1e-6)


def test_alphapo_reward_shape():
    """AlphaPO = cpo loss_type=simpo, nll_weight=0, alpha: r = (1 - P^-α)/α of the averaged probability."""
    a = 0.5
    r_w, r_l = (1 - math.exp(0.5 * a)) / a, (1 - math.exp(1.0 * a)) / a  # P = e^-½, e^-1
    got = get_loss("cpo", loss_type="simpo", nll_weight=0.0, alpha=a, beta=2.0, simpo_gamma=0.5)
    out = got(**pair(-1.0, -3.0, lengths=(2, 3)))
    assert out.loss.item() == pytest.approx(-ls(2.0 * (r_w - r_l - 0.25)), rel=1e-6)
    assert out.metrics["reward/chosen"].item() == pytest.approx(2.0 * r_w, rel=1e-6)


def test_cpo_errors_and_renamed_alpha():
    with pytest.raises(ValueError, match="label_smoothing"):
        get_loss("cpo", loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        get_loss("cpo", loss_type="alphapo")
    with pytest.warns(FutureWarning, match="cpo_alpha"):
        assert get_loss("cpo", cpo_alpha=0.0).hparams["nll_weight"] == 0.0
    assert get_loss("cpo").needs == {"rejected"} and get_loss("orpo").needs == {"rejected"}  # reference-free
