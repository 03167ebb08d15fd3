"""Content keys and the on-disk tensor cache every cached artifact uses.

* :func:`content_hash` / :func:`hash_inputs` — sha256 of canonical JSON (sorted keys): the same
  content gives the same key (pipeline stages, sampling shards, cache files).
* :func:`tokenized_data_key` — the key of a computation over a split's tokenized examples and a model
  (reference log-probs, teacher top-k): token ids and row indices cover the dataset content, split,
  tokenizer, chat template, max lengths and truncation policy.
* :data:`MARKER` — the record a finished cached stage folder ends with (name, inputs, info, seconds).
* :class:`TensorCache` — a folder of ``<key>.pt`` files, written atomically, checked on read; on several
  ranks each computes its rows and rank 0 merges them (:func:`merge_parts`) into the one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from prefdistill.utils import distributed
from prefdistill.utils.atomic import atomic_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "_COMPLETE.json"  # written last into a finished stage folder (pipeline/stages.py); only such a folder is read
TOKEN_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _plain(obj: Any) -> Any:
    """JSON fallback: an OmegaConf node as the plain container it holds (a config node and the dict Hydra
    converts it to are one content), anything else as its ``str``."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return str(obj)


def content_hash(obj: Any) -> str:
    """sha256 (hex) of canonical JSON (sorted keys): the same content gives the same hash."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_inputs(obj: Any, length: int = 12) -> str:
    """A short :func:`content_hash`: a stable key for 'what produced this output'."""
    return content_hash(obj)[:length]


def examples_digest(examples: Iterable[dict], fields: tuple[str, ...] = TOKEN_FIELDS) -> str:
    """sha256 of the token ids and row indices of a split's tokenized examples."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(str(ex["index"]).encode())
        for field in fields:
            ids = ex.get(field) or []
            h.update(b"|" + field.encode() + b":" + ",".join(map(str, ids)).encode())
    return h.hexdigest()


def tokenized_data_key(examples: Iterable[dict], model_identity: dict) -> str:
    """Key of a computation over tokenized examples by a model (its ``ModelSpec.identity()`` and more)."""
    payload = {"version": FORMAT_VERSION, "examples": examples_digest(examples), "model": model_identity}
    return hash_inputs(payload, 32)


class TensorCache:
    """Folder of ``<key>.pt`` files, each a dict of CPU tensors plus its ``key``; written atomically.

    ``load`` returns None for a missing, unreadable, foreign or incomplete file (it is then
    recomputed), so a half-written cache is never used.
    """

    def __init__(self, root: str | os.PathLike, fields: tuple[str, ...], what: str = "tensor"):
        self.root = Path(root)
        self.fields = fields
        self.what = what

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign file: recompute, never trust it
            log.warning("ignoring unreadable %s cache %s (%s)", self.what, path, err)
            return None
        if data.get("key") != key or not set(self.fields) <= set(data):
            log.warning("ignoring %s cache %s: key or fields do not match", self.what, path)
            return None
        return data

    def load_or_compute(self, key: str, compute: Callable[[], dict[str, torch.Tensor]], label: str) -> dict:
        """The entry for ``key``: read if a valid one exists, else ``compute()``d and saved; logged as ``label``.

        On several connected ranks (``prefdistill.utils.distributed``) every rank must call this together, and
        ``compute()`` returns the entries of this rank's rows only (the datamodule's ``loader``/``shard`` give
        each rank its block). Each rank writes its part, rank 0 merges the parts into the one ``<key>.pt``,
        and every rank reads that file: each row is computed once, by one rank, and the entry is written once.
        """
        data = self.load(key)
        if distributed.all_true(data is not None):
            log.info("%s: reused %s", label, self.path(key))
            return data
        data = compute()
        if distributed.world_size() == 1:
            log.info("%s: computed and cached in %s", label, self.save(key, **data))
            return data
        return self._merge_ranks(key, data, label)

    def _merge_ranks(self, key: str, data: dict[str, torch.Tensor], label: str) -> dict:
        """Every rank's part of ``key`` (``data`` is this rank's) merged into one entry, saved once, read by all."""
        rank, world = distributed.rank(), distributed.world_size()
        run = distributed.gather(uuid.uuid4().hex[:8])[0]  # rank 0's: parts of another job never mix in
        paths = [self.root / f"{key}.part-{run}-{r}-of-{world}.pt" for r in range(world)]
        with atomic_file(paths[rank]) as tmp:
            torch.save({name: t.detach().cpu() for name, t in data.items()}, tmp)
        log.info("%s: rank %d of %d computed %d rows", label, rank, world, len(data["index"]))
        distributed.barrier()
        if rank == 0:
            merged = merge_parts([torch.load(p, map_location="cpu", weights_only=True) for p in paths])
            log.info("%s: merged %d ranks' parts into %s", label, world, self.save(key, **merged))
            for p in paths:
                p.unlink()
        distributed.barrier()
        data = self.load(key)
        if data is None:
            raise RuntimeError(f"{label}: rank {rank} cannot read {self.path(key)}, which rank 0 wrote (is "
                               f"{self.root} on a filesystem every rank sees?)")  # fmt: skip
        return data

    def save(self, key: str, **tensors: torch.Tensor) -> Path:
        missing = set(self.fields) - set(tensors)
        if missing:
            raise ValueError(f"{self.what} cache entry lacks {sorted(missing)}")
        path = self.path(key)
        data = {"key": key, **{name: t.detach().cpu() for name, t in tensors.items()}}
        with atomic_file(path) as tmp:
            torch.save(data, tmp)
        return path


def computed_by_ranks(compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """An entry kept in memory only (no cache folder): every rank computes its rows (``compute()``, as for
    :meth:`TensorCache.load_or_compute`) and receives every rank's, merged."""
    data = compute()
    return data if distributed.world_size() == 1 else merge_parts(distributed.gather(data))


def merge_parts(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Entries of disjoint row sets, one after the other: every field concatenated in order, except ``offsets``
    (per-row boundaries into the per-token fields, ``(rows + 1,)`` from 0), whose parts are re-based."""
    index = torch.cat([p["index"] for p in parts])
    if len(index.unique()) != len(index):
        raise ValueError("cache parts share rows: each row must be computed by exactly one rank")
    merged = {name: torch.cat([p[name] for p in parts]) for name in parts[0] if name != "offsets"}
    if "offsets" in parts[0]:
        counts = torch.cat([p["offsets"].diff() for p in parts])
        merged["offsets"] = torch.nn.functional.pad(counts.cumsum(0), (1, 0))
    return merged
