"""KTO and BCO against their formulas: hand-worked values, and value + gradient of an independent float64
reference on random and edge-case inputs (equal responses, one-token completions, log-probs near −1e4).

References, written from the sources (not imported):

* KTO (Ethayarajh et al. 2024, arXiv 2402.01306; TRL ``trl/trainer/kto_trainer.py``): per row
  ``λ_y − v(x, y)`` with ``v = λ_D σ(β(ρ − z0))`` (desirable) or ``λ_U σ(β(z0 − ρ))`` (undesirable),
  ``ρ = S_θ − S_ref``, ``z0 = max(0, mean(S_θ(y'|x) − S_ref(y'|x)))`` over mismatched pairs, detached.
* BCO (Jung et al. 2024, arXiv 2404.04656; TRL ``trl/experimental/bco/bco_trainer.py``): per row
  ``−log σ(r − δ)`` (desirable) or ``−log σ(−(r − δ))`` (undesirable), ``r = β ρ``, δ the running mean
  of TRL's ``RunningMoments`` (count starts at 1e-24, updated with this batch first).
"""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import get_loss

RTOL = 1e-5


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def kto_reference(logps, ref, labels, kl, ref_kl, beta, w_d, w_u):
    """Row by row in float64 (autograd-able); z0 a detached Python float."""
    z0 = max(0.0, sum(float(a) - float(b) for a, b in zip(kl, ref_kl)) / len(kl))
    rows = []
    for s, s_ref, good in zip(logps, ref, labels):
        rho = s - s_ref
        if good:
            rows.append(w_d - w_d * torch.sigmoid(beta * (rho - z0)))
        else:
            rows.append(w_u - w_u * torch.sigmoid(beta * (z0 - rho)))
    return torch.stack(rows), z0


class RunningMomentsReference:
    """TRL's RunningMoments mean (Welford-style merge of batch moments), in float64."""

    def __init__(self):
        self.mean, self.count = 0.0, 1e-24

    def update(self, xs: list[float]) -> float:
        batch_mean = sum(xs) / len(xs)
        total = self.count + len(xs)
        self.mean += (batch_mean - self.mean) * len(xs) / total
        self.count = total
        return self.mean


def bco_reference(logps, ref, labels, beta, delta):
    rows = []
    for s, s_ref, good in zip(logps, ref, labels):
        r = beta * (s - s_ref)
        rows.append(-torch.nn.functional.logsigmoid(r - delta if good else -(r - delta)))
    return torch.stack(rows)


def _case(name: str, b: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(b, generator=g, dtype=torch.float64) * 40 - 1
    ref = logps + torch.randn(b, generator=g, dtype=torch.float64) * 5
    labels = torch.rand(b, generator=g) > 0.4
    kl = -torch.rand(b, generator=g, dtype=torch.float64) * 40 - 1
    ref_kl = kl - torch.randn(b, generator=g, dtype=torch.float64) * 3
    if name == "equal":  # policy == reference on every response: ρ = 0 and z0 = 0
        ref, ref_kl = logps.clone(), kl.clone()
    elif name == "one_token":  # one-token completions: log-probs of a single token, in (−10, 0)
        logps = -torch.rand(b, generator=g, dtype=torch.float64) * 10
        ref = -torch.rand(b, generator=g, dtype=torch.float64) * 10
    elif name == "near_minus_1e4":
        logps, ref = logps - 1e4, ref - 1e4
        kl, ref_kl = kl - 1e4, ref_kl - 1e4
    elif name == "negative_kl":  # the KL estimate is clamped at 0
        ref_kl = kl + 2.0
    elif name == "one_class":
        labels = torch.ones(b, dtype=torch.bool)
    # float32 inputs, as the module gives them; the reference reads the same numbers in float64
    return {
        "logps": logps.float(),
        "ref": ref.float(),
        "labels": labels,
        "kl": kl.float(),
        "ref_kl": ref_kl.float(),
    }


CASES = ["random", "equal", "one_token", "near_minus_1e4", "negative_kl", "one_class"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("hp", [{}, {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.7}])
def test_kto_value_and_gradient_match_the_formula(case, hp):
    c = _case(case)
    hparams = {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0, **hp}
    ours_in = c["logps"].clone().requires_grad_(True)
    kl_in = c["kl"].clone().requires_grad_(True)
    out = get_loss("kto", **hp)(
        logps=ours_in, labels=c["labels"], ref_logps=c["ref"], kl_logps=kl_in, ref_kl_logps=c["ref_kl"]
    )
    out.loss.sum().backward()
    ref_in = c["logps"].double().requires_grad_(True)
    expected, z0 = kto_reference(
        ref_in, c["ref"].double(), c["labels"].tolist(), c["kl"].double(), c["ref_kl"].double(),
        hparams["beta"], hparams["desirable_weight"], hparams["undesirable_weight"],
    )  # fmt: skip
    expected.sum().backward()
    torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=RTOL, atol=0)
    torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, rtol=RTOL, atol=1e-12)
    assert out.metrics["kl/reference"][0].item() == pytest.approx(z0, rel=RTOL, abs=1e-12)
    assert kl_in.grad is None  # z0 is detached: no gradient reaches the mismatched pairs
    if case == "equal":  # ρ = z0 = 0: every row costs λ_y (1 − σ(0)) = λ_y / 2
        w = torch.where(c["labels"], hparams["desirable_weight"], hparams["undesirable_weight"])
        torch.testing.assert_close(out.loss, w / 2)
    if case == "negative_kl":
        assert z0 == 0.0 and (out.metrics["kl/reference"] == 0).all()


def test_kto_hand_worked():
    """β = 0.1, ρ = [10, 10, −10], labels [D, U, U], mismatched ratios [1, 2, 3] -> z0 = 2:
    D: 1 − σ(0.1 (10 − 2)) = 1 − σ(0.8) = 0.310026; U: 1 − σ(0.1 (2 − 10)) = 1 − σ(−0.8) = 0.689974;
    U: 1 − σ(0.1 (2 + 10)) = 1 − σ(1.2) = 0.231475. Rewards βρ = [1, 1, −1]; label accuracy: r > βz0 = 0.2
    exactly when desirable -> [1, 0, 1]."""
    out = get_loss("kto")(
        logps=torch.tensor([-5.0, -5.0, -25.0]), ref_logps=torch.tensor([-15.0, -15.0, -15.0]),
        labels=torch.tensor([True, False, False]), kl_logps=torch.tensor([-1.0, -2.0, -3.0]),
        ref_kl_logps=torch.tensor([-2.0, -4.0, -6.0]),
    )  # fmt: skip
    torch.testing.assert_close(out.loss, torch.tensor([0.310026, 0.689974, 0.231475]), atol=1e-6, rtol=0)
    assert out.metrics["reward/label_accuracy"].tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(out.metrics["reward"], torch.tensor([1.0, 1.0, -1.0]))
    assert all(torch.isfinite(v).all() for v in out.metrics.values())


def test_kto_gradient_signs():
    """Desirable rows push their log-prob up, undesirable rows down."""
    logps = torch.tensor([-3.0, -3.0], requires_grad=True)
    out = get_loss("kto")(
        logps=logps, ref_logps=torch.tensor([-3.0, -3.0]), labels=torch.tensor([True, False]),
        kl_logps=torch.zeros(2), ref_kl_logps=torch.zeros(2),
    )  # fmt: skip
    out.loss.sum().backward()
    assert logps.grad[0] < 0 < logps.grad[1]


def test_kto_needs_the_mismatched_pairs_and_checks_weights():
    loss = get_loss("kto")
    assert loss.needs == {"reference", "kl_pairs"} and loss.kind == "unpaired"
    with pytest.raises(ValueError, match="kl_logps"):
        loss(logps=torch.zeros(2), ref_logps=torch.zeros(2), labels=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="undesirable_weight"):
        get_loss("kto", undesirable_weight=-1.0)


@pytest.mark.parametrize("case", CASES)
def test_bco_value_gradient_and_running_delta_match_trl_running_moments(case):
    """Three batches through one state: δ and the per-row loss and gradient of each batch match."""
    loss, state, moments = get_loss("bco", beta=0.2), None, RunningMomentsReference()
    for step in range(3):
        c = _case(case, b=5 + step, seed=step)
        ours_in = c["logps"].clone().requires_grad_(True)
        out = loss(logps=ours_in, labels=c["labels"], ref_logps=c["ref"], state=state)
        out.loss.sum().backward()
        rewards = [0.2 * (float(a) - float(b)) for a, b in zip(c["logps"].double(), c["ref"].double())]
        delta = moments.update(rewards)
        ref_in = c["logps"].double().requires_grad_(True)
        expected = bco_reference(ref_in, c["ref"].double(), c["labels"].tolist(), 0.2, delta)
        expected.sum().backward()
        assert out.metrics["reward/delta"][0].item() == pytest.approx(delta, rel=RTOL, abs=1e-7)
        torch.testing.assert_close(out.loss.double(), expected.detach(), rtol=RTOL, atol=1e-7)
        torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, rtol=RTOL, atol=1e-9)
        state = out.state
    assert state["reward_count"].item() == 5 + 6 + 7


def test_bco_hand_worked_first_batch():
    """β = 1, rewards [2, −2, 3] (labels D, U, U): δ = mean = 1. D: −log σ(1) = 0.313262;
    U: −log σ(−(−2 − 1)) = −log σ(3) = 0.048587; U: −log σ(−(3 − 1)) = −log σ(−2) = 2.126928."""
    out = get_loss("bco", beta=1.0)(
        logps=torch.tensor([2.0, -2.0, 3.0]),
        ref_logps=torch.zeros(3),
        labels=torch.tensor([True, False, False]),
    )
    torch.testing.assert_close(out.loss, torch.tensor([0.313262, 0.048587, 2.126928]), atol=1e-6, rtol=0)
    assert out.state["reward_mean"].item() == pytest.approx(1.0) and out.state["reward_count"].item() == 3
    assert out.metrics["reward/label_accuracy"].tolist() == [1.0, 1.0, 0.0]  # 2 > 1, −2 < 1, 3 > 1 (wrong)
