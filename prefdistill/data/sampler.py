"""A seeded shuffling sampler that can resume mid-epoch.

Epoch ``e`` visits the examples in ``randperm(n, seed + e)``. The datamodule saves how
many batches of the current epoch were consumed in every Lightning checkpoint; on
resume the sampler skips exactly those, so a killed run continues with the same data
order it would have seen uninterrupted (no example repeated, none skipped).

It is a ``torch.utils.data.DistributedSampler`` (the same permutation, rank ``r`` taking every
``num_replicas``-th index), so under DDP/DeepSpeed Lightning uses it as it is: Lightning wraps any
other sampler in a ``DistributedSamplerWrapper``, which indexes the full epoch and breaks (IndexError)
on a sampler that skips. The skip counts examples of this rank's shard.
"""

from __future__ import annotations

from torch.utils.data import DistributedSampler


class ResumableRandomSampler(DistributedSampler):
    def __init__(self, num_examples: int, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(num_examples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_examples = num_examples
        self.skip = 0  # examples of `epoch` (of this rank's shard) already consumed before a restart

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        self.epoch, self.skip = epoch, consumed

    def __iter__(self):
        order = list(super().__iter__())  # randperm(num_examples, seed + epoch)[rank::num_replicas]
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        # The epoch's full length even right after a resume: Lightning derives the schedule
        # length (estimated_stepping_batches) from it, and that must not change on restart.
        return self.num_samples
