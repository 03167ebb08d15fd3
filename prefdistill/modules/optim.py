"""Learning-rate schedules, built from config as partials: ``scheduler(optimizer, num_training_steps)``.

The number of training steps is only known once Lightning has the data, so the config
holds a ``_partial_`` node and the module completes it in ``configure_optimizers``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "linear", "cosine")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    num_training_steps: int,
    *,
    name: str = "cosine",
    warmup_steps: int = 0,
    warmup_ratio: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup (``warmup_steps``, or ``warmup_ratio`` of the run), then ``name`` decay.

    ``min_lr_ratio`` is the floor of the decay as a fraction of the peak learning rate.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    total = max(1, int(num_training_steps))
    warmup = warmup_steps or int(round(warmup_ratio * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        decay = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return LambdaLR(optimizer, factor)
