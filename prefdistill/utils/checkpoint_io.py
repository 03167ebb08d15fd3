"""Checkpoints that are either the previous complete file or the new complete file, never torn.

Lightning's ``TorchCheckpointIO`` serialises into memory and writes through an fsspec
transaction whose temporary file lives in the system temp folder; when that is another
filesystem than the run folder (node-local ``/tmp``, run folder on NFS/Lustre) the final
move is a copy onto ``last.ckpt`` in place, so a kill during it leaves a torn file that
``ckpt_path=auto`` would resume from. :class:`AtomicCheckpointIO` writes a hidden
temporary sibling (``.last.ckpt.tmp-<pid>-<hex>``, same folder so same filesystem),
fsyncs it and renames it onto the target (:func:`prefdistill.utils.atomic.atomic_file`).
A crash leaves the previous checkpoint untouched; a killed writer's temporary sibling does
not end in ``.ckpt``, so nothing takes it for a checkpoint, and the next successful save
of that file removes it. The checkpoint is streamed to disk, not buffered in memory.

Wired in ``configs/trainer/default.yaml`` (``trainer.plugins``). Remote paths (``s3://``
...) fall back to Lightning's writer. DeepSpeed strategies write checkpoint folders through
the DeepSpeed engine and never call a ``CheckpointIO``, so ``configs/hardware/deepspeed_*``
set ``trainer.plugins: null``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from prefdistill.utils.atomic import atomic_file

_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go through a temporary sibling and a rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # raises on storage_options
            return
        path = Path(path)
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(path.parent)
        remove_stale_tmp(path)


def _is_local(path) -> bool:
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every filesystem lets a folder be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(path: Path) -> list[Path]:
    """Delete the temporary siblings of ``path`` left by writers that are no longer running."""
    removed = []
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        m = _TMP.match(p.name)
        if m and m["name"] == path.name and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
