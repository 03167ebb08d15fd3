"""Pairwise preference training (DPO and variants, SimPO, SimPER, PLaD, SFT on chosen).

One concatenated forward of ``[chosen; rejected]`` through the policy gives the (B,)
summed response log-probs; the reference (when the loss ``needs`` one) runs the same
tensors without gradients, or, with ``reference_cache`` set, is looked up in log-probs
computed once per (data, reference) and stored on disk (see ``reference_cache.py``). With LoRA the reference is the same network with adapters
disabled, so no second copy is held; with full fine-tuning it is a frozen copy built
from the ``reference`` spec (default: the policy's spec).

The module branches only on ``loss.needs`` (``reference``, ``rejected``, ``scores``, and the
per-token ``token_logps`` / ``reference_token_logps`` / ``token_sq_probs``), never on the loss name.
Per-token log-probs come from the same chunked (and, by default, shared-prompt) forward as the sums,
and only when a loss declares them: the default path computes sums alone.

``sync_reference`` (TR-DPO, Gorbatovski et al. 2024, arXiv 2404.09656; TRL ``sync_ref_model``) moves the
reference towards the policy every ``every_steps`` optimizer steps, ``π_ref ← α·π_θ + (1−α)·π_ref``
(TRL's ``ref_model_mixup_alpha`` = 0.6, ``ref_model_sync_steps`` = 512 by default). It needs a separate
reference copy (no LoRA disabled-adapter reference, no reference cache) and checkpoints that copy.
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from prefdistill.losses import PairwiseInputs
from prefdistill.models import ModelSpec
from prefdistill.models.logprobs import TokenLogps, flat_token_logps
from prefdistill.models.packing import shared_prompt_token_logps
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.pair_forward import SIDES, PairForward, forward_mode
from prefdistill.modules.reference_cache import ReferenceCache, ReferenceTables

log = logging.getLogger(__name__)

SYNC_DEFAULTS = {"every_steps": 512, "alpha": 0.6}  # TRL ref_model_sync_steps, ref_model_mixup_alpha


def sync_settings(setting: dict | None) -> dict | None:
    """``module.sync_reference`` as ``{every_steps, alpha}`` (TRL's defaults filled in), or None when off."""
    if setting is None or setting is False:
        return None
    setting = {} if setting is True else dict(setting)
    unknown = set(setting) - set(SYNC_DEFAULTS)
    if unknown:
        raise ValueError(
            f"module.sync_reference takes {sorted(SYNC_DEFAULTS)}, got unknown keys {sorted(unknown)}"
        )
    out = {**SYNC_DEFAULTS, **setting}
    if int(out["every_steps"]) < 1 or not 0.0 < float(out["alpha"]) <= 1.0:
        raise ValueError(f"module.sync_reference needs every_steps >= 1 and alpha in (0, 1], got {out}")
    return {"every_steps": int(out["every_steps"]), "alpha": float(out["alpha"])}


class PreferenceModule(ReferenceTables, PairForward, PolicyModule):
    """Trains ``policy`` on a pairwise loss; see the module docstring."""

    kind = "pairwise"

    def __init__(
        self,
        *args,
        reference: ModelSpec | None = None,
        reference_cache: str | None = "auto",
        forward: str = "shared_prompt",
        sync_reference: dict | None = None,
        **kw,
    ):
        super().__init__(*args, **kw)
        self.reference_spec = reference
        self.sync_reference = sync_settings(sync_reference)
        self._last_sync_step = 0
        self._check_sync()
        cache = self._reference_cache_folder(reference_cache)
        self.reference_cache = ReferenceCache(cache) if cache else None
        self._reference_tables: dict[str, torch.Tensor] = {}
        self.forward_mode = forward_mode(forward)  # how sequence_logps runs a pair batch (policy, reference, cache)

    def _check_sync(self) -> None:
        if self.sync_reference is None:
            return
        if not self.needs_reference:
            raise ValueError(
                f"module.sync_reference: loss {self.loss.name!r} uses no reference model to sync"
            )
        if self.uses_lora:
            raise ValueError(
                "module.sync_reference needs a separate reference copy, but with LoRA the reference is the "
                "policy with its adapters disabled (no copy to update): train without LoRA, or drop sync_reference"
            )

    def _reference_cache_folder(self, setting: str | None) -> str | None:
        """Where reference log-probs are cached, or None. The cache holds fixed (B,) sums: a reference that
        changes (``sync_reference``) or per-token reference log-probs (``reference_token_logps``) cannot use it;
        ``auto`` then means no cache, and an explicit folder is an error."""
        if not self.needs_reference:
            return None
        why = []
        if self.sync_reference is not None:
            why.append("module.sync_reference updates the reference during training")
        if "reference_token_logps" in self.loss.needs:
            why.append(f"loss {self.loss.name!r} needs per-token reference log-probs (e.g. ld_alpha)")
        if not why:
            return self.auto_cache(setting, "reference_logps")
        if setting not in (None, "auto"):
            raise ValueError(
                f"module.reference_cache={setting!r}: the cache stores fixed summed reference log-probs, but "
                f"{' and '.join(why)}; set module.reference_cache=null (the reference then runs every step)"
            )
        if setting == "auto":
            log.info("reference cache off: %s", "; ".join(why))
        return None

    def configure_extra_models(self) -> None:
        self.load_reference()

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        self._last_sync_step = checkpoint.get("prefdistill", {}).get("last_sync_step", 0)

    # -- forward -----------------------------------------------------------------------
    def sides(self, batch) -> tuple[str, ...]:
        wanted = SIDES if "rejected" in self.loss.needs else SIDES[:1]
        missing = [s for s in wanted if f"{s}_input_ids" not in batch]
        if missing:
            raise KeyError(f"loss {self.loss.name!r} needs {missing} responses but the batch has none")
        return wanted

    def token_logps(self, model, batch, sides, with_sq: bool = False) -> TokenLogps:
        """Per-token log-probs of ``[chosen; rejected]`` (or chosen alone), through the same forward as
        ``sequence_logps``; ``with_sq`` adds every token's ``log Σ_v p_v²`` (WPO)."""
        if self.forward_mode == "shared_prompt" and tuple(sides) == SIDES:
            return shared_prompt_token_logps(model, batch, chunk_size=self.chunk_size, with_sq=with_sq)
        input_ids, attention_mask, labels = self.concat(batch, sides)
        return flat_token_logps(
            model, input_ids, attention_mask, labels, chunk_size=self.chunk_size, with_sq=with_sq
        )

    @torch.no_grad()
    def reference_logps(self, batch, sides) -> torch.Tensor:
        if self.reference_cache is not None:
            rows = self.cached_reference(batch["index"], len(sides))  # (B, len(sides))
            return rows.t().reshape(-1).to(self.device)
        with self.reference_model() as model:
            logps, _ = self.sequence_logps(model, batch, sides)
        return logps

    @torch.no_grad()
    def _compute_reference(self, loader, split: str) -> dict[str, torch.Tensor]:
        index, chosen, rejected = [], [], []
        with self.reference_model() as model:
            for batch in tqdm(loader, desc=f"reference log-probs [{split}]", leave=False):
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                logps, _ = self.sequence_logps(model, batch, SIDES)
                n = batch["chosen_input_ids"].shape[0]
                index.append(batch["index"].cpu())
                chosen.append(logps[:n].cpu())
                rejected.append(logps[n:].cpu())
        return {"index": torch.cat(index), "chosen": torch.cat(chosen), "rejected": torch.cat(rejected)}

    def _policy_inputs(self, batch, sides, n: int) -> dict:
        """The policy's summed log-probs and counts per side, plus per-token fields when the loss needs them."""
        needs = self.loss.needs
        if "token_logps" not in needs:
            logps, lengths = self.sequence_logps(self.policy, batch, sides)
            tokens = {}
        else:
            flat = self.token_logps(self.policy, batch, sides, with_sq="token_sq_probs" in needs)
            logps, lengths = flat.sums(), flat.counts()
            values, mask, sq = flat.padded()
            tokens = _per_side({"token_logps": values, "mask": mask, "log_sq_probs": sq}, sides, n)
        two = len(sides) == 2
        return {
            "chosen_logps": logps[:n],
            "chosen_lengths": lengths[:n],
            "rejected_logps": logps[n:] if two else None,
            "rejected_lengths": lengths[n:] if two else None,
            **tokens,
        }

    @torch.no_grad()
    def _reference_inputs(self, batch, sides, n: int) -> dict:
        """Reference sums per side, and per-token reference log-probs when the loss needs them (no cache)."""
        if "reference_token_logps" not in self.loss.needs:
            ref = self.reference_logps(batch, sides)
            return {"ref_chosen_logps": ref[:n], "ref_rejected_logps": ref[n:]}
        with self.reference_model() as model:
            flat = self.token_logps(model, batch, sides)
        values, _, _ = flat.padded()
        ref = flat.sums()
        return {"ref_chosen_logps": ref[:n], "ref_rejected_logps": ref[n:]} | {
            f"ref_{k}": v for k, v in _per_side({"token_logps": values}, sides, n).items()
        }

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sides = self.sides(batch)
        n = batch["chosen_input_ids"].shape[0]
        inputs = self._policy_inputs(batch, sides, n)
        if self.needs_reference:
            inputs |= self._reference_inputs(batch, sides, n)
        if "scores" in self.loss.needs:
            if "chosen_scores" not in batch:
                raise KeyError(
                    f"loss {self.loss.name!r} needs per-response scores, but the batch has none: "
                    "use scored pairs (chosen_score/rejected_score fields, e.g. data=demo_scored)"
                )
            inputs |= {f"{s}_scores": batch[f"{s}_scores"] for s in sides}
        out = self.call_loss(PairwiseInputs(**inputs))
        metrics = dict(out.metrics)
        # per token too: the likelihood a collapse drives down on both sides while their gap grows (docs/study.md)
        mean_w = inputs["chosen_logps"] / inputs["chosen_lengths"]
        metrics["logps/chosen"] = inputs["chosen_logps"].detach()
        metrics["logps/chosen_per_token"] = mean_w.detach()
        if len(sides) == 2:
            metrics["logps/rejected"] = inputs["rejected_logps"].detach()
            mean_l = inputs["rejected_logps"] / inputs["rejected_lengths"]
            metrics["logps/rejected_per_token"] = mean_l.detach()
            metrics["logps/accuracy"] = (mean_w > mean_l).float().detach()
        loss = out.loss.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # -- TR-DPO reference sync -----------------------------------------------------------
    @torch.no_grad()
    def sync_reference_now(self) -> None:
        """``π_ref ← α·π_θ + (1−α)·π_ref`` parameter by parameter (TRL ``SyncRefModelCallback``)."""
        alpha = self.sync_reference["alpha"]
        for ref, pol in zip(self.reference.parameters(), self.policy.parameters(), strict=True):
            ref.mul_(1.0 - alpha).add_(pol.detach().to(ref.dtype), alpha=alpha)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        if (
            self.sync_reference
            and step > self._last_sync_step
            and step % self.sync_reference["every_steps"] == 0
        ):
            self.sync_reference_now()
            self._last_sync_step = step

    def on_save_checkpoint(self, checkpoint) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.sync_reference and self.reference is not None:  # the reference has moved: keep it
            checkpoint["state_dict"].update(
                {f"reference.{k}": v for k, v in self.reference.state_dict().items()}
            )
            checkpoint["prefdistill"]["last_sync_step"] = self._last_sync_step


def _per_side(fields: dict, sides, n: int) -> dict:
    """``{"<side>_<name>": rows of that side}`` for (len(sides)*n, ...) tensors; None values are skipped."""
    return {
        f"{side}_{name}": value[i * n : (i + 1) * n]
        for name, value in fields.items()
        if value is not None
        for i, side in enumerate(sides)
    }
