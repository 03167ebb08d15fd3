"""ULD and the GOLD-style hybrid: values by hand on a 4-token vocabulary, spans, invariants."""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss

LOG = math.log


def _logits(*probs) -> torch.Tensor:
    """(1, T, V) logits whose softmax is ``probs`` at each position."""
    return torch.tensor([[[LOG(p) for p in row] for row in probs]], requires_grad=True)


Q = [0.1, 0.2, 0.3, 0.4]  # student at one position
P = [0.5, 0.25, 0.125, 0.125]  # teacher


def test_uld_by_hand_full_and_top2_teacher():
    """Sorted: p = (.5, .25, .125, .125), q = (.4, .3, .2, .1).

    Full vocabulary: |.5−.4| + |.25−.3| + |.125−.2| + |.125−.1| = .1 + .05 + .075 + .025 = 0.25.
    Teacher top-2 (.5, .25; rest .25) vs the student's top-2 (.4, .3; rest .3):
    .1 + .05 + |.25 − .3| = 0.2 (a lower bound of the full value).
    """
    uld = get_loss("uld", kd_ratio=1.0)
    mask = torch.tensor([[True]])
    full = uld(student_logits=_logits(Q), teacher_logits=torch.log(torch.tensor([[P]])), mask=mask)
    torch.testing.assert_close(full.loss, torch.tensor([0.25]))
    top2 = uld(
        student_logits=_logits(Q), mask=mask, teacher_topk_logps=torch.log(torch.tensor([[[0.5, 0.25]]])),
        teacher_topk_student_ids=torch.tensor([[[3, 0]]]), span_start=torch.tensor([[0]]),
        span_matched=torch.tensor([[False]]), teacher_span_logps=torch.zeros(1, 1),
    )  # fmt: skip
    torch.testing.assert_close(top2.loss, torch.tensor([0.2]))


def test_uld_merges_a_split_word_into_one_span_and_mixes_cross_entropy():
    """Student "Par"+"is" (positions 0, 1) vs teacher "Paris": one span headed at position 0.

    Student span: q(·|x) · q("is"|x, "Par") = (.1, .2, .3, .4) · 0.5 (label 1 at position 1 has q = .5).
    Teacher span: its top-4 (.5, .25, .125, .125), no later token. Sorted L1:
    |.5−.2| + |.25−.15| + |.125−.1| + |.125−.05| = .3 + .1 + .025 + .075 = 0.5; both rests are 0 (the
    student's span mass .5 is all in its four entries). D = 0.5 over 1 span. CE = −(log .4 + log .5)/2
    (labels 3 then 1). kd_ratio .6: .6·0.5 + .4·CE.
    """
    student = _logits(Q, [0.25, 0.5, 0.125, 0.125])
    kw = dict(
        student_logits=student, mask=torch.tensor([[True, True]]), labels=torch.tensor([[3, 1]]),
        teacher_topk_logps=torch.log(torch.tensor([[P, P]])), teacher_topk_student_ids=torch.full((1, 2, 4), -1),
        span_start=torch.tensor([[0, 0]]), span_matched=torch.tensor([[False, False]]),
        teacher_span_logps=torch.zeros(1, 2),
    )  # fmt: skip
    out = get_loss("uld", kd_ratio=0.6)(**kw)
    ce = -(LOG(0.4) + LOG(0.5)) / 2
    torch.testing.assert_close(out.metrics["kd/divergence"], torch.tensor([0.5]))
    torch.testing.assert_close(out.loss, torch.tensor([0.6 * 0.5 + 0.4 * ce]))
    assert out.metrics["align/coverage"].item() == 1.0 and out.metrics["align/matched"].item() == 0.0
    out.loss.sum().backward()
    assert student.grad[0, 1].abs().sum() > 0  # the later token's probability is trained through the span


def test_gold_uses_the_shared_vocabulary_kl_on_matched_spans_and_uld_elsewhere():
    """Position 0 matched: teacher top-3 (.5, .25, .125) on student ids (2, 0, -1): shared = ids 2, 0
    -> p = (2/3, 1/3); student renormalised on (2, 0): (.3, .1)/.4 = (.75, .25).
    KL = 2/3·log((2/3)/.75) + 1/3·log((1/3)/.25). Position 1 unmatched: ULD of the top-3 with rests."""
    kw = dict(
        student_logits=_logits(Q, Q), mask=torch.tensor([[True, True]]), labels=torch.tensor([[0, 0]]),
        teacher_topk_logps=torch.log(torch.tensor([[P[:3], P[:3]]])),
        teacher_topk_student_ids=torch.tensor([[[2, 0, -1], [2, 0, -1]]]), span_start=torch.tensor([[0, 1]]),
        span_matched=torch.tensor([[True, False]]), teacher_span_logps=torch.zeros(1, 2),
    )  # fmt: skip
    kl = 2 / 3 * LOG((2 / 3) / 0.75) + 1 / 3 * LOG((1 / 3) / 0.25)
    uld = 0.1 + 0.05 + 0.075 + abs(0.125 - 0.1)  # top-3 (.5,.25,.125) vs (.4,.3,.2); rests .125, .1
    out = get_loss("gold", matched_weight=2.0, unmatched_weight=0.5)(**kw)
    torch.testing.assert_close(out.loss, torch.tensor([(2.0 * kl + 0.5 * uld) / 2]))
    assert out.metrics["align/matched"].item() == 0.5


def test_with_one_tokenizer_gold_is_forward_kl_and_uld_is_zero_for_the_teacher_itself():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, 11, generator=g, requires_grad=True)
    teacher = torch.randn(3, 5, 11, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    labels = torch.randint(0, 11, (3, 5), generator=g)
    kw = dict(student_logits=student, teacher_logits=teacher, mask=mask, labels=labels)
    for ratio in (1.0, 0.5):
        fkl = get_loss("kd_fkl", kd_ratio=ratio)(**kw)
        torch.testing.assert_close(get_loss("gold", kd_ratio=ratio)(**kw).loss, fkl.loss)
    same = get_loss("uld", kd_ratio=1.0)(**{**kw, "teacher_logits": student.detach()})
    torch.testing.assert_close(same.loss, torch.zeros(3), atol=1e-6, rtol=0)
    assert (get_loss("uld", kd_ratio=1.0)(**kw).loss > 0).all()


def test_unaligned_positions_get_cross_entropy_only_and_bad_settings_fail():
    kw = dict(
        student_logits=_logits(Q, Q), mask=torch.tensor([[True, True]]), labels=torch.tensor([[3, 3]]),
        teacher_topk_logps=torch.log(torch.tensor([[P, P]])), teacher_topk_student_ids=torch.full((1, 2, 4), -1),
        span_start=torch.tensor([[-1, -1]]), span_matched=torch.tensor([[False, False]]),
        teacher_span_logps=torch.zeros(1, 2),
    )  # fmt: skip
    out = get_loss("uld", kd_ratio=0.5)(**kw)
    torch.testing.assert_close(out.loss, torch.tensor([0.5 * -LOG(0.4)]))  # D = 0: no span
    assert out.metrics["align/coverage"].item() == 0.0
    with pytest.raises(ValueError, match="kd_ratio"):
        get_loss("uld", kd_ratio=1.5)
    with pytest.raises(ValueError, match="matched_weight"):
        get_loss("gold", matched_weight=-1.0)
    with pytest.raises(ValueError, match="another vocabulary size"):
        get_loss("uld")(student_logits=_logits(Q), teacher_logits=torch.zeros(1, 1, 6), mask=torch.tensor([[True]]),
                        labels=torch.tensor([[0]]))  # fmt: skip
