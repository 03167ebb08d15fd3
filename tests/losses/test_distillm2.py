"""DistiLLM-2: values by hand, conformance (value and gradient) with the formula, curriculum α, β schedule."""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import TokenInputs, get_loss
from prefdistill.losses.distillm2 import beta_at, curriculum_alpha

FIXED = dict(adaptive_alpha=False, beta_end=1.0)  # the released training configs: α = 0.1, β = 1


def _side(student, teacher, mask=None, labels=None) -> TokenInputs:
    mask = torch.ones(student.shape[:2], dtype=torch.bool) if mask is None else mask
    labels = torch.zeros(student.shape[:2], dtype=torch.long) if labels is None else labels
    return TokenInputs(student_logits=student, teacher_logits=teacher, mask=mask, labels=labels)


def _pair(teacher_side: TokenInputs, student_side: TokenInputs, progress=None) -> TokenInputs:
    names = ("student_logits", "mask", "labels", "teacher_logits")
    second = {f"rejected_{k}": getattr(student_side, k) for k in names}
    return TokenInputs(**{**vars(teacher_side), **second, "progress": progress})


def _log(*p) -> torch.Tensor:
    return torch.log(torch.tensor([[list(p)]]))


def test_value_by_hand_on_two_tokens():
    """p = (.5, .5), q = (.25, .75), α = .1.

    SKL:  mixture .1p + .9q = (.275, .725): .5·ln(.5/.275) + .5·ln(.5/.725) = 0.11311
    SRKL: mixture .9p + .1q = (.475, .525): .25·ln(.25/.475) + .75·ln(.75/.525) = 0.10704
    β = 1: loss = SKL + SRKL.
    """
    p, q = _log(0.5, 0.5), _log(0.25, 0.75)
    out = get_loss("distillm2", **FIXED)(_pair(_side(q, p), _side(q, p)))
    skl = 0.5 * math.log(0.5 / 0.275) + 0.5 * math.log(0.5 / 0.725)
    srkl = 0.25 * math.log(0.25 / 0.475) + 0.75 * math.log(0.75 / 0.525)
    torch.testing.assert_close(out.metrics["distillm2/skl"], torch.tensor([skl]))
    torch.testing.assert_close(out.metrics["distillm2/srkl"], torch.tensor([srkl]))
    torch.testing.assert_close(out.loss, torch.tensor([skl + srkl]))


def _reference(x: TokenInputs, alpha: float, beta: float) -> torch.Tensor:
    """The formula written out per token (explicit sums, stop-gradient in the reverse mixture)."""

    def mean_over_tokens(side, term):
        out = []
        for b in range(side.mask.shape[0]):
            terms = [term(side.teacher_logits[b, t].softmax(-1), side.student_logits[b, t].softmax(-1))
                     for t in range(side.mask.shape[1]) if side.mask[b, t]]  # fmt: skip
            out.append(torch.stack(terms).mean() if terms else torch.tensor(0.0))
        return torch.stack(out)

    skl = mean_over_tokens(x, lambda p, q: (p * (p / (alpha * p + (1 - alpha) * q)).log()).sum())
    srkl = mean_over_tokens(
        x.rejected_side(), lambda p, q: (q * (q / ((1 - alpha) * p + alpha * q.detach())).log()).sum()
    )
    return (2 - beta) * skl + beta * srkl


@pytest.mark.parametrize("beta", [1.0, 1.5])
def test_conformance_value_and_gradient_with_the_formula(beta):
    g = torch.Generator().manual_seed(0)

    def side(seed_mask):
        student = torch.randn(3, 4, 7, generator=g, requires_grad=True)
        mask = torch.rand(3, 4, generator=g) > seed_mask
        return _side(
            student, torch.randn(3, 4, 7, generator=g), mask, torch.randint(0, 7, (3, 4), generator=g)
        )

    x = _pair(side(0.3), side(0.5))
    loss = get_loss("distillm2", alpha=0.2, adaptive_alpha=False, beta_start=beta, beta_end=beta)
    out = loss(x)
    ref = _reference(x, 0.2, beta)
    torch.testing.assert_close(out.loss, ref)
    got = torch.autograd.grad(out.loss.sum(), [x.student_logits, x.rejected_student_logits])
    want = torch.autograd.grad(ref.sum(), [x.student_logits, x.rejected_student_logits])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_zero_for_the_teacher_itself_nonnegative_and_separable():
    g = torch.Generator().manual_seed(1)
    s_t, s_s = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    loss = get_loss("distillm2", **FIXED)
    same = loss(_pair(_side(s_t, s_t.clone()), _side(s_s, s_s.clone())))
    torch.testing.assert_close(same.loss, torch.zeros(4), atol=1e-6, rtol=0)
    x = _pair(_side(s_t, torch.randn(4, 3, 5, generator=g)), _side(s_s, torch.randn(4, 3, 5, generator=g)))
    full = loss(x).loss
    assert (full > 0).all()
    halves = [loss(_pair(_side(s_t[i], x.teacher_logits[i]), _side(s_s[i], x.rejected_teacher_logits[i]))).loss
              for i in (slice(0, 1), slice(1, 4))]  # fmt: skip
    torch.testing.assert_close(torch.cat(halves), full)


def test_curriculum_alpha_and_beta_schedule_by_hand():
    """α = clip(1 − .9·m/gap, .01, .1) with anchor m = .2: gap .3 -> .4 -> .1; .19 -> .05263; .1 -> −.8 -> .01."""
    got = curriculum_alpha(torch.tensor([0.3, 0.19, 0.1]), torch.tensor(0.2), 0.1)
    torch.testing.assert_close(got, torch.tensor([0.1, 1 - 0.9 * 0.2 / (0.19 + 1e-5), 0.01]))
    assert [beta_at(p, 1.0, 1.5, 0.5, "d") for p in (0.0, 0.25, 0.5, 1.0)] == [1.0, 1.25, 1.5, 1.5]
    with pytest.raises(ValueError, match="progress"):
        beta_at(None, 1.0, 1.5, 0.5, "distillm2")


def test_adaptive_alpha_anchors_on_the_first_batches_and_keeps_them_as_state():
    g = torch.Generator().manual_seed(2)
    x = _pair(_side(torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)),
              _side(torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)), progress=0.0)  # fmt: skip
    loss = get_loss("distillm2", anchor_steps=2)
    first = loss(x)  # no history: the batch's own mean gap is the anchor
    assert first.state["anchor_batches"] == 1
    p = x.teacher_logits.log_softmax(-1).gather(-1, x.labels[..., None])[..., 0].mean(-1).exp()
    q = x.student_logits.log_softmax(-1).gather(-1, x.labels[..., None])[..., 0].mean(-1).exp()
    torch.testing.assert_close(first.state["gap_teacher"], (p - q).mean())
    torch.testing.assert_close(
        first.metrics["distillm2/alpha_teacher"], curriculum_alpha(p - q, (p - q).mean(), 0.1)
    )
    second = loss(x, state=first.state)
    third = loss(x, state=second.state)
    assert second.state["anchor_batches"] == third.state["anchor_batches"] == 2  # frozen after anchor_steps
    torch.testing.assert_close(third.state["gap_teacher"], second.state["gap_teacher"])


def test_needs_the_student_responses_and_checks_settings():
    x = _side(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="rejected"):
        get_loss("distillm2")(x)
    assert get_loss("distillm2").needs == {"teacher", "token_logps", "rejected"}
    with pytest.raises(ValueError, match="alpha"):
        get_loss("distillm2", alpha=0.0)
    with pytest.raises(ValueError, match="anchor_steps"):
        get_loss("distillm2", anchor_steps=0)
