"""Pairwise preference training (DPO and variants, SimPO, SimPER, PLaD, SFT on chosen).

One concatenated forward of ``[chosen; rejected]`` through the policy gives the (B,)
summed response log-probs; the reference (when the loss ``needs`` one) runs the same
tensors without gradients, or, with ``reference_cache`` set, is looked up in log-probs
computed once per (data, reference) and stored on disk (see ``reference_cache.py``). With LoRA the reference is the same network with adapters
disabled, so no second copy is held; with full fine-tuning it is a frozen copy built
from the ``reference`` spec (default: the policy's spec).

The module branches only on ``loss.needs`` (``reference``, ``rejected``, ``scores``),
never on the loss name.
"""

from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm

from prefdistill.losses import PairwiseInputs
from prefdistill.models import ModelSpec, load_model, response_logps
from prefdistill.models.packing import shared_prompt_logps
from prefdistill.modules.base import PolicyModule
from prefdistill.modules.reference_cache import ReferenceCache, cache_key, lookup_table

SIDES = ("chosen", "rejected")
FORWARD_MODES = ("padded", "shared_prompt")


class PreferenceModule(PolicyModule):
    """Trains ``policy`` on a pairwise loss; see the module docstring."""

    def __init__(
        self,
        *args,
        reference: ModelSpec | None = None,
        reference_cache: str | None = "auto",
        forward: str = "shared_prompt",
        **kw,
    ):
        super().__init__(*args, **kw)
        if self.loss.kind != "pairwise":
            raise ValueError(
                f"PreferenceModule trains pairwise losses; {self.loss.name!r} is a {self.loss.kind} loss"
            )
        self.reference_spec = reference
        self.reference: torch.nn.Module | None = None
        cache = self.auto_cache(reference_cache, "reference_logps") if self.needs_reference else None
        self.reference_cache = ReferenceCache(cache) if cache else None
        self._reference_tables: dict[str, torch.Tensor] = {}
        self._restored = False
        forward = "shared_prompt" if forward == "auto" else forward
        if forward not in FORWARD_MODES:
            raise ValueError(f"forward must be one of {FORWARD_MODES}, got {forward!r}")
        self.forward_mode = forward  # how sequence_logps runs a pair batch (policy, reference, cache)

    @property
    def needs_reference(self) -> bool:
        return "reference" in self.loss.needs

    def configure_extra_models(self) -> None:
        cached = self.reference_cache is not None
        if self.needs_reference and not self.uses_lora and not cached and self.reference is None:
            self.reference = load_model(self.reference_spec or self.policy_spec, trainable=False)

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored = True

    # -- forward -----------------------------------------------------------------------
    def sides(self, batch) -> tuple[str, ...]:
        wanted = SIDES if "rejected" in self.loss.needs else SIDES[:1]
        missing = [s for s in wanted if f"{s}_input_ids" not in batch]
        if missing:
            raise KeyError(f"loss {self.loss.name!r} needs {missing} responses but the batch has none")
        return wanted

    def _concat(self, batch, sides):
        return [
            torch.cat([batch[f"{s}_{k}"] for s in sides]) for k in ("input_ids", "attention_mask", "labels")
        ]

    def sequence_logps(self, model, batch, sides) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(sides)*B,) summed response log-probs (fp32) and token counts, one forward.

        ``forward="shared_prompt"``: one packed ``[prompt, chosen, rejected]`` sequence per pair (the
        prompt is computed once; see ``prefdistill.models.packing``, which falls back to the padded path,
        with a warning, for models whose attention cannot take its mask). ``"padded"``: ``[chosen;
        rejected]`` right-padded rows. Single-side batches (SFT) always take the padded path.
        """
        if self.forward_mode == "shared_prompt" and tuple(sides) == SIDES:
            return shared_prompt_logps(model, batch, chunk_size=self.chunk_size)
        input_ids, attention_mask, labels = self._concat(batch, sides)
        return response_logps(model, input_ids, attention_mask, labels, chunk_size=self.chunk_size)

    @contextlib.contextmanager
    def _reference_model(self):
        """The network that computes reference log-probs, in eval mode, without gradients."""
        if self.uses_lora:
            was_training = self.policy.training
            self.policy.eval()  # no dropout: the base model as a frozen reference would run it
            try:
                with self.policy.disable_adapter():
                    yield self.policy
            finally:
                self.policy.train(was_training)
        elif self.reference is not None:
            yield self.reference
        elif self.reference_spec is None and self.global_step == 0 and not self._restored:
            was_training = self.policy.training
            self.policy.eval()  # untrained policy == reference: no second copy needed
            try:
                yield self.policy
            finally:
                self.policy.train(was_training)
        else:  # policy already trained: load the reference just for this pass
            yield load_model(self.reference_spec or self.policy_spec, trainable=False).to(self.device)

    @torch.no_grad()
    def reference_logps(self, batch, sides) -> torch.Tensor:
        if self.reference_cache is not None:
            rows = self._reference_table(self.current_split())[batch["index"].cpu()]  # (B, 2)
            if torch.isnan(rows).any():
                raise KeyError(f"reference cache has no entry for rows {batch['index'].tolist()}")
            return torch.cat([rows[:, k] for k in range(len(sides))]).to(self.device)
        with self._reference_model() as model:
            logps, _ = self.sequence_logps(model, batch, sides)
        return logps

    def _reference_table(self, split: str) -> torch.Tensor:
        if split not in self._reference_tables:
            dm = self.trainer.datamodule
            spec = self.reference_spec or self.policy_spec
            data = self.reference_cache.load_or_compute(
                cache_key(dm.datasets[split], spec.identity()),
                lambda: self._compute_reference(dm.loader(split), split),
                f"reference log-probs [{split}]",
            )
            self._reference_tables[split] = lookup_table(data)
        return self._reference_tables[split]

    @torch.no_grad()
    def _compute_reference(self, loader, split: str) -> dict[str, torch.Tensor]:
        index, chosen, rejected = [], [], []
        with self._reference_model() as model:
            for batch in tqdm(loader, desc=f"reference log-probs [{split}]", leave=False):
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                logps, _ = self.sequence_logps(model, batch, SIDES)
                n = batch["chosen_input_ids"].shape[0]
                index.append(batch["index"].cpu())
                chosen.append(logps[:n].cpu())
                rejected.append(logps[n:].cpu())
        return {"index": torch.cat(index), "chosen": torch.cat(chosen), "rejected": torch.cat(rejected)}

    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sides = self.sides(batch)
        n = batch["chosen_input_ids"].shape[0]
        logps, lengths = self.sequence_logps(self.policy, batch, sides)
        inputs = {
            "chosen_logps": logps[:n],
            "chosen_lengths": lengths[:n],
            "rejected_logps": logps[n:] if len(sides) == 2 else None,
            "rejected_lengths": lengths[n:] if len(sides) == 2 else None,
        }
        if self.needs_reference:
            ref = self.reference_logps(batch, sides)
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref[:n], ref[n:]
        if "scores" in self.loss.needs:
            if "chosen_scores" not in batch:
                raise KeyError(
                    f"loss {self.loss.name!r} needs per-response scores, but the batch has none: "
                    "use scored pairs (chosen_score/rejected_score fields, e.g. data=demo_scored)"
                )
            inputs |= {f"{s}_scores": batch[f"{s}_scores"] for s in sides}
        out = self.call_loss(PairwiseInputs(**inputs))
        metrics = dict(out.metrics)
        metrics["logps/chosen"] = inputs["chosen_logps"].detach()
        if len(sides) == 2:
            metrics["logps/rejected"] = inputs["rejected_logps"].detach()
            mean_w = inputs["chosen_logps"] / inputs["chosen_lengths"]
            mean_l = inputs["rejected_logps"] / inputs["rejected_lengths"]
            metrics["logps/accuracy"] = (mean_w > mean_l).float().detach()
        loss = out.loss.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # -- Lightning hooks ---------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss, metrics = self.compute(batch)
        self.log_metrics("train", metrics, batch_size=batch["chosen_input_ids"].shape[0])
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=batch["chosen_input_ids"].shape[0])

    def test_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("test", metrics, batch_size=batch["chosen_input_ids"].shape[0])
