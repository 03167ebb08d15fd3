"""What every training module shares: the policy, its optimizer and schedule, lean checkpoints.

``PolicyModule`` loads the policy lazily in ``configure_model`` (so DeepSpeed/FSDP can
shard at init and a ``validate`` before ``fit`` does not load it twice), builds the
optimizer over trainable parameters only, and keeps Lightning checkpoints small by
storing only what training changes (LoRA adapters or the full policy, never a frozen
reference or teacher: those are rebuilt from their specs on resume).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from prefdistill.losses import Loss
from prefdistill.models import ModelSpec, load_model
from prefdistill.modules.held import HeldModel, held_reference
from prefdistill.utils.rng import rng_state, set_rng_state

log = logging.getLogger(__name__)


class PolicyModule(L.LightningModule):
    """Base class: a trainable ``policy`` built from a :class:`ModelSpec`, and a registered loss of ``kind``."""

    kind: str | None = None  # the loss kind a subclass trains (``Loss.kind``); ``build_module`` picks by it
    policy_head = "lm"  # the policy's output head (``load_model(head=...)``): "score" for a reward model

    def __init__(
        self,
        policy: ModelSpec,
        loss: Loss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        chunk_size: int = 1024,
        max_bad_steps: int = 10,
        optimizer_in_backward: bool = False,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if self.kind is not None and loss.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__} trains {self.kind} losses; {loss.name!r} is a {loss.kind} loss"
            )
        self.policy_spec = policy
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.chunk_size = chunk_size
        self.max_bad_steps = max_bad_steps
        self.optimizer_in_backward = optimizer_in_backward
        self.cache_dir = cache_dir  # where caches set to `auto` live
        self.loss_state = loss.initial_state()  # running state of a stateful loss (checkpointed)
        self._step_hooks: list = []
        self.policy: torch.nn.Module | None = None
        self.strict_loading = False  # checkpoints hold trainable weights only
        self._bad_steps_in_a_row = 0
        self.restored = False  # resumed from a checkpoint (on_load_checkpoint)
        self.reference_spec: ModelSpec | None = None  # modules whose losses need a reference set these
        self.reference: torch.nn.Module | None = None
        self.reference_cache = None
        self.bad_steps_total = 0
        self.last_fit_validation_step: int | None = None  # step of the last validation inside fit
        self.save_hyperparameters(
            {"loss": loss.name, "loss_hparams": loss.hparams, "needs": sorted(loss.needs)}
        )

    # -- model -------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = load_model(self.policy_spec, trainable=True, head=self.policy_head)
            self.configure_extra_models()

    def configure_extra_models(self) -> None:
        """Load frozen models (reference, teacher) the loss needs. Subclasses override."""

    # -- the reference (modules whose losses compare the policy with a frozen reference) ----
    # Such a module sets ``reference_spec`` (None = the policy's own spec) and ``reference_cache``.
    @property
    def needs_reference(self) -> bool:
        return "reference" in self.loss.needs

    def reference_source(self) -> str | None:
        """Where reference log-probs come from: None (the loss needs none), ``"cache"`` (computed once into
        ``reference_cache``, read by row), ``"adapters"`` (LoRA: the policy with its adapters disabled) or
        ``"copy"`` (a frozen copy held in training). :meth:`load_reference` and :meth:`held_models` both ask."""
        if not self.needs_reference:
            return None
        if self.reference_cache is not None:
            return "cache"
        return "adapters" if self.uses_lora else "copy"

    def load_reference(self) -> None:
        """Hold a frozen reference copy only when one is needed: not with LoRA (the adapter-disabled policy
        is the reference) and not when its log-probs come from the cache."""
        if self.reference_source() == "copy" and self.reference is None:
            self.reference = load_model(self.reference_spec or self.policy_spec, trainable=False)

    def held_models(self) -> list[HeldModel]:
        """Every model this module loads or shares, and how (:mod:`prefdistill.modules.held`): the policy, then
        what the loss needs besides (the reference here; ``DistillModule`` adds the teacher)."""
        return [HeldModel("policy", self.policy_spec, "trained"), *held_reference(self)]

    @property
    def optimizer_name(self) -> str:
        """The optimizer's name (``build_optimizer``'s ``name``, or the optimizer class's), lower case: how many
        states it keeps per trainable weight (``prefdistill.memory.OPTIMIZER_STATES``)."""
        factory = self.optimizer_factory
        name = getattr(factory, "keywords", {}).get("name")
        return str(name or getattr(getattr(factory, "func", factory), "__name__", "adamw")).lower()

    @contextlib.contextmanager
    def reference_model(self):
        """The network that computes reference log-probs, in eval mode (no dropout), without gradients.

        With LoRA: the policy with its adapters disabled. Else the frozen copy; or, before the first step of a
        fresh run with no separate reference spec, the untrained policy itself (it *is* the reference, so no
        second copy is held); after that, a copy loaded just for this pass.
        """
        if self.uses_lora:
            with self._in_eval(self.policy), self.policy.disable_adapter():
                yield self.policy
        elif self.reference is not None:
            yield self.reference
        elif self.reference_spec is None and self.global_step == 0 and not self.restored:
            with self._in_eval(self.policy):
                yield self.policy
        else:
            yield load_model(self.reference_spec or self.policy_spec, trainable=False).to(self.device)

    @staticmethod
    @contextlib.contextmanager
    def _in_eval(model: torch.nn.Module):
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    @property
    def uses_lora(self) -> bool:
        return bool(self.policy_spec.lora)

    # -- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("the policy has no trainable parameters (check model.lora / freezing)")
        optimizer = self.optimizer_factory(params)
        if getattr(optimizer, "_step_supports_amp_scaling", False) and self._clips_under_autocast():
            optimizer = self.optimizer_factory(params, fused=False)  # Lightning refuses to clip a fused step
        if self.optimizer_in_backward:
            self._step_in_backward(optimizer, params)
        if self.scheduler_factory is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError("set trainer.max_steps or trainer.max_epochs so the schedule has a length")
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _clips_under_autocast(self) -> bool:
        """Gradient clipping under Lightning's mixed-precision plugin (``16-mixed``, ``bf16-mixed``), which
        cannot clip the gradients of an optimizer that unscales them inside its step (fused AdamW)."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        trainer = self.trainer
        return bool(trainer.gradient_clip_val) and isinstance(trainer.precision_plugin, MixedPrecision)

    def _step_in_backward(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
        """Update each parameter as soon as its gradient is complete, then free the gradient.

        The full set of gradients never exists at once (peak memory drops by up to the size of the
        trainable parameters). The optimizer updates exactly the parameters that hold a gradient, so
        stepping it from every parameter's post-accumulate hook equals one step after backward; the
        step Lightning makes after backward then finds no gradients and does nothing. Needs one
        optimizer step per backward: no gradient accumulation, no clipping of the global norm, one device.
        """
        trainer = self.trainer
        if trainer.accumulate_grad_batches != 1 or trainer.gradient_clip_val or trainer.world_size > 1:
            raise ValueError(
                "module.optimizer_in_backward steps every parameter during backward: it needs "
                "trainer.accumulate_grad_batches=1, no gradient clipping and a single device "
                f"(got accumulate {trainer.accumulate_grad_batches}, clip {trainer.gradient_clip_val}, "
                f"world size {trainer.world_size})"
            )
        for handle in self._step_hooks:
            handle.remove()

        def step(param: torch.nn.Parameter) -> None:
            optimizer.step()
            param.grad = None

        self._step_hooks = [p.register_post_accumulate_grad_hook(step) for p in params]

    def current_split(self) -> str:
        """The datamodule split the running stage reads (train / validation / test); per-row caches key on it."""
        stage = self.trainer.state.stage
        split = {"train": "train", "validate": "validation", "sanity_check": "validation"}.get(
            stage.value if stage else "", "test"
        )
        datasets = self.trainer.datamodule.datasets
        return split if datasets.get(split) else "validation"

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.last_fit_validation_step = self.global_step

    def auto_cache(self, setting: str | None, name: str) -> str | None:
        """A cache folder setting: ``auto`` = ``<cache_dir>/<name>`` (no cache without a cache_dir), else
        the setting itself (None = off)."""
        if setting != "auto":
            return setting
        return None if self.cache_dir is None else f"{self.cache_dir}/{name}"

    def call_loss(self, inputs):
        """Run the loss on its inputs object; a stateful loss gets its state and the module keeps the update.

        Training steps update the state; validation and test read it without changing it. With several
        ranks the updated state is averaged over them, so every rank continues from the same state (a
        running mean over each rank's batches becomes the mean over all ranks' batches).
        """
        if not self.loss_state:
            return self.loss(inputs)
        state = {k: v.to(self.device) for k, v in self.loss_state.items()}
        out = self.loss(inputs, state=state)
        if out.state is not None and self.training and torch.is_grad_enabled():
            new = {k: v.detach() for k, v in out.state.items()}
            if self._trainer is not None and self.trainer.world_size > 1:
                new = {k: self.trainer.strategy.reduce(v, reduce_op="mean") for k, v in new.items()}
            self.loss_state = {k: v.cpu() for k, v in new.items()}
        return out

    # -- numerics guard ----------------------------------------------------------------
    def guard_finite(self, loss: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor | None:
        """Return ``loss`` if finite; else count the step, and stop after ``max_bad_steps`` in a row.

        On several ranks the loss must be finite on every rank, else every rank stops at once: Lightning
        refuses a skipped step there (a rank returning None), and a rank that failed alone would leave the
        others waiting in the gradient all-reduce.
        """
        finite = torch.isfinite(loss.detach()).float()
        several = self._trainer is not None and self.trainer.world_size > 1
        if several:
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        if finite.item() == 1.0:
            self._bad_steps_in_a_row = 0
            return loss
        rows = [] if index is None else index.tolist()
        where = "" if not torch.isfinite(loss) else " on another rank"
        if several:
            raise FloatingPointError(
                f"non-finite loss{where} at step {self.global_step} (this rank's dataset rows {rows}); a step "
                "cannot be skipped on several ranks: lower the learning rate or check those rows"
            )
        self._bad_steps_in_a_row += 1
        self.bad_steps_total += 1
        log.warning("non-finite loss at step %d (dataset rows %s): step skipped", self.global_step, rows)
        if self._bad_steps_in_a_row >= self.max_bad_steps:
            raise FloatingPointError(
                f"{self._bad_steps_in_a_row} non-finite losses in a row; last batch held dataset rows {rows}"
            )
        return None

    # -- lean checkpoints --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        state = checkpoint["state_dict"]
        for key in [k for k in state if k not in trainable]:
            del state[key]
        checkpoint["prefdistill"] = {
            "bad_steps_total": self.bad_steps_total,
            "loss_state": {k: v.clone() for k, v in self.loss_state.items()},
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored = True  # the policy is no longer the untrained one
        state = checkpoint.get("prefdistill", {})
        self.bad_steps_total = state.get("bad_steps_total", 0)
        self.loss_state.update(state.get("loss_state", {}))
        self._resumed_rng = state.get("rng")  # set at the first training batch: see on_train_batch_start

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """A resumed run takes up the checkpoint's RNG states here, once, so dropout masks and rollouts continue
        exactly where the run stopped: not when the checkpoint loads, because Lightning then builds the data
        loaders (each new iterator draws its base seed from torch's generator, a draw the uninterrupted run made
        before it saved the checkpoint)."""
        rng, self._resumed_rng = getattr(self, "_resumed_rng", None), None
        if rng is not None:
            set_rng_state(rng)

    # -- steps: every kind's module defines compute(batch) -> (loss, metrics) ----------------
    def compute(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss, metrics = self.compute(batch)
        self.log_metrics("train", metrics, batch_size=len(batch["index"]))
        return self.guard_finite(loss, batch.get("index"))

    def validation_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("val", metrics, batch_size=len(batch["index"]))

    def test_step(self, batch, batch_idx):
        _, metrics = self.compute(batch)
        self.log_metrics("test", metrics, batch_size=len(batch["index"]))

    def log_metrics(self, split: str, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log ``metrics`` (per-row tensors or scalars) as ``<split>/<name>`` batch means.

        Training metrics are logged every step, as the means over the global batch (every rank's rows);
        held-out metrics once per epoch, as the means over every row of the split on every rank (Lightning
        sums value x batch size and batch sizes over ranks). So a run on N ranks logs what one rank logs
        with the N batches in one.
        """
        on_step = split == "train"
        if on_step and self._trainer is not None and self.trainer.optimizers:
            metrics = {**metrics, "lr": torch.tensor(self.trainer.optimizers[0].param_groups[0]["lr"])}
        means = {name: value.float().mean() for name, value in metrics.items()}
        if on_step:
            means = self._global_batch_means(means, batch_size)
        for name, value in means.items():
            self.log_mean(split, name, value, batch_size)

    def log_mean(self, split: str, name: str, value: torch.Tensor, batch_size: int) -> None:
        """Log one mean as ``<split>/<name>``: every step in training, else once per epoch (weighted by
        ``batch_size`` rows, summed over ranks); the loss and the reward accuracy on the progress bar."""
        on_step = split == "train"
        self.log(
            f"{split}/{name}",
            value,
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=name in ("loss", "reward/accuracy"),
            batch_size=batch_size,
            sync_dist=not on_step,
        )

    def _global_batch_means(self, means: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        """Per-rank batch means -> means over every rank's rows, weighted by batch size, in one collective
        (every rank logs the same names at a step: they depend on the loss and on draws seeded alike on all)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return means
        names = sorted(means)
        local = torch.stack([means[n].to(self.device) for n in names] + [torch.ones((), device=self.device)])
        total = self.trainer.strategy.reduce(local * batch_size, reduce_op="sum")
        return {name: total[i] / total[-1] for i, name in enumerate(names)}
