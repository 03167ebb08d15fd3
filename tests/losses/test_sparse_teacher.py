"""Sparse teachers in the token losses: the top-k + tail bucket and the sampled (RS-KD) estimator.

Hand-worked case (natural logs): teacher p = [0.5, 0.3, 0.15, 0.05], uniform student q = 1/4, k = 2.
  full   KL(p‖q) = 0.5 ln 2 + 0.3 ln 1.2 + 0.15 ln 0.6 + 0.05 ln 0.2          = 0.2441744
  top-k  renormalised on {0, 1}: p_S = [0.625, 0.375], q_S = [0.5, 0.5]
         KL = 0.625 ln 1.25 + 0.375 ln 0.75                                    = 0.0315839
  tail   on {0, 1, rest}: p = [0.5, 0.3, 0.2], q = [0.25, 0.25, 0.5]
         KL = 0.5 ln 2 + 0.3 ln 1.2 + 0.2 ln 0.4                               = 0.2180120  (<= full)
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from prefdistill.losses import get_loss
from prefdistill.modules.teacher_formats import TeacherFormat

P = torch.tensor([0.5, 0.3, 0.15, 0.05])
FULL, TOPK, TAIL = 0.2441744, 0.0315839, 0.2180120


def _call(loss: str, student: torch.Tensor, **teacher) -> torch.Tensor:
    """Per-example loss of one example whose positions are the rows of ``student`` (N, V)."""
    mask = torch.ones(1, student.shape[0], dtype=torch.bool)
    return get_loss(loss)(
        student_logits=student[None], mask=mask, **{k: v[None] for k, v in teacher.items()}
    ).loss


def test_hand_worked_topk_tail_and_full_kl():
    student = torch.zeros(1, 4)  # uniform
    lp = P.log()[None]
    full = _call("kd_fkl", student, teacher_logits=lp)
    topk = _call("kd_fkl", student, teacher_topk_logps=lp[:, :2], teacher_topk_ids=torch.tensor([[0, 1]]))
    tail = _call("kd_fkl", student, teacher_topk_logps=lp[:, :2], teacher_topk_ids=torch.tensor([[0, 1]]),
                 teacher_tail_logps=torch.tensor([math.log(0.2)]))  # fmt: skip
    assert full.item() == pytest.approx(FULL, abs=1e-6)
    assert topk.item() == pytest.approx(TOPK, abs=1e-6)
    assert tail.item() == pytest.approx(TAIL, abs=1e-6)


def test_tail_format_is_a_lower_bound_exact_with_the_whole_vocabulary_and_penalises_outside_mass():
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 40) * 2, torch.randn(6, 40)
    lp = torch.log_softmax(teacher, -1)
    full = _call("kd_fkl", student, teacher_logits=teacher)
    for k in (1, 5, 20):
        f = TeacherFormat("topk_tail", k, dtype=torch.float32).rows(lp, torch.zeros(6, dtype=torch.long))
        tail = _call("kd_fkl", student, teacher_topk_logps=f["logps"], teacher_topk_ids=f["ids"],
                     teacher_tail_logps=f["tail_logps"])  # fmt: skip
        assert tail.item() <= full.item() + 1e-6
    f = TeacherFormat("topk_tail", 40, dtype=torch.float32).rows(lp, torch.zeros(6, dtype=torch.long))
    whole = _call("kd_rkl", student, teacher_topk_logps=f["logps"], teacher_topk_ids=f["ids"],
                  teacher_tail_logps=f["tail_logps"])  # fmt: skip
    torch.testing.assert_close(whole, _call("kd_rkl", student, teacher_logits=teacher), atol=1e-5, rtol=1e-5)
    # a student matching the teacher's top-k ratios but with mass elsewhere: top-k sees 0, the tail does not
    ids = torch.tensor([[0, 1]])
    shifted = torch.tensor([[math.log(0.5), math.log(0.3), 5.0, 5.0]])
    kw = {"teacher_topk_logps": P.log()[None, :2], "teacher_topk_ids": ids}
    assert _call("kd_fkl", shifted, **kw).item() == pytest.approx(0.0, abs=1e-6)
    assert _call("kd_fkl", shifted, **kw, teacher_tail_logps=torch.tensor([math.log(0.2)])).item() > 0.1


def _multinomial_outcomes(p: torch.Tensor, n: int):
    """Every count vector of n draws from p with its probability."""
    for draws in itertools.product(range(len(p)), repeat=n):
        counts = torch.bincount(torch.tensor(draws), minlength=len(p)).float()
        yield counts, float(torch.prod(p[list(draws)]))


def test_sampled_estimate_and_gradient_are_exactly_unbiased_over_every_outcome():
    """E over all 4^3 outcomes of 3 draws from p: the forward-KL estimate and its gradient equal the full ones."""
    student = torch.tensor([[0.3, -0.2, 1.0, 0.1]], requires_grad=True)
    full = _call("kd_fkl", student, teacher_logits=P.log()[None])
    (full_grad,) = torch.autograd.grad(full.sum(), student)
    expected, expected_grad, total = 0.0, torch.zeros(1, 4), 0.0
    for counts, prob in _multinomial_outcomes(P, 3):
        ids = torch.arange(4)[None]
        value = _call("kd_fkl", student, teacher_topk_logps=P.log()[None], teacher_topk_ids=ids,
                      teacher_sample_weights=(counts / 3)[None])  # fmt: skip
        (grad,) = torch.autograd.grad(value.sum(), student)
        expected += prob * value.item()
        expected_grad += prob * grad
        total += prob
    assert total == pytest.approx(1.0)
    assert expected == pytest.approx(full.item(), abs=1e-6)
    torch.testing.assert_close(expected_grad, full_grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss,proposal", [("kd_fkl", 1.0), ("kd_fkl", 1.5), ("kd_skl", 1.0)])
def test_stored_draws_average_to_the_full_divergence(loss, proposal):
    """Mean of 600 independent tables' estimates = full-vocabulary divergence within 4 standard errors, while
    the top-k estimate is far below it."""
    torch.manual_seed(1)
    teacher, student = torch.randn(5, 30) * 2, torch.randn(5, 30)
    lp = torch.log_softmax(teacher, -1)
    full = _call(loss, student, teacher_logits=teacher).item()
    estimates = []
    for seed in range(600):
        f = TeacherFormat("sampled", 8, seed=seed, proposal_temperature=proposal, dtype=torch.float32).rows(
            lp, torch.zeros(5, dtype=torch.long), torch.arange(5)
        )
        estimates.append(_call(loss, student, teacher_topk_logps=f["logps"], teacher_topk_ids=f["ids"],
                               teacher_sample_weights=f["weights"]).item())  # fmt: skip
    mean, se = torch.tensor(estimates).mean().item(), torch.tensor(estimates).std().item() / math.sqrt(600)
    assert abs(mean - full) < 4 * se + 1e-4, (mean, full, se)
    f = TeacherFormat("topk", 8, dtype=torch.float32).rows(lp, torch.zeros(5, dtype=torch.long))
    topk = _call(loss, student, teacher_topk_logps=f["logps"], teacher_topk_ids=f["ids"]).item()
    assert abs(topk - full) > 10 * se


def test_sampled_and_tail_refuse_what_they_cannot_estimate():
    ids, lp = torch.tensor([[0, 1]]), P.log()[None, :2]
    sampled = {
        "teacher_topk_logps": lp,
        "teacher_topk_ids": ids,
        "teacher_sample_weights": torch.tensor([[0.5, 0.5]]),
    }
    for loss in ("kd_rkl", "kd_jsd", "kd_tvd", "kd_srkl"):
        with pytest.raises(ValueError, match="not an expectation under the teacher"):
            _call(loss, torch.zeros(1, 4), **sampled)
    with pytest.raises(ValueError, match="temperature 1"):
        get_loss("kd_fkl", temperature=2.0)(student_logits=torch.zeros(1, 1, 4), mask=torch.ones(1, 1, dtype=torch.bool),
                                            **{k: v[None] for k, v in sampled.items()})  # fmt: skip
    assert get_loss("kd_fkl").teacher_formats == {"topk", "topk_tail", "sampled"}
    assert get_loss("kd_rkl").teacher_formats == {"topk", "topk_tail"}
    assert get_loss("distillm2").teacher_formats == {"topk"}
