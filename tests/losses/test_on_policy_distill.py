"""OPD: per-token reverse KL on the student's own tokens (GKD λ = 1, β = 1), IW-OPD weights, the sampled estimator.

Hand-worked example (one response, two positions, vocabulary of two, student logits 0 so q = (½, ½); the sampled
token is 0 at both positions):

    position 1: p = (¾, ¼)    KL(q ‖ p) = ½·log(½/¾) + ½·log(½/¼) = ½·log(4/3) = 0.143841
                              A_1 = log p(0) − log q(0) = log(3/2) = 0.405465
    position 2: p = (¼, ¾)    KL(q ‖ p) = ½·log(4/3) (the same, by symmetry);  A_2 = log(½) = −0.693147

    unweighted, full:     (0.143841 + 0.143841) / 2 = 0.143841
    IW-OPD, γ = ½:        Σ|A| = log 3;  w_1 = 1 + ½·(1 − 0) = 1.5;  w_2 = 1 + ½·(1 − log(3/2)/log 3) = 1.315465
                          loss = (1.5 + 1.315465)·0.143841 / 2 = 0.202490
    sampled:              ℓ_t = −A_t·log ½ = A_t·log 2  ->  (0.405465 − 0.693147)·0.693147 / 2 = −0.099703
"""

from __future__ import annotations

import math

import pytest
import torch
from conformance import token_case

from prefdistill.losses import get_loss
from prefdistill.losses.on_policy_distill import iw_opd_weights


def _worked(**hp):
    teacher = torch.log(torch.tensor([[[0.75, 0.25], [0.25, 0.75]]]))
    inputs = {"student_logits": torch.zeros(1, 2, 2, requires_grad=True), "teacher_logits": teacher,
              "mask": torch.ones(1, 2, dtype=torch.bool), "labels": torch.zeros(1, 2, dtype=torch.long)}  # fmt: skip
    return get_loss("opd", **hp)(**inputs)


def test_hand_worked_values():
    kl = 0.5 * math.log(4 / 3)
    out = _worked()
    assert out.loss.item() == pytest.approx(0.143841, abs=1e-6)
    assert out.metrics["opd/advantage"].item() == pytest.approx((math.log(1.5) - math.log(2)) / 2, rel=1e-6)
    w2 = 1 + 0.5 * (1 - math.log(1.5) / math.log(3))
    assert w2 == pytest.approx(1.315465, rel=1e-6)
    weighted = _worked(iw_gamma=0.5)
    assert weighted.loss.item() == pytest.approx(0.202490, abs=1e-6)
    assert weighted.metrics["opd/weight"].item() == pytest.approx((1.5 + w2) / 2, rel=1e-6)
    assert weighted.metrics["opd/reverse_kl"].item() == pytest.approx(kl, rel=1e-6)  # unweighted
    sampled = _worked(estimator="sampled")
    assert sampled.loss.item() == pytest.approx(-0.099703, abs=1e-6)


def _random(seed=0):
    """Random token inputs (conformance's case: contiguous responses after a prompt), student logits differentiable."""
    case = token_case("random", seed=seed, second=False).tensors
    inputs = {k: case[k] for k in ("student_logits", "teacher_logits", "mask", "labels")}
    return {**inputs, "student_logits": inputs["student_logits"].requires_grad_()}


def test_opd_is_gkd_with_beta_1_and_the_reverse_kl_of_kd_rkl():
    inputs = _random()
    opd = get_loss("opd")(**inputs).loss
    assert torch.allclose(opd, get_loss("kd_rkl")(**inputs).loss, atol=1e-6)
    assert torch.allclose(opd, get_loss("kd_jsd", beta=1.0)(**inputs).loss, atol=1e-6)
    assert torch.allclose(
        get_loss("opd", temperature=2.0)(**inputs).loss * 4,
        get_loss("kd_rkl", temperature=2.0)(**inputs).loss,
        atol=1e-6,
    )


def test_the_sampled_estimator_has_the_gradient_of_the_reverse_kl_in_expectation():
    """Σ_y q(y)·∇ℓ(y) over every token y the student could sample equals ∇ KL(q ‖ p) (one position)."""
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(1, 1, 6, generator=g), torch.randn(1, 1, 6, generator=g)
    mask = torch.ones(1, 1, dtype=torch.bool)

    def grad(estimator, label):
        logits = student.clone().requires_grad_()
        get_loss("opd", estimator=estimator)(student_logits=logits, teacher_logits=teacher, mask=mask,
                                             labels=torch.tensor([[label]])).loss.sum().backward()  # fmt: skip
        return logits.grad

    q = student.softmax(-1)[0, 0]
    expected = sum(q[y] * grad("sampled", y) for y in range(6))
    assert torch.allclose(expected, grad("full", 0), atol=1e-6)
    assert not torch.allclose(grad("sampled", 0), grad("full", 0), atol=1e-3)  # one sample alone is noisy


def test_iw_opd_weights_start_at_1_plus_gamma_fall_with_the_prefix_and_stay_at_least_1():
    abs_adv = torch.tensor([[0.5, 1.0, 0.0, 2.0, 0.0]])  # the last position is outside the response
    w = iw_opd_weights(abs_adv, 0.5)
    assert w[0, 0].item() == pytest.approx(1.5)
    assert torch.allclose(
        w[0, :4], torch.tensor([1.5, 1.5 - 0.5 * 0.5 / 3.5, 1.5 - 0.5 * 1.5 / 3.5, 1.5 - 0.5 * 1.5 / 3.5])
    )
    assert (w[0, 1:4] <= w[0, :3]).all() and (w >= 1.0).all()
    assert torch.equal(
        iw_opd_weights(torch.zeros(1, 3), 0.5), torch.full((1, 3), 1.5)
    )  # teacher = student: flat


def test_reused_rollouts_take_the_sampling_policy_log_probs_as_q_old():
    inputs = _random()
    fresh = get_loss("opd", estimator="sampled", iw_gamma=0.5)(**inputs)
    old = get_loss("opd", estimator="sampled", iw_gamma=0.5)(**inputs, sample_logps=torch.full((3, 5), -2.0))
    assert not torch.allclose(fresh.loss, old.loss)
    assert not torch.allclose(fresh.metrics["opd/advantage"], old.metrics["opd/advantage"])


def test_bad_settings_and_missing_inputs_are_refused():
    with pytest.raises(ValueError, match="estimator"):
        get_loss("opd", estimator="exact")
    with pytest.raises(ValueError, match="iw_gamma"):
        get_loss("opd", iw_gamma=-0.1)
    inputs = _random()
    with pytest.raises(ValueError, match="teacher_logits"):
        get_loss("opd")(**{**inputs, "teacher_logits": None})
    assert get_loss("opd").needs == {"teacher", "token_logps", "policy_samples"}
