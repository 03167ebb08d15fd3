"""SimPO, SimPER and SFT: hand-worked values and invariants (A = S/|y|)."""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss


def pair(s_w=-6.0, s_l=-20.0, l_w=4.0, l_l=10.0):
    return {
        "chosen_logps": torch.tensor([s_w]),
        "rejected_logps": torch.tensor([s_l]),
        "chosen_lengths": torch.tensor([l_w]),
        "rejected_lengths": torch.tensor([l_l]),
    }


def random_batch(b=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "chosen_logps": -torch.rand(b, generator=g) * 40 - 1,
        "rejected_logps": -torch.rand(b, generator=g) * 40 - 1,
        "chosen_lengths": torch.randint(1, 30, (b,), generator=g).float(),
        "rejected_lengths": torch.randint(1, 30, (b,), generator=g).float(),
    }


def close(x, y, tol=1e-5):
    return torch.allclose(x, torch.as_tensor(y, dtype=torch.float32), atol=tol)


# ----------------------------------------------------------------------------- SimPO
def test_simpo_hand_worked():
    """S_w = -6, |y_w| = 4 -> A_w = -1.5;  S_l = -20, |y_l| = 10 -> A_l = -2.
    beta = 2, gamma/beta = 0.25: z = 2 * (-1.5 + 2 - 0.25) = 2 * 0.25 = 0.5.
    loss = -log sigma(0.5) = log(1 + e^-0.5) = log(1.606531) = 0.474077.
    rewards beta*A: -3 and -4, margin 1, accuracy 1."""
    out = get_loss("simpo")(**pair())
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.474077, abs=1e-6)
    m = out.metrics
    assert m["reward/chosen"].item() == pytest.approx(-3.0)
    assert m["reward/rejected"].item() == pytest.approx(-4.0)
    assert m["reward/margin"].item() == pytest.approx(1.0)
    assert m["reward/accuracy"].item() == 1.0


def test_simpo_hinge_hand_worked():
    """Same pair: max(0, 1 - z) = 1 - 0.5 = 0.5; with gamma/beta = 0 z = 1 -> 0 (and flat)."""
    assert get_loss("simpo", loss_type="hinge")(**pair()).loss.item() == pytest.approx(0.5, abs=1e-6)
    assert get_loss("simpo", loss_type="hinge", gamma_beta_ratio=0.0)(**pair()).loss.item() == 0.0


def test_simpo_gamma_shift():
    """gamma/beta = 0: z = 2 * 0.5 = 1, loss = log(1 + e^-1) = 0.313262 (< 0.474077 at 0.25).
    In general gamma/beta = g equals gamma/beta = 0 with every A_w lowered by g."""
    assert get_loss("simpo", gamma_beta_ratio=0.0)(**pair()).loss.item() == pytest.approx(
        math.log1p(math.exp(-1.0)), abs=1e-6
    )
    t = random_batch()
    g = 0.7
    shifted = {**t, "chosen_logps": t["chosen_logps"] - g * t["chosen_lengths"]}
    assert close(
        get_loss("simpo", gamma_beta_ratio=g)(**t).loss,
        get_loss("simpo", gamma_beta_ratio=0.0)(**shifted).loss,
    )
    losses = [get_loss("simpo", gamma_beta_ratio=x)(**t).loss for x in (0.0, 0.5, 1.0)]
    assert (losses[0] < losses[1]).all() and (losses[1] < losses[2]).all()


def test_simpo_label_smoothing_and_nll_weight():
    """eps = 0.1: 0.9 log(1 + e^-0.5) + 0.1 log(1 + e^0.5) = 0.9*0.474077 + 0.1*0.974077 = 0.524077.
    nll_weight = 0.5 adds 0.5 * (-A_w) = 0.5 * 1.5 = 0.75."""
    ls = get_loss("simpo", label_smoothing=0.1)(**pair()).loss.item()
    assert ls == pytest.approx(0.9 * math.log1p(math.exp(-0.5)) + 0.1 * math.log1p(math.exp(0.5)), abs=1e-6)
    assert ls == pytest.approx(0.524077, abs=1e-6)
    sw = get_loss("simpo", nll_weight=0.5)(**pair()).loss.item()
    assert sw == pytest.approx(0.474077 + 0.75, abs=1e-6)


def test_simpo_rejects_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        get_loss("simpo", loss_type="ipo")


def test_simpo_ignores_reference():
    t = random_batch()
    with_ref = {**t, "ref_chosen_logps": torch.zeros(5) - 3, "ref_rejected_logps": torch.zeros(5) + 1}
    assert close(get_loss("simpo")(**t).loss, get_loss("simpo")(**with_ref).loss)


# ----------------------------------------------------------------------------- SimPER
def test_simper_hand_worked():
    """S_w = -2, |y_w| = 4 -> A_w = -0.5;  S_l = -6, |y_l| = 3 -> A_l = -2.
    loss = -e^-0.5 + e^-2 = -0.606531 + 0.135335 = -0.471195. rewards are the raw A values."""
    out = get_loss("simper")(**pair(-2.0, -6.0, 4.0, 3.0))
    assert out.loss.item() == pytest.approx(-math.exp(-0.5) + math.exp(-2.0), abs=1e-6)
    assert out.loss.item() == pytest.approx(-0.471195, abs=1e-6)
    assert out.metrics["reward/chosen"].item() == pytest.approx(-0.5)
    assert out.metrics["reward/rejected"].item() == pytest.approx(-2.0)
    assert out.metrics["reward/margin"].item() == pytest.approx(1.5)
    # nll_weight = 1 adds -A_w = 0.5
    assert get_loss("simper", nll_weight=1.0)(**pair(-2.0, -6.0, 4.0, 3.0)).loss.item() == pytest.approx(
        -0.471195 + 0.5, abs=1e-6
    )


def test_simper_zero_when_averages_equal():
    """A_w = -12/4 = -3 = -30/10 = A_l -> -e^-3 + e^-3 = 0."""
    out = get_loss("simper")(**pair(-12.0, -30.0, 4.0, 10.0))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    assert out.metrics["reward/accuracy"].item() == 0.0  # a tie is not a win


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name,hp", [("simpo", {}), ("simpo", {"loss_type": "hinge"}), ("simper", {})])
def test_gradient_signs(name, hp):
    t = pair()  # SimPO hinge is active here: z = 0.5 < 1
    t["chosen_logps"].requires_grad_(True)
    t["rejected_logps"].requires_grad_(True)
    get_loss(name, **hp)(**t).loss.sum().backward()
    assert t["chosen_logps"].grad.item() < 0
    assert t["rejected_logps"].grad.item() > 0


# ----------------------------------------------------------------------------- SFT
def test_sft_hand_worked_and_needs_nothing():
    """S_w = -6, |y_w| = 4: NLL = 6/4 = 1.5; reward/chosen = A_w = -1.5. No rejected, no reference."""
    loss = get_loss("sft")
    assert loss.needs == frozenset()
    out = loss(chosen_logps=torch.tensor([-6.0]), chosen_lengths=torch.tensor([4.0]))
    assert out.loss.item() == pytest.approx(1.5)
    assert out.metrics["nll/chosen"].item() == pytest.approx(1.5)
    assert out.metrics["reward/chosen"].item() == pytest.approx(-1.5)
    # the full six-argument call works too (rejected/reference ignored)
    full = loss(**pair(), ref_chosen_logps=None, ref_rejected_logps=None)
    assert full.loss.item() == pytest.approx(1.5)


def test_sft_gradient_and_missing_lengths():
    x = torch.tensor([-6.0, -3.0], requires_grad=True)
    get_loss("sft")(chosen_logps=x, chosen_lengths=torch.tensor([4.0, 2.0])).loss.sum().backward()
    assert close(x.grad, [-0.25, -0.5])
    with pytest.raises(ValueError, match="chosen_lengths"):
        get_loss("sft")(chosen_logps=x)
