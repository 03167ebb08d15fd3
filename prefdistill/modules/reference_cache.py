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
version (``prefdistill.utils.cache.tokenized_data_key``). Files are written atomically (temporary
file + rename) and checked on read: a half-written or mismatched file is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from prefdistill.utils.cache import TensorCache, tokenized_data_key


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


class ReferenceTables:
    """Mixin of the modules whose reference log-probs are cached per row (PreferenceModule, UnpairedModule):
    the table of a split, loaded from ``reference_cache`` or computed once by the module's
    ``_compute_reference(loader, split)``, and kept for the run. The key covers the split's tokenized rows
    (``reference_examples`` picks the fields that matter) and the reference model's identity."""

    def reference_examples(self, examples: list[dict]) -> list[dict]:
        """The rows the cache key covers (default: the split's examples as tokenized)."""
        return examples

    def cached_reference(self, index: torch.Tensor, columns: int) -> torch.Tensor:
        """(B, columns) cached reference log-probs of dataset rows ``index`` in the running split (columns: the
        chosen / matched response, then the rejected / mismatched one); a KeyError names rows it lacks."""
        rows = self._reference_table(self.current_split())[index.cpu()][:, :columns]
        if torch.isnan(rows).any():
            raise KeyError(f"reference cache has no entry for rows {index.tolist()}")
        return rows

    def _reference_table(self, split: str) -> torch.Tensor:
        if split not in self._reference_tables:
            dm = self.trainer.datamodule
            spec = self.reference_spec or self.policy_spec
            data = self.reference_cache.load_or_compute(
                tokenized_data_key(self.reference_examples(dm.datasets[split]), spec.identity()),
                lambda: self._compute_reference(dm.loader(split), split),
                f"reference log-probs [{split}]",
            )
            self._reference_tables[split] = lookup_table(data)
        return self._reference_tables[split]
