"""A seeded shuffling sampler that can resume mid-epoch.

Epoch ``e`` visits the examples in ``randperm(n, seed + e)``. The datamodule saves how
many batches of the current epoch were consumed in every Lightning checkpoint; on
resume the sampler skips exactly those, so a killed run continues with the same data
order it would have seen uninterrupted (no example repeated, none skipped).

It is a ``torch.utils.data.DistributedSampler`` (the same permutation, rank ``r`` taking every
``num_replicas``-th index), so under DDP/DeepSpeed Lightning uses it as it is: Lightning wraps any
other sampler in a ``DistributedSamplerWrapper``, which indexes the full epoch and breaks (IndexError)
on a sampler that skips. The skip counts examples of this rank's shard.

On ``W`` ranks with batch size ``b``, rank ``r``'s ``k``-th batch holds positions ``r + W*(b*k + j)`` of the
epoch's permutation, so the ``W*b`` rows of global step ``k`` are positions ``[W*b*k, W*b*(k+1))``: the rows
one rank with batch size ``W*b`` takes at step ``k``. When ``W`` does not divide the split, the permutation
is padded with its first rows (``DistributedSampler``'s rule), so every rank takes the same number of steps.

:class:`ShardBatches` is the unshuffled counterpart for held-out splits and cache passes: each rank's
contiguous block of rows, in the same number of batches on every rank, nothing repeated.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from prefdistill.utils.distributed import shard_batches


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


class ResumableLoader(DataLoader):
    """The training loader, resumable in Lightning's sense (``state_dict``/``load_state_dict``), so resuming
    mid-epoch raises no "dataloader is not resumable" warning: a resumed run sees exactly the batches an
    uninterrupted run sees (``tests/test_resume.py``).

    Its state is ``position()``: ``{"epoch", "batches_done"}`` as the trainer counts them (Lightning fetches a
    batch ahead, so the batches this loader yielded are one more). ``load_state_dict`` resumes its
    :class:`ResumableRandomSampler` there. Lightning calls it when it builds the loader after restoring its
    loops; when a schedule asks for ``estimated_stepping_batches`` first, the loader is built before, and the
    datamodule's own checkpoint state (restored earlier) resumes the sampler in the same way.
    """

    def __init__(self, *args, position: Callable[[], dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict:
        return self.position()

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.sampler, ResumableRandomSampler):  # overfit_batches swaps the sampler
            self.sampler.resume(state["epoch"], state["batches_done"] * self.batch_size)


class ShardBatches(DistributedSampler):
    """This rank's batches (lists of row indices) of an unshuffled split (``utils.distributed.shard_batches``).

    A loader reads it with ``batch_size=None`` over :class:`Rows`. Being a ``DistributedSampler``, Lightning
    keeps it as it is; otherwise it would put in a ``DistributedSampler`` that pads every rank to the same
    number of rows by repeating some, which would count those rows twice in held-out metrics.
    """

    def __init__(self, num_examples: int, batch_size: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(num_examples), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.batches = shard_batches(num_examples, batch_size, rank, num_replicas)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Rows(Dataset):
    """A list of examples indexed by a list of row indices (one batch per item, for :class:`ShardBatches`)."""

    def __init__(self, examples: list):
        self.examples = examples

    def __getitem__(self, rows: list[int]) -> list:
        return [self.examples[i] for i in rows]

    def __len__(self) -> int:
        return len(self.examples)
