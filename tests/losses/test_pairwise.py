"""Reference-based pairwise losses: hand-worked values and invariants.

Shared hand-worked pair (used throughout): beta = 0.1,
    S_w = -10, S_l = -14, S_ref(y_w) = -12, S_ref(y_l) = -12
    => chosen log-ratio  = -10 - (-12) = +2,  rejected log-ratio = -14 - (-12) = -2
    => h = 2 - (-2) = 4,  beta*h = 0.4
    -log sigma(0.4) = log(1 + e^-0.4) = log(1.670320) = 0.513015
    -log sigma(-0.4) = log(1 + e^0.4) = 0.4 + 0.513015 = 0.913015
"""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss

SP_NEG = math.log1p(math.exp(-0.4))  # -log sigma(0.4)  = 0.5130153
SP_POS = math.log1p(math.exp(0.4))  # -log sigma(-0.4) = 0.9130153


def pair(lw=1.0, ll=1.0, **kw):
    """The hand-worked pair above as (1,) tensors, plus lengths."""
    t = {
        "chosen_logps": torch.tensor([-10.0]),
        "rejected_logps": torch.tensor([-14.0]),
        "chosen_lengths": torch.tensor([lw]),
        "rejected_lengths": torch.tensor([ll]),
        "ref_chosen_logps": torch.tensor([-12.0]),
        "ref_rejected_logps": torch.tensor([-12.0]),
    }
    t.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in kw.items()})
    return t


def random_batch(b=4, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = {
        "chosen_logps": -torch.rand(b, generator=g) * 30 - 1,
        "rejected_logps": -torch.rand(b, generator=g) * 30 - 1,
        "chosen_lengths": torch.randint(1, 40, (b,), generator=g).float(),
        "rejected_lengths": torch.randint(1, 40, (b,), generator=g).float(),
        "ref_chosen_logps": -torch.rand(b, generator=g) * 30 - 1,
        "ref_rejected_logps": -torch.rand(b, generator=g) * 30 - 1,
    }
    if requires_grad:
        t["chosen_logps"].requires_grad_(True)
        t["rejected_logps"].requires_grad_(True)
    return t


def close(x, y, tol=1e-5):
    return torch.allclose(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), atol=tol
    )


# ----------------------------------------------------------------------------- zero margin
@pytest.mark.parametrize(
    "name,hp",
    [
        ("dpo", {}),
        ("dpo", {"label_smoothing": 0.1}),
        ("dpo", {"label_smoothing": 0.3}),
        ("robust", {}),
        ("robust", {"label_smoothing": 0.3}),
    ],
)
def test_zero_margin_is_log2(name, hp):
    """Policy == reference => h = 0 and log sigma(0) = -log 2.
    DPO:   -log sigma(0) = log 2.
    cDPO:  -(1-e) log sigma(0) - e log sigma(0) = (1-e+e) log 2 = log 2.
    rDPO:  [-(1-e) log sigma(0) + e log sigma(0)] / (1-2e) = [(1-e) log 2 - e log 2] / (1-2e)
         = (1-2e) log 2 / (1-2e) = log 2.
    """
    t = random_batch(5)
    t["ref_chosen_logps"], t["ref_rejected_logps"] = t["chosen_logps"].clone(), t["rejected_logps"].clone()
    out = get_loss(name, **hp)(**t)
    assert close(out.loss, torch.full((5,), math.log(2.0)))
    assert close(out.metrics["reward/margin"], torch.zeros(5))


# ----------------------------------------------------------------------------- DPO family
def test_dpo_hand_worked():
    """h = 4, beta = 0.1: loss = -log sigma(0.4) = log(1 + e^-0.4) = 0.513015;
    rewards 0.1*2 = 0.2 and 0.1*(-2) = -0.2, margin 0.4, accuracy 1."""
    out = get_loss("dpo", beta=0.1)(**pair())
    assert out.loss.item() == pytest.approx(0.5130153, abs=1e-6)
    assert out.loss.item() == pytest.approx(SP_NEG, abs=1e-6)
    m = out.metrics
    assert m["reward/chosen"].item() == pytest.approx(0.2)
    assert m["reward/rejected"].item() == pytest.approx(-0.2)
    assert m["reward/margin"].item() == pytest.approx(0.4)
    assert m["reward/accuracy"].item() == 1.0


def test_cdpo_hand_worked():
    """eps = 0.1: 0.9 * 0.513015 + 0.1 * 0.913015 = 0.461714 + 0.091302 = 0.553015."""
    out = get_loss("dpo", beta=0.1, label_smoothing=0.1)(**pair())
    assert out.loss.item() == pytest.approx(0.9 * SP_NEG + 0.1 * SP_POS, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.5530153, abs=1e-6)


def test_robust_hand_worked():
    """eps = 0.1: [0.9 * 0.513015 - 0.1 * 0.913015] / 0.8 = (0.461714 - 0.091302) / 0.8 = 0.463015.
    (Generally a - eps*z/(1-2eps) with a = -log sigma(z): 0.513015 - 0.04/0.8 = 0.463015.)"""
    out = get_loss("robust", beta=0.1, label_smoothing=0.1)(**pair())
    assert out.loss.item() == pytest.approx((0.9 * SP_NEG - 0.1 * SP_POS) / 0.8, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.4630153, abs=1e-6)


def test_label_smoothing_zero_reduces_to_dpo():
    t = random_batch(6)
    base = get_loss("dpo")(**t).loss
    assert close(get_loss("dpo", label_smoothing=0.0)(**t).loss, base)
    assert close(get_loss("robust", label_smoothing=0.0)(**t).loss, base)


@pytest.mark.parametrize("eps", [0.5, 0.7])
def test_robust_rejects_eps_ge_half(eps):
    with pytest.raises(ValueError, match="robust"):
        get_loss("robust", label_smoothing=eps)
    from prefdistill.losses import PairwiseInputs
    from prefdistill.losses.pairwise import KNOBS, robust  # the bare function checks too

    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        robust(PairwiseInputs(**pair()), beta=0.1, label_smoothing=eps, **KNOBS)


def test_reference_free_dpo_equals_dpo_with_zero_reference():
    t = random_batch(5)  # carries non-zero refs, which reference_free must ignore
    free = get_loss("dpo", reference_free=True)(**t)
    zero = get_loss("dpo")(**{**t, "ref_chosen_logps": torch.zeros(5), "ref_rejected_logps": torch.zeros(5)})
    assert close(free.loss, zero.loss)
    for k in zero.metrics:
        assert close(free.metrics[k], zero.metrics[k])
    # and it runs without any reference
    none = get_loss("dpo", reference_free=True)(**{**t, "ref_chosen_logps": None, "ref_rejected_logps": None})
    assert close(none.loss, zero.loss)


# ----------------------------------------------------------------------------- gradient signs
@pytest.mark.parametrize(
    "name,hp",
    [("dpo", {}), ("robust", {}), ("ipo", {}), ("ipo", {"length_norm": "sum"}), ("hinge", {}), ("rpo", {})],
)
def test_gradient_signs(name, hp):
    """d loss/d S_w < 0 and d loss/d S_l > 0. The hand-worked pair keeps IPO below its target
    (h = 4 < 1/(2*0.1) = 5 summed; h_bar = 2/3 + 2/5 < 5 mean) and hinge active (beta*h = 0.4 < 1)."""
    t = pair(lw=3.0, ll=5.0)
    t["chosen_logps"].requires_grad_(True)
    t["rejected_logps"].requires_grad_(True)
    get_loss(name, **hp)(**t).loss.sum().backward()
    assert t["chosen_logps"].grad.item() < 0
    assert t["rejected_logps"].grad.item() > 0


# ----------------------------------------------------------------------------- IPO
def test_ipo_hand_worked_mean_and_sum():
    """beta = 0.1 -> target 1/(2 beta) = 5.
    sum  (eric-mitchell): h = 4                                 -> (4 - 5)^2   = 1.
    mean (TRL), |y_w| = 2, |y_l| = 4: h = 2/2 - (-2)/4 = 1.5    -> (1.5 - 5)^2 = 12.25."""
    t = pair(lw=2.0, ll=4.0)
    assert get_loss("ipo", length_norm="sum")(**t).loss.item() == pytest.approx(1.0, abs=1e-5)
    assert get_loss("ipo", length_norm="mean")(**t).loss.item() == pytest.approx(12.25, abs=1e-5)
    assert get_loss("ipo")(**t).loss.item() == pytest.approx(12.25, abs=1e-5)  # default is mean


def test_ipo_conventions_agree_on_unit_lengths_and_differ_otherwise():
    t = random_batch(6)
    ones = {**t, "chosen_lengths": torch.ones(6), "rejected_lengths": torch.ones(6)}
    assert close(
        get_loss("ipo", length_norm="mean")(**ones).loss, get_loss("ipo", length_norm="sum")(**ones).loss
    )
    t["chosen_lengths"] = torch.tensor([2.0, 3, 4, 5, 6, 7])
    t["rejected_lengths"] = torch.tensor([9.0, 8, 7, 6, 5, 4])
    mean, summ = get_loss("ipo", length_norm="mean")(**t).loss, get_loss("ipo", length_norm="sum")(**t).loss
    assert not torch.allclose(mean, summ)


def test_ipo_rejects_unknown_length_norm():
    with pytest.raises(ValueError, match="length_norm"):
        get_loss("ipo", length_norm="max")


# ----------------------------------------------------------------------------- hinge
def test_hinge_hand_worked_and_flat_beyond_margin():
    """beta = 0.1, h = 4: max(0, 1 - 0.4) = 0.6.  With S_w = -2 (h = 12, beta*h = 1.2) or
    S_w = -4 (h = 10, beta*h = 1 exactly) the loss is 0 and so is its gradient."""
    assert get_loss("hinge")(**pair()).loss.item() == pytest.approx(0.6, abs=1e-6)
    for s_w in (-2.0, -4.0):
        t = pair(chosen_logps=[s_w])
        t["chosen_logps"].requires_grad_(True)
        t["rejected_logps"].requires_grad_(True)
        out = get_loss("hinge")(**t)
        assert out.loss.item() == 0.0
        out.loss.sum().backward()
        assert t["chosen_logps"].grad.item() == 0.0
        assert t["rejected_logps"].grad.item() == 0.0


# ----------------------------------------------------------------------------- RPO
def test_rpo_hand_worked():
    """|y_w| = 5: NLL = -(-10)/5 = 2.  alpha = 1: 0.513015 + 2 = 2.513015; alpha = 0.5: 1.513015."""
    t = pair(lw=5.0)
    out = get_loss("rpo", nll_weight=1.0)(**t)
    assert out.loss.item() == pytest.approx(SP_NEG + 2.0, abs=1e-5)
    assert out.metrics["nll/chosen"].item() == pytest.approx(2.0)
    assert get_loss("rpo", nll_weight=0.5)(**t).loss.item() == pytest.approx(SP_NEG + 1.0, abs=1e-5)


def test_rpo_is_dpo_plus_alpha_nll():
    t = random_batch(7)
    for alpha in (0.0, 0.3, 1.0, 2.5):
        rpo = get_loss("rpo", beta=0.2, nll_weight=alpha)(**t)
        dpo = get_loss("dpo", beta=0.2)(**t)
        nll = -t["chosen_logps"] / t["chosen_lengths"]
        assert close(rpo.loss, dpo.loss + alpha * nll)
        for k in dpo.metrics:
            assert close(rpo.metrics[k], dpo.metrics[k])


def test_per_example_loss_is_separable():
    """Each example's loss depends only on its own row (gradient accumulation is exact)."""
    t = random_batch(6)
    for name in ("dpo", "robust", "ipo", "hinge", "rpo"):
        full = get_loss(name)(**t).loss
        halves = [get_loss(name)(**{k: v[s] for k, v in t.items()}).loss for s in (slice(0, 3), slice(3, 6))]
        assert close(full, torch.cat(halves))
