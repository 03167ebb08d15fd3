"""TRL's DPO loss_type family and its family-wide options (f-DPO, LD-DPO, WPO): hand-worked values.

Inputs are chosen so every term is a closed form: log-ratios 0, log 2 or small integers, one-token responses
where lengths do not matter. The float64 references against random and edge inputs are in
``test_conformance.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefdistill.losses import PairwiseInputs, get_loss

LOG2 = math.log(2.0)


def ls(z: float) -> float:
    """log σ(z)."""
    return -math.log1p(math.exp(-z))


def pair(u_w, u_l, lengths=(1, 1)):
    """A batch of one pair whose policy/reference log-ratios are u_w, u_l (the reference log-probs are -1)."""
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return {
        "chosen_logps": t(u_w - 1.0).requires_grad_(),
        "rejected_logps": t(u_l - 1.0).requires_grad_(),
        "chosen_lengths": t(lengths[0]),
        "rejected_lengths": t(lengths[1]),
        "ref_chosen_logps": t(-1.0),
        "ref_rejected_logps": t(-1.0),
    }


def value(name, tensors, **hp) -> float:
    return get_loss(name, **hp)(**tensors).loss.item()


@pytest.mark.parametrize(
    ("name", "hp", "want"),
    [
        # u_w = u_l = 0: every sigmoid at 1/2
        ("nca_pair", {}, 2 * LOG2),  # -log σ(0) - ½ log σ(0) - ½ log σ(0)
        ("apo_zero", {}, 1.0),  # (1 - ½) + ½
        ("apo_down", {}, 1.0),  # ½ + (1 - ½)
        ("sppo_hard", {"beta": 0.1}, 50.0),  # (0 - 5)² + (0 + 5)²
        ("discopop", {}, 0.5 * LOG2 + 0.5),  # m = σ(0) = ½: ½·log 2 + ½·e⁰
        ("bco_pair", {}, 2 * LOG2),  # δ = 0 (TRL 1.x): -log σ(0) - log σ(0)
        ("exo_pair", {"label_smoothing": 0.1}, 0.5 * (math.log(0.5 / 0.9) + math.log(0.5 / 0.1))),  # KL((½,½)‖(.9,.1))
        ("sigmoid_norm", {}, LOG2),
        ("aot", {}, LOG2),
        ("aot_unpaired", {}, LOG2),
    ],
)
def test_values_at_zero_log_ratios(name, hp, want):
    assert value(name, pair(0.0, 0.0), **hp) == pytest.approx(want, rel=1e-6)


def test_nonzero_log_ratios_by_hand():
    beta = 0.5
    t = pair(2.0, -1.0, lengths=(4, 2))
    assert value("nca_pair", t, beta=beta) == pytest.approx(-ls(1.0) - 0.5 * ls(-1.0) - 0.5 * ls(0.5))
    assert value("apo_zero", t, beta=beta) == pytest.approx(1 - 1 / (1 + math.exp(-1.0)) + 1 / (1 + math.exp(0.5)))
    assert value("sppo_hard", t, beta=beta) == pytest.approx((2 - 1) ** 2 + (-1 + 1) ** 2)
    assert value("sigmoid_norm", t, beta=beta) == pytest.approx(-ls(beta * (2 / 4 - (-1) / 2)))


def test_bco_running_mean_is_updated_before_use_and_returned_as_state():
    """β = 1, rewards (1, 3) and (-1, 1): batch mean 1; from (mean 0, count 0) the shift is δ = 1."""
    loss = get_loss("bco_pair", beta=1.0, running_mean=True)
    t = {
        "chosen_logps": torch.tensor([1.0, 3.0]), "rejected_logps": torch.tensor([-1.0, 1.0]),
        "ref_chosen_logps": torch.zeros(2), "ref_rejected_logps": torch.zeros(2),
    }  # fmt: skip
    out = loss(**t)
    assert out.loss[0].item() == pytest.approx(-ls(1 - 1) - ls(-(-1 - 1)))
    assert out.state["reward_mean"].item() == pytest.approx(1.0) and out.state["reward_count"].item() == 1.0
    again = loss(**{**t, "chosen_logps": torch.tensor([5.0, 5.0]), "rejected_logps": torch.tensor([5.0, 5.0])},
                 state=out.state)  # fmt: skip
    assert again.state["reward_mean"].item() == pytest.approx((1.0 + 5.0) / 2)  # the mean of the step means
    assert again.metrics["bco/delta"][0].item() == pytest.approx(3.0)
    off = get_loss("bco_pair", beta=1.0)(**t, state=out.state)
    assert off.metrics["bco/delta"][0].item() == 0.0 and off.state["reward_count"].item() == 1.0  # untouched


def test_aot_is_batch_coupled_through_sorting():
    t = {
        "chosen_logps": torch.tensor([0.0, -4.0]), "rejected_logps": torch.tensor([-1.0, -1.0]),
        "ref_chosen_logps": torch.tensor([-2.0, -2.0]), "ref_rejected_logps": torch.tensor([-1.0, -1.0]),
    }  # fmt: skip
    out = get_loss("aot", beta=1.0)(**t)
    # policy margins (1, -3) -> sorted (-3, 1); reference margins (-1, -1): deltas (-2, 2)
    torch.testing.assert_close(out.loss, torch.tensor([-ls(-2.0), -ls(2.0)]))
    alone = get_loss("aot", beta=1.0)(**{k: v[:1] for k, v in t.items()})
    assert alone.loss.item() == pytest.approx(-ls(2.0))  # example 0 alone is not entry 0 of the batch


# ---------------------------------------------------------------- f-DPO scores
@pytest.mark.parametrize(
    ("kind", "coef", "h"),
    [
        ("reverse_kl", 0.5, LOG2),
        ("forward_kl", 0.5, 0.5),  # f'(t) = 1 - 1/t: (1 - ½) - (1 - 1)
        ("js_divergence", 0.5, math.log(4 / 3)),  # log(2t/(1+t)): log(4/3) - log 1
        ("alpha_divergence", 0.5, 2 - math.sqrt(2)),  # (t^(α-1) - 1)/(α-1) at t = 2, α = ½
        ("alpha_divergence", 1.0, LOG2),  # α = 1 is reverse KL
    ],
)
def test_f_divergence_scores_by_hand(kind, coef, h):
    """u_w = log 2 (t = 2), u_l = 0 (t = 1): h = f'(2) - f'(1)."""
    got = value("dpo", pair(LOG2, 0.0), beta=1.0, f_divergence_type=kind, f_alpha_divergence_coef=coef)
    assert got == pytest.approx(-ls(h), rel=1e-6)
    assert value("hinge", pair(LOG2, 0.0), beta=1.0, f_divergence_type=kind, f_alpha_divergence_coef=coef) == (
        pytest.approx(max(0.0, 1 - h), abs=1e-6)
    )


def test_unknown_f_divergence_and_bad_ld_alpha_are_errors():
    with pytest.raises(ValueError, match="f_divergence_type"):
        get_loss("dpo", f_divergence_type="kl")
    with pytest.raises(ValueError, match="ld_alpha"):
        get_loss("ipo", ld_alpha=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        get_loss("exo_pair", label_smoothing=0.0)  # TRL refuses ε = 0 too
    with pytest.raises(TypeError, match="f_divergence_type"):
        get_loss("nca_pair", f_divergence_type="forward_kl")  # TRL: no f-divergence form for NCA


# ---------------------------------------------------------------- LD-DPO and WPO (per-token inputs)
def tokens():
    """Chosen tokens (-1, -2, -3), rejected (-1, -1, pad); reference all zero. Masked slot holds NaN."""
    nan = float("nan")
    return {
        "chosen_logps": torch.tensor([-6.0]), "rejected_logps": torch.tensor([-2.0]),
        "chosen_lengths": torch.tensor([3]), "rejected_lengths": torch.tensor([2]),
        "ref_chosen_logps": torch.zeros(1), "ref_rejected_logps": torch.zeros(1),
        "chosen_token_logps": torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True),
        "rejected_token_logps": torch.tensor([[-1.0, -1.0, nan]], requires_grad=True),
        "ref_chosen_token_logps": torch.zeros(1, 3), "ref_rejected_token_logps": torch.tensor([[0.0, 0.0, nan]]),
        "chosen_mask": torch.tensor([[True, True, True]]), "rejected_mask": torch.tensor([[True, True, False]]),
        # log Σ p² = log ½ at every token: w = exp(mean(log p - log ½))
        "chosen_log_sq_probs": torch.full((1, 3), -LOG2), "rejected_log_sq_probs": torch.tensor([[-LOG2, -LOG2, nan]]),
    }  # fmt: skip


def test_ld_dpo_by_hand_and_nan_at_masked_positions_never_reaches_the_loss():
    t = tokens()
    # shared length 2: S_w = (-1 - 2) + ½(-3) = -4.5, S_l = -2; reference 0
    out = get_loss("dpo", beta=0.5, ld_alpha=0.5)(**t)
    assert out.loss.item() == pytest.approx(-ls(0.5 * (-4.5 + 2.0)))
    out.loss.sum().backward()
    assert torch.isfinite(t["rejected_token_logps"].grad).all()
    assert t["chosen_token_logps"].grad[0, 2] == pytest.approx(0.5 * t["chosen_token_logps"].grad[0, 0].item())
    assert get_loss("dpo", ld_alpha=1.0)(**tokens()).loss.item() == pytest.approx(get_loss("dpo")(**tokens()).loss.item())


def test_wpo_weight_by_hand():
    t = tokens()
    w = math.exp((-6.0 + 3 * LOG2) / 3) * math.exp((-2.0 + 2 * LOG2) / 2)
    out = get_loss("dpo", use_weighting=True)(**t)
    assert out.metrics["wpo/weight"].item() == pytest.approx(w)
    assert out.loss.item() == pytest.approx(w * get_loss("dpo")(**tokens()).loss.item())


def test_token_options_name_what_is_missing():
    t = {k: v for k, v in tokens().items() if "token" not in k}
    with pytest.raises(ValueError, match="chosen_token_logps"):
        get_loss("apo_zero", ld_alpha=0.5)(**t)
    with pytest.raises(ValueError, match="log_sq_probs"):
        get_loss("dpo", use_weighting=True)(**{**tokens(), "chosen_log_sq_probs": None})


@pytest.mark.parametrize(
    ("hp", "extra"),
    [
        ({"ld_alpha": 0.5}, {"token_logps", "reference_token_logps"}),
        ({"use_weighting": True}, {"token_logps", "token_sq_probs"}),
        ({"reference_free": True, "ld_alpha": 0.5}, {"token_logps"}),
    ],
)
def test_options_declare_the_inputs_they_need(hp, extra):
    base = {"rejected"} if hp.get("reference_free") else {"reference", "rejected"}
    assert get_loss("dpo", **hp).needs == base | extra
    assert get_loss("dpo").needs == {"reference", "rejected"}  # the default path needs only sums


def test_sft_token_mean_batch_is_trls_batch_level_mean():
    t = {"chosen_logps": torch.tensor([-2.0, -9.0]), "chosen_lengths": torch.tensor([1, 3])}
    torch.testing.assert_close(get_loss("sft", token_mean="batch")(**t).loss, torch.tensor([11 / 4, 11 / 4]))
    torch.testing.assert_close(get_loss("sft")(**t).loss, torch.tensor([2.0, 3.0]))
    assert PairwiseInputs  # the public input type is what the module builds
