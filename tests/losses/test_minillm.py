"""MiniLLM loss: hand-worked returns, policy-gradient values and gradients, clipping, importance weights."""

from __future__ import annotations

import math

import torch

from prefdistill.losses import get_loss
from prefdistill.losses.minillm import future_returns


def test_future_returns_discounted_and_length_normalised():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    m = torch.ones(1, 3)
    # t=0: (2 + 0.5*3) / 2 future tokens; t=1: 3 / 1; t=2: no future -> 0
    torch.testing.assert_close(future_returns(r, m, 0.5, True), torch.tensor([[1.75, 3.0, 0.0]]))
    torch.testing.assert_close(future_returns(r, m, 1.0, False), torch.tensor([[5.0, 3.0, 0.0]]))
    # prompt / padding positions (mask 0) neither contribute rewards nor count as future tokens
    r2, m2 = torch.tensor([[9.0, 2.0, 3.0, 9.0]]), torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    out = future_returns(r2, m2, 0.5, True)
    torch.testing.assert_close(out[0, 1:3], torch.tensor([3.0, 0.0]))


def _case():
    # B=1, T=2, V=2; student uniform; teacher uniform at t=0, [0.25, 0.75] at t=1; sampled y = [0, 1]
    student = torch.zeros(1, 2, 2, requires_grad=True)
    teacher = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]], requires_grad=True)
    return student, teacher, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0, 1]])


def test_policy_gradient_value_and_gradient_by_hand():
    student, teacher, mask, labels = _case()
    loss = get_loss("minillm", reward_scale=1.0, single_step=False)
    out = loss(student_logits=student, teacher_logits=teacher, mask=mask, labels=labels)
    a0 = math.log(0.75 / 0.5)  # A_0 = r_1 = log p(y_1) - log q(y_1); A_1 = 0 (no future)
    torch.testing.assert_close(out.loss, torch.tensor([-a0 / 2]))  # token mean of -A_t * ratio, ratio = 1
    out.loss.sum().backward()
    # d/dz of -A_0/2 * q(y_0)/q_old(y_0) = -A_0/2 * (onehot(y_0) - q_0); nothing at t=1
    torch.testing.assert_close(student.grad[0, 0], torch.tensor([-a0 / 4, a0 / 4]))
    torch.testing.assert_close(student.grad[0, 1], torch.zeros(2))
    assert teacher.grad is None  # only the student learns
    torch.testing.assert_close(out.metrics["minillm/reward"], torch.tensor([a0 / 2]))


def test_single_step_term_is_the_exact_reverse_kl():
    student, teacher, mask, labels = _case()
    out = get_loss("minillm")(student_logits=student, teacher_logits=teacher, mask=mask, labels=labels)
    kl_t1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(q || p) at t=1; 0 at t=0
    torch.testing.assert_close(out.metrics["minillm/reverse_kl"], torch.tensor([kl_t1 / 2]))
    torch.testing.assert_close(out.loss, out.metrics["minillm/pg"] + out.metrics["minillm/reverse_kl"])


def test_clipping_stops_the_gradient_of_a_too_large_ratio():
    student, teacher, mask, labels = _case()
    loss = get_loss("minillm", reward_scale=1.0, single_step=False, clip=0.2)
    old = torch.full((1, 2), math.log(0.5) - 1.0)  # ratio = e > 1.2 and A_0 > 0: clipped
    out = loss(student_logits=student, teacher_logits=teacher, mask=mask, labels=labels, sample_logps=old)
    a0 = math.log(0.75) - (math.log(0.5) - 1.0)  # rewards use the sampling policy's log-probs
    torch.testing.assert_close(out.loss, torch.tensor([-a0 * 1.2 / 2]))
    out.loss.sum().backward()
    torch.testing.assert_close(student.grad, torch.zeros_like(student))


def test_importance_weight_of_teacher_mixed_sampling():
    student, teacher, mask, labels = _case()
    loss = get_loss("minillm", reward_scale=1.0, single_step=False, clip=10.0)
    q_old = torch.full((1, 2), math.log(0.5))
    proposal = q_old - math.log(2.0)  # p~(y) = q(y) / 2  ->  w = 2
    out = loss(
        student_logits=student, teacher_logits=teacher, mask=mask, labels=labels, proposal_logps=proposal
    )
    a0 = math.log(0.75 / 0.5)
    torch.testing.assert_close(out.loss, torch.tensor([-2 * a0 / 2]))
    same = loss(
        student_logits=student, teacher_logits=teacher, mask=mask, labels=labels, proposal_logps=q_old
    )
    torch.testing.assert_close(same.loss, torch.tensor([-a0 / 2]))  # proposal == policy: w = 1
