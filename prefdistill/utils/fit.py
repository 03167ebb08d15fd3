"""What the training app reads off a Lightning trainer: held-out metrics, training metrics, the W&B folder."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger("prefdistill.train")


def scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Logged metrics as floats, those starting with ``prefix`` only."""
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def validated(trainer: L.Trainer, module, datamodule, enabled: bool, logged: bool = True) -> dict[str, float]:
    """Held-out metrics of the current weights: a validation pass, or fit's own last one when it
    validated exactly these weights (the split is not run twice). Empty when disabled. ``logged=False``
    keeps the pass out of the loggers (a resumed run's "before" pass: its first launch logged it)."""
    if not enabled or trainer.limit_val_batches == 0:
        return {}
    if trainer.global_step > 0 and module.last_fit_validation_step == trainer.global_step:
        return scalars(trainer.callback_metrics, "val/")
    loggers = trainer.loggers
    trainer.loggers = loggers if logged else []
    try:
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
    finally:
        trainer.loggers = loggers
    return scalars(results[0]) if results else {}


def wandb_dir(loggers) -> str | None:
    """The offline-run-* folder of the run's W&B logger (``wandb sync <it>``), if there is one."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            return str(Path(lg.experiment.dir).parent)
    return None


def wandb_url(loggers) -> str | None:
    """The web page of the run's W&B run when it is online (None offline or without W&B)."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            return getattr(lg.experiment, "url", None)
    return None


def log_before_after(before: dict[str, float], after: dict[str, float]) -> None:
    """One line per held-out metric, before and after training. ``val/reward/accuracy`` is TRL's (ties count as
    wrong, so it reads 0 while the policy equals the reference); ``val/reward/accuracy_ties_half`` counts a tie
    as 1/2 and ``val/reward/ties`` is the fraction of tied pairs (``losses/terms.py``)."""
    for name in sorted(set(before) | set(after)):
        log.info("%-32s before %9.4f   after %9.4f", name, before.get(name, float("nan")),
                 after.get(name, float("nan")))  # fmt: skip
