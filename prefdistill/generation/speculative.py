"""Interleaved sampling of Speculative KD (Xu et al., ICLR 2025, arXiv 2410.11325, Algorithm 1).

At every step the student proposes the next token (sampled with the rollout's temperature / top-p); when the
proposal is not among the teacher's ``top_k`` tokens at that position, the teacher replaces it with a token
it samples itself (with ``teacher_temperature`` / ``teacher_top_p``). The response continues from the kept
token, whoever chose it. :class:`SpeculativeGenerator` is the HF backend (left padding, KV caches, finished
rows leave the batch, one random stream per sequence: :class:`~prefdistill.generation.hf.HFGenerator`) with the
teacher stepped alongside the student on the same tokens (as in teacher-mixed sampling). Both models must
share the tokenizer; a teacher with a padded vocabulary is cut to the student's ids.

Defaults are the released code's (google-research ``speculative_kd/config/kd_train.yaml``: top-K 25, teacher
temperature 0.2 and top-p 0.5; the student's 0.5 / 0.5 belong to the rollout's ``on_policy`` settings).

**Paper vs released code** (``speculative_kd/transformers/utils.py``, ``_speculative_kd_sampling``). The code
drafts 5 student tokens at a time and verifies them with one teacher pass; a rejection discards the rest of
the draft, so it samples the same process as token-by-token proposals. But it tests top-K membership on a
*second, independent* draw from the student's distribution, not on the drafted token, and keeps the drafted
token when that second draw is accepted. ``check: proposal`` (default) tests the proposed token (Algorithm 1),
``check: second_draw`` the code's second draw. The code also ranks the teacher's top-K after its
temperature / top-p warping (ties among tokens the nucleus cut to zero are broken arbitrarily); the ranking
here is the teacher's raw one (temperature does not change it).

Randomness: the proposals come from the row's own stream, exactly as plain sampling draws them; the teacher's
tokens and the second draws come from two side streams of the row, seeded from the row's seed. So a rollout
depends on its seed and its prompt only, and with every proposal accepted (``top_k`` = vocabulary) it is the
student's own sample. ``stats()`` gives the share of proposals the teacher replaced in the last call (the paper's correction
rate, Appendix L).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from prefdistill.generation.base import Completion, SamplingParams, sample_seed
from prefdistill.generation.hf import HFGenerator, sample_next
from prefdistill.generation.mixture import step_both

CHECKS = ("proposal", "second_draw")


@dataclass(frozen=True)
class Speculative:
    """How the teacher corrects the student's proposals (``on_policy.speculative``)."""

    top_k: int = 25  # a proposal outside the teacher's top-k is replaced
    teacher_temperature: float = 0.2
    teacher_top_p: float = 0.5
    check: str = "proposal"  # proposal (paper Algorithm 1) | second_draw (the released code)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"on_policy.speculative.top_k must be >= 1, got {self.top_k}")
        if self.check not in CHECKS:
            raise ValueError(f"on_policy.speculative.check must be one of {list(CHECKS)}, got {self.check!r}")
        self.teacher_sampling(1)  # checks temperature and top-p

    def teacher_sampling(self, max_new_tokens: int) -> SamplingParams:
        return SamplingParams(
            temperature=self.teacher_temperature, top_p=self.teacher_top_p, max_new_tokens=max_new_tokens
        )


class SpeculativeGenerator(HFGenerator):
    """``HFGenerator`` over ``model`` (the student) whose proposals ``teacher`` verifies; see the module docstring."""

    def __init__(self, spec, *, teacher: torch.nn.Module, speculative: Speculative, **kw):
        super().__init__(spec, **kw)
        self.teacher, self.speculative = teacher, speculative
        self.proposed = self.replaced = 0

    def complete_ids(
        self, prompt_ids: list[list[int]], seeds: list[int | None], params: SamplingParams
    ) -> list[Completion]:
        self.proposed = self.replaced = 0
        return super().complete_ids(prompt_ids, seeds, params)

    def stats(self) -> dict[str, float]:
        """``teacher_replaced``: the share of the last call's proposals that the teacher replaced."""
        return {"teacher_replaced": self.replaced / max(self.proposed, 1)}

    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache) -> tuple[Tensor, Any]:
        """(B, 2, V): the student's and the teacher's next-token logits, and both caches."""
        student, teacher, cache = step_both(super()._forward, self.teacher, input_ids, mask, positions, cache)
        vocab = min(student.shape[-1], teacher.shape[-1])
        return torch.stack([student[:, :vocab], teacher[:, :vocab]], 1), cache

    def _generate_batch(self, prompt_ids, seeds, params):
        self._streams: dict = {}  # (row stream, purpose) -> a side stream of that row, for this batch
        return super()._generate_batch(prompt_ids, seeds, params)

    def _side(self, rngs: list[torch.Generator | None], purpose: str) -> list[torch.Generator | None]:
        """Each row's own second stream for ``purpose``, seeded from the row's seed: the proposals keep the row's
        stream to themselves, so with every proposal accepted the rollout is the student's own sample."""
        out = []
        for rng in rngs:
            if rng is not None and (rng, purpose) not in self._streams:
                seed = sample_seed(rng.initial_seed(), purpose, 0)
                self._streams[(rng, purpose)] = torch.Generator(device=rng.device).manual_seed(seed)
            out.append(None if rng is None else self._streams[(rng, purpose)])
        return out

    def _sample_next(
        self, logits: Tensor, rngs: list[torch.Generator | None], params: SamplingParams
    ) -> Tensor:
        student, teacher = logits[:, 0], logits[:, 1]
        proposal = sample_next(student, rngs, params)  # (b,)
        checked = proposal
        if self.speculative.check == "second_draw":
            checked = sample_next(student, self._side(rngs, "check"), params)
        top = teacher.topk(min(self.speculative.top_k, teacher.shape[-1]), dim=-1).indices  # (b, k)
        accepted = (top == checked.unsqueeze(-1)).any(-1)
        teacher_params = self.speculative.teacher_sampling(params.max_new_tokens)
        replacement = sample_next(teacher, self._side(rngs, "teacher"), teacher_params)
        self.proposed += int(proposal.numel())
        self.replaced += int((~accepted).sum())
        return torch.where(accepted, proposal, replacement)
