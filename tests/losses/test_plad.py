"""PLaD calibration losses: hand-worked values, hinge behaviour, normalisation, gradients, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bound import bound
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.losses import get_loss

plad_rank, plad_margin = bound("plad_rank"), bound("plad_margin")
METHOD_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"


def _pair(chosen, rejected, lc, lr, grad=True):
    t = lambda v: torch.tensor(v, dtype=torch.float32, requires_grad=grad)  # noqa: E731
    return {
        "chosen_logps": t(chosen),
        "rejected_logps": t(rejected),
        "chosen_lengths": torch.tensor(lc),
        "rejected_lengths": torch.tensor(lr),
    }


def test_rank_hand_worked_inside_margin_mean_and_sum():
    """S⁺ = −10 over 5 tokens, S⁻ = −6 over 2 tokens.

    mean: L⁺ = −2, L⁻ = −3; margin 1.5 -> max(0, 1.5 + 2 − 3) = 0.5,
          dL/dS⁺ = −1/5 = −0.2, dL/dS⁻ = +1/2 = 0.5.
    sum:  L⁺ = −10, L⁻ = −6; margin 1.0 -> max(0, 1 + 10 − 6) = 5.
    """
    x = _pair([-10.0], [-6.0], [5], [2])
    out = plad_rank(**x, margin=1.5, length_norm="mean")
    assert out.loss.item() == pytest.approx(0.5)
    out.loss.sum().backward()
    assert x["chosen_logps"].grad.item() == pytest.approx(-0.2)
    assert x["rejected_logps"].grad.item() == pytest.approx(0.5)
    assert out.metrics["reward/chosen"].item() == pytest.approx(-2.0)
    assert out.metrics["reward/margin"].item() == pytest.approx(1.0)
    assert out.metrics["reward/accuracy"].item() == 1.0

    x = _pair([-10.0], [-6.0], [5], [2])
    out = plad_rank(**x, margin=1.0, length_norm="sum")
    assert out.loss.item() == pytest.approx(5.0)
    assert out.metrics["reward/accuracy"].item() == 0.0


def test_rank_zero_beyond_margin_with_zero_gradient():
    """L⁺ = −1, L⁻ = −3 (mean), margin 1: 1 + 1 − 3 = −1 < 0 -> loss 0, gradient 0."""
    x = _pair([-4.0], [-9.0], [4], [3])
    out = plad_rank(**x, margin=1.0)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert x["chosen_logps"].grad.item() == 0.0
    assert x["rejected_logps"].grad.item() == 0.0


def test_mean_vs_sum_differ_by_lengths():
    x = _pair([-3.0, -8.0], [-5.0, -2.0], [3, 4], [5, 1], grad=False)
    mean = plad_rank(**x, margin=0.25, length_norm="mean").loss
    summ = plad_rank(**x, margin=0.25, length_norm="sum").loss
    lc, lr = x["chosen_lengths"].float(), x["rejected_lengths"].float()
    ref_mean = torch.relu(0.25 - x["chosen_logps"] / lc + x["rejected_logps"] / lr)
    ref_sum = torch.relu(0.25 - x["chosen_logps"] + x["rejected_logps"])
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(summ, ref_sum)
    assert not torch.allclose(mean, summ)
    with pytest.raises(ValueError, match="length_norm"):
        plad_rank(**x, length_norm="token")


def test_nll_weight_adds_normalised_nll_of_chosen():
    """nll_weight 0.5, L⁺ = −2 (mean): loss = hinge + 0.5·2 = hinge + 1."""
    x = _pair([-10.0], [-6.0], [5], [2], grad=False)
    base = plad_rank(**x, margin=1.5).loss
    withnll = plad_rank(**x, margin=1.5, nll_weight=0.5).loss
    assert (withnll - base).item() == pytest.approx(1.0)


def test_margin_reduces_to_rank_when_score_gap_is_one():
    torch.manual_seed(0)
    x = _pair(torch.randn(6).tolist(), torch.randn(6).tolist(), [3] * 6, [4] * 6, grad=False)
    s_minus = torch.randn(6)
    rank = plad_rank(**x, margin=0.7)
    marg = plad_margin(**x, chosen_scores=s_minus + 1.0, rejected_scores=s_minus, margin=0.7)
    torch.testing.assert_close(marg.loss, rank.loss)


def test_margin_hand_worked():
    """margin 1, s⁺ − s⁻ = 0.9 − 0.4 = 0.5; L⁺ = −2, L⁻ = −2.2 -> 0.5 + 2 − 2.2 = 0.3."""
    x = _pair([-4.0], [-6.6], [2], [3], grad=False)
    out = plad_margin(**x, chosen_scores=torch.tensor([0.9]), rejected_scores=torch.tensor([0.4]))
    assert out.loss.item() == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError, match="chosen_scores"):
        plad_margin(**x)


def test_gradient_only_into_student_logps():
    x = _pair([-4.0, -1.0], [-6.6, -9.0], [2, 2], [3, 3])
    s_plus = torch.tensor([0.9, 0.2], requires_grad=True)
    s_minus = torch.tensor([0.1, 0.3], requires_grad=True)
    out = plad_margin(**x, chosen_scores=s_plus, rejected_scores=s_minus, margin=5.0)
    out.loss.sum().backward()
    assert s_plus.grad is None and s_minus.grad is None
    assert x["chosen_logps"].grad.abs().sum() > 0
    assert all(not m.requires_grad for m in out.metrics.values())
    assert all(m.shape == (2,) for m in out.metrics.values())


@pytest.mark.parametrize("name", ["plad_rank", "plad_margin"])
def test_config_instantiates_and_runs(name):
    loss = instantiate(OmegaConf.load(METHOD_DIR / f"{name}.yaml"))
    assert loss.name == name and loss.kind == "pairwise"
    assert loss.hparams == get_loss(name).hparams  # the YAML spells out the code defaults
    assert "rejected" in loss.needs and ("scores" in loss.needs) == (name == "plad_margin")
    b = 3
    x = _pair(torch.randn(b).tolist(), torch.randn(b).tolist(), [4] * b, [5] * b, grad=False)
    if "scores" in loss.needs:
        x.update(chosen_scores=torch.rand(b), rejected_scores=torch.rand(b))
    out = loss(**x)
    assert out.loss.shape == (b,) and torch.isfinite(out.loss).all()
