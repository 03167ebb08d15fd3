"""A seeded shuffling sampler that can resume mid-epoch.

Epoch ``e`` visits the examples in ``randperm(n, seed + e)``. The datamodule saves how
many batches of the current epoch were consumed in every Lightning checkpoint; on
resume the sampler skips exactly those, so a killed run continues with the same data
order it would have seen uninterrupted (no example repeated, none skipped).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    def __init__(self, num_examples: int, seed: int):
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0
        self.skip = 0  # examples of `epoch` already consumed before a restart

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        self.epoch, self.skip = epoch, consumed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        # The epoch's full length even right after a resume: Lightning derives the schedule
        # length (estimated_stepping_batches) from it, and that must not change on restart.
        return self.num_examples
