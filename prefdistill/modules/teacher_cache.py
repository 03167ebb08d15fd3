"""Top-k teacher log-probs computed once per (data, teacher, k) and stored on disk.

Token-level distillation on dataset responses needs the teacher's next-token distribution at
every response position. Those never change during training, so one no-grad pass stores the
teacher's ``k`` most likely tokens and their log-probs per position, and training reads them by
dataset row: the teacher is not held in memory and never runs per step.

**Approximation.** The losses then compare teacher and student on the teacher's top-k support
only, both renormalised on it (see :mod:`prefdistill.losses.divergence`, "Top-k teacher"): student
mass outside the top-k is not penalised by the KD term, and the divergence is exact only when the
teacher's mass outside its top-k is 0. ``k = 64``-``256`` keeps nearly all of a trained LM's mass.

Key = sha256 over the tokenized examples of the split (token ids and rows: covers dataset content,
split, tokenizer, chat template, max lengths), the teacher ``ModelSpec.identity()`` and ``k``;
written atomically and checked on read like the reference cache (``reference_cache.py``).
File: ``index`` (N,) rows, ``offsets`` (N+1,) into the flat ``logps`` (M, k) float32 and ``ids``
(M, k) int32, M = total response tokens, positions in order.
"""

from __future__ import annotations

import torch

from prefdistill.modules.reference_cache import TensorCache, cache_key

FIELDS = ("index", "offsets", "logps", "ids")


class TeacherCache(TensorCache):
    def __init__(self, root):
        super().__init__(root, FIELDS, what="teacher top-k")


def teacher_cache_key(examples: list[dict], teacher_identity: dict, topk: int) -> str:
    return cache_key(examples, {"teacher": teacher_identity, "topk": int(topk), "kind": "teacher_topk"})


def topk_rows(
    teacher_logits: torch.Tensor, mask: torch.Tensor, topk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, k) top-k log-probs and ids at the masked positions of (B, T, V) logits, row-major order."""
    logps = torch.log_softmax(teacher_logits[mask].float(), -1)
    values, ids = logps.topk(min(topk, logps.shape[-1]), dim=-1)
    return values, ids.int()


class TeacherTable:
    """Lookup of cached top-k rows by dataset row, assembled into (B, T, k) tensors for a batch."""

    def __init__(self, data: dict[str, torch.Tensor]):
        self.offsets, self.logps, self.ids = data["offsets"].long(), data["logps"], data["ids"]
        self.position = {int(r): i for i, r in enumerate(data["index"].tolist())}

    def batch(self, index: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.logps.shape[-1]
        logps = mask.new_zeros((*mask.shape, k), dtype=torch.float32)
        ids = mask.new_zeros((*mask.shape, k), dtype=torch.long)
        for b, row in enumerate(index.tolist()):
            if row not in self.position:
                raise KeyError(f"teacher cache has no entry for dataset row {row}")
            i = self.position[row]
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            n = int(mask[b].sum())
            if hi - lo != n:
                raise ValueError(
                    f"teacher cache row {row} holds {hi - lo} response tokens but the batch has {n}; "
                    "the cache key should have changed: delete the cache folder"
                )
            logps[b, mask[b]] = self.logps[lo:hi].to(logps.device)
            ids[b, mask[b]] = self.ids[lo:hi].long().to(ids.device)
        return {"teacher_topk_logps": logps, "teacher_topk_ids": ids}
