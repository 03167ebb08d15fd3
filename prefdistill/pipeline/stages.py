"""Cached pipeline stages: an output folder keyed by a hash of what produced it, reused when finished.

    stage = Stage("pairs", hash_inputs({"teacher": t_hash, "student": s_hash, "ratio": 0.1}), build)
    result = stage.run(cache_dir)      # -> StageResult(name, path, status="ran" | "reused")

``fn(folder)`` writes into ``<cache_dir>/stages/<name>-<hash>/``. The marker ``_COMPLETE.json`` is
written last (atomically), and only a folder with the marker is reused, so a run killed half-way is
never mistaken for a finished one. A non-``resumable`` stage starts from an empty folder each time it
runs; a ``resumable`` one (sampling shards) keeps what the killed run left and continues from it.

On several ranks (``prefdistill.utils.distributed``) every rank calls ``run`` together. A ``sharded``
stage's ``fn`` runs on every rank and does that rank's part (sampling: its shard files; scoring: its
block of prompts); after a barrier rank 0 runs ``finish(folder)`` (merging the parts, once) and writes
the marker. Any other stage runs on rank 0 while the others wait. Either way every rank then reads the
one marker, and a finished stage is reused by all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefdistill.utils import distributed
from prefdistill.utils.atomic import atomic_write_json
from prefdistill.utils.cache import MARKER

log = logging.getLogger("prefdistill.pipeline")


@dataclass(frozen=True)
class StageResult:
    name: str
    path: Path
    status: str  # "ran" | "reused"
    info: dict | None = None  # what fn returned (counters), also stored in the marker

    @property
    def reused(self) -> bool:
        return self.status == "reused"


@dataclass
class Stage:
    name: str
    inputs_hash: str
    fn: Callable[[Path], dict | None]
    resumable: bool = False
    description: dict | None = None  # human-readable inputs, stored in the marker for inspection
    sharded: bool = False  # fn does this rank's part on every rank (see the module docstring)
    finish: Callable[[Path], dict | None] | None = None  # rank 0 after every part (merges); returns the info

    def folder(self, cache_dir: str | os.PathLike) -> Path:
        return Path(cache_dir) / "stages" / f"{self.name}-{self.inputs_hash}"

    def run(self, cache_dir: str | os.PathLike) -> StageResult:
        folder = self.folder(cache_dir)
        marker = folder / MARKER
        if distributed.all_true(marker.is_file()):
            log.info("stage %-16s reused  %s", self.name, folder)
            return StageResult(self.name, folder, "reused", self._info(marker))
        rank_zero = distributed.is_rank_zero()
        if rank_zero and folder.exists() and not self.resumable:
            log.info("stage %-16s found unfinished output, starting over: %s", self.name, folder)
            shutil.rmtree(folder)
        distributed.barrier()
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        info = self.fn(folder) if self.sharded or rank_zero else None
        distributed.barrier()  # every part is done
        if rank_zero:
            if self.finish is not None:
                info = self.finish(folder)
            atomic_write_json(marker, {
                "name": self.name, "inputs_hash": self.inputs_hash, "inputs": self.description,
                "info": info, "seconds": round(time.time() - started, 1),
            })  # fmt: skip
            log.info("stage %-16s ran     %s (%.1f s)", self.name, folder, time.time() - started)
        distributed.barrier()  # the marker is written
        return StageResult(self.name, folder, "ran", info if rank_zero else self._info(marker))

    @staticmethod
    def _info(marker: Path) -> dict | None:
        return json.loads(marker.read_text()).get("info")


def summarize(results: list[StageResult]) -> str:
    """One line per stage for the run log: ``name: ran|reused  path``."""
    return "\n".join(f"  {r.name:<16} {r.status:<7} {r.path}" for r in results)
