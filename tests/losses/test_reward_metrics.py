"""The shared reward metrics: TRL's accuracy (a tie counts as wrong), the fraction of ties, and the tie-aware
accuracy (a tie counts 1/2), worked by hand."""

from __future__ import annotations

import torch

from prefdistill.losses import get_loss
from prefdistill.losses.terms import reward_metrics


def test_ties_are_counted_and_count_half_in_the_tie_aware_accuracy():
    # pairs: tie (0 = 0), loss (0 < 0.5), win (1 > 0), loss (-1 < 0)
    m = reward_metrics(torch.tensor([0.0, 0.0, 1.0, -1.0]), torch.tensor([0.0, 0.5, 0.0, 0.0]))
    assert m["reward/accuracy"].tolist() == [0.0, 0.0, 1.0, 0.0]  # TRL: chosen > rejected
    assert m["reward/ties"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m["reward/accuracy_ties_half"].tolist() == [0.5, 0.0, 1.0, 0.0]  # mean 0.375


def test_dpo_with_the_policy_equal_to_the_reference_reads_one_half_not_zero():
    """Before training every implicit reward is 0: TRL's accuracy reads 0, the tie-aware one 1/2."""
    logps = {"chosen_logps": torch.tensor([-5.0, -7.0]), "rejected_logps": torch.tensor([-6.0, -4.0])}
    out = get_loss("dpo", beta=0.1)(
        **logps, chosen_lengths=torch.tensor([3, 3]), rejected_lengths=torch.tensor([3, 3]),
        ref_chosen_logps=logps["chosen_logps"], ref_rejected_logps=logps["rejected_logps"],
    )  # fmt: skip
    assert out.metrics["reward/accuracy"].mean() == 0.0
    assert out.metrics["reward/ties"].mean() == 1.0
    assert out.metrics["reward/accuracy_ties_half"].mean() == 0.5
