"""SKD's loss: token KD with the chosen divergence, and the released code's JSD worked by hand.

Hand-worked ``jsd_released`` (one position, p = (¾, ¼), q = (½, ½), m = (⅝, ⅜)):
    KL(m ‖ p) = ⅝·log(5/6) + ⅜·log(3/2) = 0.038098;  KL(m ‖ q) = ⅝·log(5/4) + ⅜·log(3/4) = 0.031584
    ½·(0.038098 + 0.031584) = 0.034841
"""

from __future__ import annotations

import pytest
import torch
from conformance import token_case

from prefdistill.losses import get_loss


def _inputs(seed=0):
    """Random token inputs (conformance's case: contiguous responses after a prompt)."""
    case = token_case("random", seed=seed, second=False).tensors
    return {k: case[k] for k in ("student_logits", "teacher_logits", "mask", "labels")}


def test_the_divergences_are_the_token_kd_ones():
    x = _inputs()
    assert torch.allclose(get_loss("skd")(**x).loss, get_loss("kd_fkl")(**x).loss)
    assert torch.allclose(get_loss("skd", divergence="rkl")(**x).loss, get_loss("kd_rkl")(**x).loss)
    assert torch.allclose(get_loss("skd", divergence="jsd")(**x).loss, get_loss("kd_jsd", beta=0.5)(**x).loss)
    mixed = get_loss("skd", kd_ratio=0.5)(**x)
    assert torch.allclose(mixed.loss, 0.5 * mixed.metrics["kd/divergence"] + 0.5 * mixed.metrics["kd/ce"])


def test_hand_worked_released_jsd():
    x = {"student_logits": torch.zeros(1, 1, 2), "teacher_logits": torch.log(torch.tensor([[[0.75, 0.25]]])),
         "mask": torch.ones(1, 1, dtype=torch.bool), "labels": torch.zeros(1, 1, dtype=torch.long)}  # fmt: skip
    assert get_loss("skd", divergence="jsd_released")(**x).loss.item() == pytest.approx(0.034841, abs=1e-6)
    assert get_loss("skd", divergence="jsd")(**x).loss.item() != pytest.approx(0.034841, abs=1e-4)


def test_it_declares_interleaved_samples_and_refuses_unknown_divergences():
    assert {"policy_samples", "speculative_samples", "teacher"} <= get_loss("skd").needs
    with pytest.raises(ValueError, match="divergence"):
        get_loss("skd", divergence="tvd")
