"""TAID: the interpolated target at the ends of t, the schedule update worked by hand, the paper's and the code's
objective.

Hand-worked update (t_start 0.4, t_end 1, α = 5e-4, β = 0.99) from t = 0.4, J_prev = 2, m = 0, with J = 1:
    δ = (2 − 1)/2 = 0.5;  m = 0.99·0 + 0.01·0.5 = 0.005;  Δt = 5e-4·sigmoid(0.005)·(1 − 0.4) = 1.503750e-4
    progress 0:    t = max(0.4, 0.4 + Δt)                  = 0.40015037
    progress 0.5:  t = max(0.4 + 0.6·0.5, 0.4 + Δt)        = 0.7   (the linear schedule is a floor)
    adaptive off, progress 0.25:  t = 0.4 + 0.6·0.25      = 0.55
"""

from __future__ import annotations

import math

import pytest
import torch
from conformance import token_case

from prefdistill.losses import get_loss
from prefdistill.losses.taid import next_state

SCHEDULE = {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "adaptive": True}


def _state(t=0.4, prev=2.0, momentum=0.0):
    return {"t": torch.tensor(t), "prev_loss": torch.tensor(prev), "momentum": torch.tensor(momentum)}


def _inputs(seed=0):
    """Random token inputs (conformance's case: contiguous responses after a prompt), student logits differentiable."""
    case = token_case("random", seed=seed, second=False).tensors
    inputs = {k: case[k] for k in ("student_logits", "teacher_logits", "mask", "labels")}
    return {**inputs, "student_logits": inputs["student_logits"].requires_grad_()}


def test_hand_worked_schedule_update():
    new = next_state(_state(), torch.tensor(1.0), 0.0, **SCHEDULE)
    assert new["momentum"].item() == pytest.approx(0.005)
    assert new["t"].item() == pytest.approx(0.4 + 5e-4 / (1 + math.exp(-0.005)) * 0.6, abs=1e-7)
    assert new["t"].item() == pytest.approx(0.40015037, abs=1e-7)
    assert new["prev_loss"].item() == 1.0
    assert next_state(_state(), torch.tensor(1.0), 0.5, **SCHEDULE)["t"].item() == pytest.approx(0.7)
    linear = next_state(_state(), torch.tensor(1.0), 0.25, **{**SCHEDULE, "adaptive": False})
    assert linear["t"].item() == pytest.approx(0.55)
    capped = next_state(
        _state(t=0.99999, momentum=50.0), torch.tensor(1.0), 1.0, **{**SCHEDULE, "alpha": 1.0}
    )
    assert capped["t"].item() <= 1.0


def test_the_first_batch_only_remembers_its_objective():
    new = next_state(_state(prev=math.inf), torch.tensor(1.5), 0.9, **SCHEDULE)
    assert (new["t"].item(), new["prev_loss"].item(), new["momentum"].item()) == (
        pytest.approx(0.4),
        1.5,
        0.0,
    )


def test_t_1_is_forward_kl_and_t_0_is_the_student_itself():
    x = _inputs()
    at_teacher = get_loss("taid")(**x, state=_state(t=1.0))
    assert torch.allclose(at_teacher.loss, get_loss("kd_fkl")(**x).loss, atol=1e-6)
    at_student = get_loss("taid")(**x, state=_state(t=0.0))
    assert torch.allclose(at_student.loss, torch.zeros(3), atol=1e-6)
    at_student.loss.sum().backward()
    assert torch.allclose(x["student_logits"].grad, torch.zeros_like(x["student_logits"]), atol=1e-6)


def test_a_call_uses_the_states_t_and_returns_the_updated_state():
    x = _inputs()
    out = get_loss("taid")(**x, state=_state(t=0.6, prev=5.0), progress=0.0)
    assert torch.allclose(out.metrics["taid/t"], torch.full((3,), 0.6))
    tokens = x["mask"].sum(-1).float()
    batch_objective = (out.metrics["kd/divergence"] * tokens).sum() / tokens.sum()  # the batch's token mean
    assert out.state["prev_loss"].item() == pytest.approx(batch_objective.item(), rel=1e-6)
    assert out.state["t"].item() > 0.6  # the objective fell from 5: t moved on
    first = get_loss("taid")(**x)  # no state given: the initial one (t_start, no J yet)
    assert first.metrics["taid/t"][0].item() == pytest.approx(0.4) and first.state[
        "t"
    ].item() == pytest.approx(0.4)


def test_the_released_cross_entropy_objective_has_the_same_gradient_but_another_value():
    grads, values = [], []
    for objective in ("kl", "cross_entropy"):
        x = _inputs()
        out = get_loss("taid", objective=objective)(**x, state=_state(t=0.7))
        out.loss.sum().backward()
        grads.append(x["student_logits"].grad)
        values.append(out.loss.detach())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert (values[1] > values[0]).all()  # the entropy of p_t (> 0) is the difference


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="t_start"):
        get_loss("taid", t_start=1.0)
    with pytest.raises(ValueError, match="t_end"):
        get_loss("taid", t_start=0.5, t_end=0.4)
    with pytest.raises(ValueError, match="objective"):
        get_loss("taid", objective="jsd")
    with pytest.raises(ValueError, match="adaptive=false turns off"):
        get_loss("taid", adaptive=False, alpha=1e-3)
    assert get_loss("taid").initial_state()["prev_loss"].item() == math.inf
