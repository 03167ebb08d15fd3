"""Unpaired preference training (KTO, BCO): single completions labelled desirable or undesirable.

Batches are ``prefdistill.data.collate.collate_unpaired``'s: each row ``(x_i, y_i)`` with its label and
its mismatched completion ``y'_i`` (another prompt's completion, fixed per row when the split is built:
``collate.kl_partners``). A loss that ``needs`` ``kl_pairs`` (KTO's KL estimate) gets the policy's and
reference's log-probs of ``(x_i, y'_i)`` too: with ``forward="shared_prompt"`` (default) each row is one
packed ``[x_i, y_i, y'_i]`` sequence, the same shape and cost as a DPO pair ``[x, y_w, y_l]``
(``prefdistill.models.packing``); ``"padded"`` runs ``[y; y']`` padded rows. The KL log-probs are
detached (the loss detaches its estimate anyway). Without ``kl_pairs`` (BCO) only ``(x_i, y_i)`` runs.

Reference log-probs (``needs`` ``reference``): computed once per (split, reference) into the shared
reference cache (``reference_cache.py``; one file stores ``[matched, mismatched]`` per row, in the pair
format: the mismatch is a property of the row, so it caches like a pair), or run every step when
``reference_cache`` is null. With LoRA the reference is the policy with adapters disabled.

The module branches only on ``loss.needs``. Metrics: the loss's own, plus the mean reward and summed
log-prob of each class (``reward/desirable``, ``logps/undesirable``, ...) and, over the pairs cut by
``data.unpair`` whose two rows share a batch (held-out batches keep file order, so all of them), DPO's
``reward/margin`` and ``reward/accuracy``; each is averaged over exactly the rows it concerns.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from prefdistill.data.collate import as_pair_batch
from prefdistill.losses import UnpairedInputs
from prefdistill.models import ModelSpec
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.pair_forward import PairForward, forward_mode
from prefdistill.modules.reference_cache import ReferenceCache, ReferenceTables

NAN = float("nan")


def by_label(name: str, values: torch.Tensor, desirable: torch.Tensor) -> dict[str, torch.Tensor]:
    """``<name>/desirable`` and ``<name>/undesirable``: ``values`` (B,) on that class's rows, NaN elsewhere."""
    values = values.detach().float()
    return {
        f"{name}/desirable": values.masked_fill(~desirable, NAN),
        f"{name}/undesirable": values.masked_fill(desirable, NAN),
    }


def pair_metrics(
    rewards: torch.Tensor, desirable: torch.Tensor, pair_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``reward/margin`` and ``reward/accuracy`` (B,) of the pairs whose two rows are both in the batch.

    Rows cut from one pair (``data.unpair=true``) share a pair id (−1: none); a row whose pair-mate (same
    id, other label) is in the batch gets its pair's ``r(desirable) − r(undesirable)`` and whether it is
    > 0 (DPO's ``reward/margin`` and ``reward/accuracy``, with ``reward/ties`` and the tie-aware
    ``reward/accuracy_ties_half`` of ``losses.terms.reward_metrics``); other rows get NaN (not counted).
    """
    r = rewards.detach().float()
    mates = (pair_ids[:, None] == pair_ids[None, :]) & (desirable[:, None] != desirable[None, :])
    mates &= (pair_ids >= 0)[:, None]
    n = mates.sum(1)
    mate_reward = (mates * r[None, :]).sum(1) / n.clamp_min(1)  # (B,) reward of the row's mate(s)
    margin = torch.where(desirable, r - mate_reward, mate_reward - r).masked_fill(n == 0, NAN)
    wins, ties = (
        (margin > 0).float().masked_fill(n == 0, NAN),
        (margin == 0).float().masked_fill(n == 0, NAN),
    )
    return {"reward/margin": margin, "reward/accuracy": wins, "reward/ties": ties,
            "reward/accuracy_ties_half": wins + 0.5 * ties}  # fmt: skip


def cache_examples(examples: list[dict]) -> list[dict]:
    """A split's unpaired rows in the reference cache's pair fields: (prompt, completion, KL completion)."""
    return [
        {"index": ex["index"], "prompt_ids": ex["prompt_ids"], "chosen_ids": ex["completion_ids"],
         "rejected_ids": ex.get("kl_completion_ids")}
        for ex in examples
    ]  # fmt: skip


class UnpairedModule(ReferenceTables, PairForward, PolicyModule):
    """Trains ``policy`` on an unpaired loss; see the module docstring."""

    kind = "unpaired"

    def __init__(
        self,
        *args,
        reference: ModelSpec | None = None,
        reference_cache: str | None = "auto",
        forward: str = "shared_prompt",
        **kw,
    ):
        super().__init__(*args, **kw)
        self.reference_spec = reference
        cache = self.auto_cache(reference_cache, "reference_logps") if self.needs_reference else None
        self.reference_cache = ReferenceCache(cache) if cache else None
        self._reference_tables: dict[str, torch.Tensor] = {}
        self.forward_mode = forward_mode(forward)

    @property
    def needs_kl(self) -> bool:
        return "kl_pairs" in self.loss.needs

    def configure_extra_models(self) -> None:
        self.load_reference()

    # -- forward -----------------------------------------------------------------------
    def pair_view(self, batch, kl: bool) -> dict:
        """The batch as a pair batch (``chosen`` = matched, ``rejected`` = mismatched completion)."""
        if "completion_input_ids" not in batch:
            raise KeyError(
                f"loss {self.loss.name!r} trains on unpaired rows {{prompt, completion, label}}, but the batch "
                "holds pairs: set data.unpair=true (e.g. data=demo_unpaired) or give an unpaired file"
            )
        if kl and "kl_input_ids" not in batch:
            raise KeyError(
                f"loss {self.loss.name!r} needs mismatched (prompt, completion) pairs, but the batch has none "
                "(a split with a single distinct prompt has no other prompt's completion to borrow)"
            )
        return as_pair_batch(batch, kl=kl)

    @torch.no_grad()
    def reference_logps(self, batch, kl: bool) -> torch.Tensor:
        """(B,) or (2B,) reference log-probs of ``[matched; mismatched]``: from the cache, or one forward."""
        if self.reference_cache is None:
            with self.reference_model() as model:
                return self.sequence_logps(model, self.pair_view(batch, kl))[0]
        rows = self.cached_reference(batch["index"], 2 if kl else 1)
        return rows.t().reshape(-1).to(self.device)

    def reference_examples(self, examples: list[dict]) -> list[dict]:
        return cache_examples(examples)

    @torch.no_grad()
    def _compute_reference(self, loader, split: str) -> dict[str, torch.Tensor]:
        """Every row's reference log-probs of its completion and (when it has one) its KL completion."""
        index, matched, mismatched = [], [], []
        with self.reference_model() as model:
            for batch in tqdm(loader, desc=f"reference log-probs [{split}]", leave=False):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                kl = "kl_input_ids" in batch
                logps, _ = self.sequence_logps(model, self.pair_view(batch, kl))
                n = batch["index"].shape[0]
                index.append(batch["index"].cpu())
                matched.append(logps[:n].cpu())
                mismatched.append(logps[n:].cpu() if kl else torch.full((n,), float("nan")))
        return {"index": torch.cat(index), "chosen": torch.cat(matched), "rejected": torch.cat(mismatched)}

    def _all_ranks(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B,) from every rank, concatenated (KTO's KL estimate is over the global batch)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.all_gather(x).reshape(-1)

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kl = self.needs_kl
        n = batch["index"].shape[0]
        logps, lengths = self.sequence_logps(self.policy, self.pair_view(batch, kl))
        desirable = batch["desirable"]
        inputs = {"logps": logps[:n], "lengths": lengths[:n], "labels": desirable}
        if kl:
            inputs["kl_logps"] = self._all_ranks(logps[n:].detach())
        if self.needs_reference:
            ref = self.reference_logps(batch, kl)
            inputs["ref_logps"] = ref[:n]
            if kl:
                inputs["ref_kl_logps"] = self._all_ranks(ref[n:])
        out = self.call_loss(UnpairedInputs(**inputs))
        metrics = dict(out.metrics)
        rewards = metrics.pop("reward")  # the unpaired kind's per-row reward (prefdistill.losses.unpaired)
        metrics |= by_label("reward", rewards, desirable) | pair_metrics(
            rewards, desirable, batch["pair_ids"]
        )
        metrics |= by_label("logps", logps[:n], desirable)
        loss = out.loss.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # -- logging and Lightning hooks ---------------------------------------------------
    def log_metrics(self, split: str, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        """As the base class, but a (B,) metric is averaged over the rows where it is not NaN, weighted by
        their count (an epoch mean over exactly those rows), and skipped for a batch with none."""
        super().log_metrics(split, {}, batch_size)  # the learning rate
        for name, value in metrics.items():
            value, rows = value.float(), batch_size
            if value.dim():  # a scalar (the loss) is logged as it is, NaN included
                defined = ~value.isnan()
                value, rows = value[defined].mean(), int(defined.sum())
                if rows == 0:
                    continue
            self.log_mean(split, name, value, rows)
