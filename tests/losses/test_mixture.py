"""The weighted mixture of losses (TRL's loss_type list + loss_weights)."""

from __future__ import annotations

import pytest
import torch

from prefdistill.losses import get_loss


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "chosen_logps": -torch.rand(b, generator=g) * 20,
        "rejected_logps": -torch.rand(b, generator=g) * 20,
        "chosen_lengths": torch.randint(1, 20, (b,), generator=g),
        "rejected_lengths": torch.randint(1, 20, (b,), generator=g),
        "ref_chosen_logps": -torch.rand(b, generator=g) * 20,
        "ref_rejected_logps": -torch.rand(b, generator=g) * 20,
    }


def test_dpo_plus_weighted_sft_is_rpo():
    t = batch()
    mix = get_loss("mixture", losses=["dpo", "sft"], weights=[1.0, 0.7], beta=0.3)(**t)
    rpo = get_loss("rpo", beta=0.3, nll_weight=0.7)(**t)
    torch.testing.assert_close(mix.loss, rpo.loss)


def test_weighted_sum_shared_hyper_parameters_and_prefixed_metrics():
    t = batch()
    out = get_loss("mixture", losses=["ipo", "sigmoid"], weights=[0.5, 2.0], beta=0.2)(**t)  # aliases resolve
    want = 0.5 * get_loss("ipo", beta=0.2)(**t).loss + 2.0 * get_loss("dpo", beta=0.2)(**t).loss
    torch.testing.assert_close(out.loss, want)
    assert {"ipo/loss", "dpo/loss", "ipo/reward/margin", "dpo/reward/margin", "reward/margin"} <= set(out.metrics)
    torch.testing.assert_close(out.metrics["reward/margin"], out.metrics["ipo/reward/margin"])  # first part's


def test_weights_default_to_one_and_needs_are_the_union():
    t = batch()
    out = get_loss("mixture", losses=["simpo", "sft"], weights=None)(**{**t, "ref_chosen_logps": None,
                                                                          "ref_rejected_logps": None})  # fmt: skip
    torch.testing.assert_close(out.loss, get_loss("simpo")(**t).loss + get_loss("sft")(**t).loss)
    assert get_loss("mixture", losses=["simpo", "sft"]).needs == {"rejected"}
    assert get_loss("mixture", losses=["dpo", "sft"], use_weighting=True).needs == {
        "reference", "rejected", "token_logps", "token_sq_probs"}  # fmt: skip


def test_a_stateful_part_keeps_its_state_under_its_name():
    loss = get_loss("mixture", losses=["bco_pair", "sft"], running_mean=True)
    assert set(loss.initial_state()) == {"bco_pair/reward_mean", "bco_pair/reward_count"}
    out = loss(**batch())
    assert out.state["bco_pair/reward_count"].item() == 1.0
    again = loss(**batch(seed=1), state=out.state)
    assert again.state["bco_pair/reward_count"].item() == 2.0


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"losses": ["dpo", "sft"], "gamma_beta_ratio": 0.3}, TypeError, "fit none"),
        ({"losses": ["dpo", "kd_fkl"], "weights": [1, 1]}, ValueError, "pairwise"),
        ({"losses": ["dpo", "sft"], "weights": [1.0]}, ValueError, "weights"),
        ({"losses": ["dpo", "sigmoid"], "weights": [1, 1]}, ValueError, "twice"),
        ({"losses": ["mixture"], "weights": [1]}, ValueError, "mixture"),
        ({"losses": ["nope"], "weights": [1]}, KeyError, "nope"),
    ],
)
def test_clear_errors(kw, error, match):
    with pytest.raises(error, match=match):
        get_loss("mixture", **kw)
