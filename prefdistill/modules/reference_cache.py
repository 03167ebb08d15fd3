"""Reference log-probs computed once per (data, reference model) and stored on disk.

A DPO-family loss needs the frozen reference's summed log-probs of every chosen and
rejected response. They never change during training, so we compute them in one
no-grad pass, store them keyed by everything that changes them, and look them up by
dataset row while training: no reference model is held and no reference forward runs
per step, and every job of a beta/margin/lr sweep reuses the same file.

Key = sha256 over: the tokenized examples of the split (prompt/chosen/rejected token ids
and row indices: this covers the dataset content, split, tokenizer, chat template, max
lengths and truncation policy), the reference ``ModelSpec.identity()`` (hub id or path,
revision, GGUF fingerprint, random-init config + seed) and its dtype, and a format
version. Files are written atomically (temporary file + rename) and checked on read: a
half-written or mismatched file is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from prefdistill.utils.atomic import atomic_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")


def examples_digest(examples: list[dict]) -> str:
    """sha256 of the token ids and row indices of a split's tokenized pair examples."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(str(ex["index"]).encode())
        for field in _FIELDS:
            ids = ex.get(field) or []
            h.update(b"|" + field.encode() + b":" + ",".join(map(str, ids)).encode())
    return h.hexdigest()


def cache_key(examples: list[dict], reference_identity: dict) -> str:
    payload = {
        "version": FORMAT_VERSION,
        "examples": examples_digest(examples),
        "reference": reference_identity,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


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
        """The entry for ``key``: read if a valid one exists, else ``compute()``d and saved; logged as ``label``."""
        data = self.load(key)
        if data is None:
            data = compute()
            log.info("%s: computed and cached in %s", label, self.save(key, **data))
        else:
            log.info("%s: reused %s", label, self.path(key))
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


class ReferenceCache(TensorCache):
    """``<key>.pt`` = {"key", "index" (N,), "chosen" (N,), "rejected" (N,)} in fp32."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root, ("index", "chosen", "rejected"), what="reference")

    def save(self, key: str, index: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> Path:
        return super().save(key, index=index, chosen=chosen.float(), rejected=rejected.float())


def lookup_table(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """(max_index + 1, 2) table of [chosen, rejected] reference log-probs by row; NaN where absent."""
    index = data["index"].long()
    table = torch.full((int(index.max()) + 1, 2), float("nan"))
    table[index, 0] = data["chosen"]
    table[index, 1] = data["rejected"]
    return table
