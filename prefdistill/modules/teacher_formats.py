"""How a teacher's next-token distribution is stored per response position: three compact formats.

A full distribution over a 49k-262k vocabulary is too large to keep for every token, so a teacher table
(``teacher_cache.py``) keeps a sparse view of it. Values are stored as float16, token ids as int32.

* ``topk``: the ``k`` most likely tokens and their log-probs. The losses renormalise both distributions on
  this support (``prefdistill/losses/divergence.py``, "Top-k teacher"): biased, the student's mass outside
  the support is never penalised, and the divergence is underestimated by the teacher's tail.
* ``topk_tail``: the same plus ``tail_logps``, the log of the teacher's mass outside its top-k (computed
  from the full vocabulary, not as ``1 - sum``). The losses compare the two distributions on the k + 1
  categories {top-k tokens, everything else}, the student's tail being its own mass outside the support:
  a coarse-graining of the full distributions, so the divergence is still a lower bound (data-processing
  inequality), but student mass outside the teacher's top-k is now penalised.
* ``sampled``: Random-Sampling KD (Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
  Distillation in LLMs", ACL 2025, arXiv 2503.16870): ``k`` tokens are drawn with replacement from a
  proposal ``q`` (the teacher itself, ``q = p``, unless ``proposal_temperature`` flattens it:
  ``q ∝ p^(1/t)``); the distinct tokens are kept with importance weights ``w_v = (c_v / k) · p_v / q_v``
  (``c_v`` draws of ``v``; ``w_v = c_v / k`` when ``q = p``) and the teacher's log-probs ``log p_v``.
  ``E[Σ_v w_v f(v)] = Σ_v p_v f(v)`` for any ``f``: every loss that is an expectation under the teacher
  (forward KL, its cross-entropy and gradient ``q_θ - p``, skew KL) is estimated without bias
  (``prefdistill/losses/sparse_teacher.py``). Slots past a position's distinct tokens hold weight 0; the
  stored width is the largest number of distinct tokens any position of the split drew.

The draws of a position depend on ``(seed, dataset row)`` only, so a table is reproducible and independent
of batching and of which rank computed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS = ("topk", "topk_tail", "sampled")
ROW_FIELDS = {  # per-position fields of each format, besides the table's "index" and "offsets"
    "topk": ("logps", "ids", "label_logps"),
    "topk_tail": ("logps", "ids", "label_logps", "tail_logps"),
    "sampled": ("logps", "ids", "label_logps", "weights"),
}
SLOT_FIELDS = ("logps", "ids", "weights")  # (M, width) fields whose width ``finish`` trims
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class TeacherFormat:
    """One storage format (see the module docstring); ``k``: top-k size, or number of draws for ``sampled``."""

    name: str = "topk"
    k: int = 64
    seed: int = 0
    proposal_temperature: float = 1.0
    dtype: torch.dtype = torch.float16  # of the stored values (log-probs, weights)

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise ValueError(f"teacher format {self.name!r} is not one of {', '.join(FORMATS)}")
        if self.k < 1:
            raise ValueError(f"teacher format {self.name!r}: k must be >= 1, got {self.k}")
        if self.proposal_temperature <= 0:
            raise ValueError(f"proposal_temperature must be > 0, got {self.proposal_temperature}")

    @property
    def fields(self) -> tuple[str, ...]:
        return ("index", "offsets", *ROW_FIELDS[self.name])

    def key(self) -> dict:
        """What the stored values depend on, for cache keys."""
        key = {"format": self.name, "k": self.k, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.name == "sampled":
            key |= {"seed": self.seed, "proposal_temperature": self.proposal_temperature}
        return key

    @torch.no_grad()
    def rows(self, logps: torch.Tensor, targets: torch.Tensor, examples: torch.Tensor | None = None) -> dict:
        """The stored fields of R positions from their full log-probs ``logps`` (R, V) float32, the response
        tokens ``targets`` (R,) and (``sampled``) the dataset row of each position ``examples`` (R,)."""
        out = {"label_logps": logps.gather(-1, targets[:, None].long()).squeeze(-1).to(self.dtype)}
        if self.name == "sampled":
            if examples is None:
                raise ValueError(
                    "sampled teacher format: the dataset row of every position is needed (seeds)"
                )
            ids, weights = self._draw(logps, examples)
            return out | {"ids": ids.int(), "weights": weights.to(self.dtype),
                          "logps": torch.where(weights > 0, logps.gather(-1, ids), 0.0).to(self.dtype)}  # fmt: skip
        values, ids = logps.topk(min(self.k, logps.shape[-1]), dim=-1)
        out |= {"logps": values.to(self.dtype), "ids": ids.int()}
        if self.name == "topk_tail":
            out["tail_logps"] = torch.logsumexp(logps.scatter(-1, ids, _NEG_INF), -1).to(self.dtype)
        return out

    def _draw(self, logps: torch.Tensor, examples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, k) distinct drawn ids (first the most drawn; 0 in unused slots) and their weights (0 unused)."""
        t = self.proposal_temperature
        log_q = logps if t == 1.0 else torch.log_softmax(logps / t, -1)
        draws = torch.empty(logps.shape[0], self.k, dtype=torch.long)
        for example in examples.unique().tolist():  # one stream per (seed, dataset row)
            rows = (examples == example).nonzero().squeeze(-1)
            g = torch.Generator().manual_seed((self.seed * 0x9E3779B97F4A7C15 + int(example)) % 2**63)
            draws[rows] = torch.multinomial(log_q[rows].exp(), self.k, replacement=True, generator=g)
        counts = torch.zeros_like(logps).scatter_add_(1, draws, torch.ones_like(draws, dtype=logps.dtype))
        count, ids = counts.topk(self.k, dim=-1)  # distinct tokens first (count > 0)
        drawn = count > 0
        ratio = (logps.gather(-1, ids) - log_q.gather(-1, ids)).exp()  # p_v / q_v
        weights = torch.where(drawn, count / self.k * ratio, 0.0)
        return torch.where(drawn, ids, 0), weights

    def finish(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A whole table: ``sampled`` slots trimmed to the largest number of distinct tokens of any position."""
        if self.name != "sampled" or not len(data["weights"]):
            return data
        width = max(1, int((data["weights"] > 0).sum(-1).max()))
        return {k: v[:, :width] if k in SLOT_FIELDS else v for k, v in data.items()}


def bytes_per_token(data: dict[str, torch.Tensor]) -> float:
    """Stored bytes per response position of a same-vocabulary table (its per-position fields)."""
    positions = int(data["offsets"][-1]) if len(data["offsets"]) else 0
    per_position = sum(t.numel() * t.element_size() for k, t in data.items() if k not in ("index", "offsets"))
    return per_position / max(positions, 1)
