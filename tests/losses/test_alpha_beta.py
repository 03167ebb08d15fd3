"""ABKD's α-β-divergence: its named special cases, a hand-worked value, continuity at the edges, the released form.

Hand-worked (one position, p = (¾, ¼), q = (½, ½)), α = β = ½:
    D = −4·Σ(√(p q) − ½p − ½q) = 4·(1 − √(3/8) − √(1/8)) = 4·(1 − 0.612372 − 0.353553) = 0.136297
which is 2·Σ(√p − √q)², four times the squared Hellinger distance.
"""

from __future__ import annotations

import pytest
import torch
from conformance import token_case

from prefdistill.losses import get_loss
from prefdistill.losses.alpha_beta import ab_divergence


def _inputs(seed=0):
    """Random token inputs (conformance's case: contiguous responses after a prompt)."""
    case = token_case("random", seed=seed, second=False).tensors
    return {k: case[k] for k in ("student_logits", "teacher_logits", "mask", "labels")}


def test_hand_worked_half_half_is_four_times_the_squared_hellinger_distance():
    x = {"student_logits": torch.zeros(1, 1, 2), "teacher_logits": torch.log(torch.tensor([[[0.75, 0.25]]])),
         "mask": torch.ones(1, 1, dtype=torch.bool), "labels": torch.zeros(1, 1, dtype=torch.long)}  # fmt: skip
    assert get_loss("abkd")(**x).loss.item() == pytest.approx(0.136297, abs=1e-6)


def test_one_zero_is_forward_kl_and_zero_one_is_reverse_kl():
    x = _inputs()
    assert torch.allclose(
        get_loss("abkd", alpha=1.0, beta=0.0)(**x).loss, get_loss("kd_fkl")(**x).loss, atol=1e-6
    )
    assert torch.allclose(
        get_loss("abkd", alpha=0.0, beta=1.0)(**x).loss, get_loss("kd_rkl")(**x).loss, atol=1e-6
    )
    # the released code agrees at these two points (its edge scaling 1/α, 1/β is 1 there)
    released = get_loss("abkd", alpha=1.0, beta=0.0, edge_form="released")(**x).loss
    assert torch.allclose(released, get_loss("kd_fkl")(**x).loss, atol=1e-6)


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.0), (0.0, 0.3), (0.0, 0.0)])
def test_the_edges_are_the_limits_of_the_general_formula(alpha, beta):
    g = torch.Generator().manual_seed(1)
    lp, lq = (
        torch.log_softmax(torch.randn(4, 7, generator=g), -1),
        torch.log_softmax(torch.randn(4, 7, generator=g), -1),
    )
    near = ab_divergence(
        lp.double(), lq.double(), alpha=alpha + 1e-5, beta=beta + 1e-5, edge_form="continuous"
    )
    edge = ab_divergence(lp.double(), lq.double(), alpha=alpha, beta=beta, edge_form="continuous")
    assert torch.allclose(near, edge, rtol=1e-3)


def test_the_released_edge_form_divides_by_alpha_not_alpha_squared():
    g = torch.Generator().manual_seed(2)
    lp, lq = (
        torch.log_softmax(torch.randn(4, 7, generator=g), -1),
        torch.log_softmax(torch.randn(4, 7, generator=g), -1),
    )
    for alpha, beta, power in ((0.5, 0.0, 0.5), (0.0, 0.25, 0.25)):
        continuous = ab_divergence(lp, lq, alpha=alpha, beta=beta, edge_form="continuous")
        released = ab_divergence(lp, lq, alpha=alpha, beta=beta, edge_form="released")
        assert torch.allclose(released, power * continuous, rtol=1e-5)
    general = {"alpha": 0.3, "beta": 0.6}  # away from the edges both forms are the same formula
    assert torch.equal(ab_divergence(lp, lq, **general, edge_form="released"),
                       ab_divergence(lp, lq, **general, edge_form="continuous"))  # fmt: skip


def test_the_divergence_is_zero_at_p_equals_q_and_positive_elsewhere():
    x = _inputs()
    same = {**x, "teacher_logits": x["student_logits"].clone()}
    for alpha, beta in ((0.5, 0.5), (0.2, 0.7), (1.0, 0.0), (0.0, 0.0), (1.5, 0.5)):
        assert torch.allclose(
            get_loss("abkd", alpha=alpha, beta=beta)(**same).loss, torch.zeros(3), atol=1e-6
        )
        assert (get_loss("abkd", alpha=alpha, beta=beta)(**x).loss > 0).all()


def test_negative_powers_and_unknown_forms_are_refused():
    with pytest.raises(ValueError, match="alpha must be 0 or >= 0.001"):
        get_loss("abkd", alpha=-0.5)
    with pytest.raises(ValueError, match="beta must be 0 or >= 0.001"):
        get_loss("abkd", beta=1e-5)
    with pytest.raises(ValueError, match="edge_form"):
        get_loss("abkd", edge_form="paper")
    with pytest.raises(ValueError, match="no effect"):  # both powers non-zero: no edge to change
        get_loss("abkd", alpha=0.3, beta=0.6, edge_form="released")
