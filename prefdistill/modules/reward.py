"""Reward-model training: a scalar head on the policy network, trained on preference pairs.

The policy is built as ``AutoModelForSequenceClassification`` with one output (``load_model(head="score")``:
the causal LM's weights, a new seeded head, ``config.pad_token_id`` set; LoRA trains the adapters and the
head). One forward of ``[chosen; rejected]`` padded rows gives each response's reward: the head's output at
the row's last non-pad token, exactly as the saved model computes it with ``model(**inputs).logits`` (TRL's
RewardTrainer does the same). The final save is a merged, standalone ``save_pretrained`` folder that
``AutoModelForSequenceClassification.from_pretrained`` and ``prefdistill.eval.reward.RewardModel`` load.

The module branches only on ``loss.needs`` (``scores``: the pair's margin from scored data).
"""

from __future__ import annotations

import torch

from prefdistill.losses import RewardInputs
from prefdistill.modules.base import PolicyModule


class RewardModule(PolicyModule):
    """Trains a one-output sequence classifier on a reward loss over (B,) chosen/rejected pairs."""

    kind = "reward"
    policy_head = "score"

    def rewards(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) float32 rewards of the chosen and rejected responses, one forward of both."""
        if "rejected_input_ids" not in batch:
            raise KeyError(f"loss {self.loss.name!r} trains on preference pairs, but the batch has none")
        input_ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        attention_mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
        scores = self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        chosen, rejected = scores.squeeze(-1).float().chunk(2)
        return chosen, rejected

    def margin(self, batch) -> torch.Tensor | None:
        """``s(y_w) − s(y_l)`` of scored pairs, when the loss needs it."""
        if "scores" not in self.loss.needs:
            return None
        if "chosen_scores" not in batch:
            raise KeyError(
                f"loss {self.loss.name!r} subtracts each pair's margin, but the batch has no scores: use scored "
                "pairs (chosen_score/rejected_score, e.g. data=demo_scored) or method.margin=false"
            )
        return batch["chosen_scores"] - batch["rejected_scores"]

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = self.rewards(batch)
        out = self.call_loss(
            RewardInputs(chosen_rewards=chosen, rejected_rewards=rejected, margin=self.margin(batch))
        )
        loss = out.loss.mean()
        return loss, {**out.metrics, "loss": loss.detach()}
