"""Ranks of a run: which process this is, waiting for the others, and splitting work between them.

A multi-rank run is N processes running the same command: Lightning's launcher on one node
(``python train.py hardware=ddp_cpu`` or ``hardware=ddp`` starts processes 1..N-1 itself, each re-running
the command with ``LOCAL_RANK`` set), ``torchrun``, or ``srun`` under SLURM (which start every process and
set ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` or ``SLURM_PROCID``/``SLURM_NTASKS``). The training app calls
:func:`start_ranks` right after building the trainer: every process then exists and is connected
*before* the pipeline stages and data set-up, so stages can split prompts across ranks, and caches
and files are written once.

Until :func:`start_ranks` has connected the processes, every process is its own world (rank 0 of 1):
what runs before it (config, preflight) must be safe to run on every process.

Waiting (:func:`barrier`, :func:`all_true`) goes through a gloo group with a long timeout
(``WAIT_TIMEOUT``): a pipeline stage that only rank 0 runs (an SFT stage) or a slow shard keeps the
other ranks waiting far longer than the default 30 minutes of a process group, and gloo carries these
small messages on GPU machines too.

Splitting: :func:`part` gives a rank its contiguous block of N items (blocks in rank order are the
items in order, so merged outputs keep the single-process order); :func:`shard_batches` cuts a rank's
block into batches, the same number on every rank (ZeRO-3 runs every forward on every rank together).
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import torch.distributed as dist
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

log = logging.getLogger(__name__)

WAIT_TIMEOUT = timedelta(hours=48)  # longest any rank waits for the others (a rank-0-only stage)
_wait_group = None  # the gloo group of barrier()/all_true(), created by start_ranks


def connected() -> bool:
    """Whether this process is one of several connected ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not connected)."""
    return dist.get_rank() if connected() else 0


def world_size() -> int:
    """The number of connected ranks (1 when not connected)."""
    return dist.get_world_size() if connected() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait until every rank arrives here (a no-op on one rank)."""
    if connected():
        dist.barrier(group=_wait_group)


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank: ranks that branch on what they see on disk (a cache file,
    a stage marker) take the same branch, even when another job writes the file in between."""
    return all(gather(bool(flag)))


def gather(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` on one rank); pickled and sent through gloo, in host
    memory, so every rank ends up holding all of them."""
    if not connected():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj, group=_wait_group)
    return out


def start_ranks(trainer) -> None:
    """Start and connect this run's processes now, before anything that splits its work by rank.

    Lightning would do both on the first ``validate``/``fit``: its launcher (for a strategy that starts
    processes itself) runs the command again in N-1 child processes, and ``setup_environment``
    initialises the process group. Both are idempotent, so the trainer's own calls later find them done.
    Under torchrun/SLURM the processes exist already and only connect here. No-op on one device.
    """
    global _wait_group
    strategy = trainer.strategy
    if trainer.world_size <= 1 or connected():
        return
    launcher = strategy.launcher
    if launcher is not None and not isinstance(launcher, _SubprocessScriptLauncher):
        raise ValueError(
            f"{type(launcher).__name__} starts new processes for every trainer call; the run's stages need its "
            "ranks from the start: use a strategy that launches by re-running the command (e.g. DDPStrategy's "
            "default start_method='popen'), or torchrun/srun"
        )
    if launcher is not None:
        launcher.launch(lambda: None, trainer=trainer)  # spawns children only if nobody else did
    strategy.setup_environment()
    _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    log.info("rank %d of %d connected", rank(), world_size())


def stop_ranks(trainer) -> None:
    """After a failure on this rank: end the child processes Lightning's launcher started (they would wait
    for this rank until ``WAIT_TIMEOUT``). Under torchrun or SLURM the launcher ends the others itself."""
    launcher = getattr(trainer.strategy, "launcher", None)
    for proc in getattr(launcher, "procs", []):
        if proc.poll() is None:
            log.error("ending rank process %d: this rank failed", proc.pid)
            proc.kill()


def part(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``n`` items: sizes differ by at most one, blocks in rank order
    cover ``range(n)`` in order."""
    return range(rank * n // world, (rank + 1) * n // world)


def shard_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Rank ``rank``'s batches of ``range(n)`` (unshuffled): its :func:`part`, cut into as many batches as
    the largest block needs at ``batch_size``, so every rank has the same number of batches.

    Batches hold ``batch_size`` rows while enough rows remain to give every later batch one, the rest
    fewer. On one rank this is ``range(n)`` in batches of ``batch_size`` and a shorter last one. Every
    rank has the same count whenever its block holds at least that many rows (always, unless
    ``batch_size`` is 1 or a block is empty, i.e. fewer rows than ranks).
    """
    rows = part(n, rank, world)
    largest = math.ceil(n / world)
    count = math.ceil(largest / batch_size)
    batches, start = [], rows.start
    for i in range(count):
        take = min(batch_size, rows.stop - start - (count - 1 - i))
        if take > 0:
            batches.append(list(range(start, start + take)))
            start += take
    return batches
