"""Sampling from a mixture of two models, ``α·p_teacher + (1−α)·q_policy`` (MiniLLM's teacher-mixed sampling).

:class:`MixtureGenerator` is the HF backend (:class:`~prefdistill.generation.hf.HFGenerator`: left
padding, KV cache, finished rows leave the batch, one random stream per sequence) with a second
model stepped alongside: at every step both run on the same tokens with their own KV caches and the
next token is drawn from the mixture of their distributions. ``α = 0`` is plain sampling from the
policy (GKD's on-policy student samples), ``α = 1`` sampling from the teacher. Temperature, top-k
and top-p apply to the mixture's log-probabilities (exactly the mixture at temperature 1, no filters).
Both models must share the tokenizer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from prefdistill.generation.hf import HFGenerator


class PairCache:
    """Two KV caches that are selected / repeated together (the decode loop sees one cache)."""

    def __init__(self, policy: Any, teacher: Any):
        self.policy, self.teacher = policy, teacher

    def batch_select_indices(self, idx: Tensor) -> None:
        self.policy.batch_select_indices(idx)
        self.teacher.batch_select_indices(idx)

    def batch_repeat_interleave(self, n: int) -> None:
        self.policy.batch_repeat_interleave(n)
        self.teacher.batch_repeat_interleave(n)


def mix_logps(teacher_logps: Tensor, policy_logps: Tensor, teacher_mix: float) -> Tensor:
    """log(α·p + (1−α)·q) from log p and log q (any matching shapes), exact at α ∈ {0, 1}."""
    if teacher_mix == 0.0:
        return policy_logps
    if teacher_mix == 1.0:
        return teacher_logps
    return torch.logaddexp(teacher_logps + math.log(teacher_mix), policy_logps + math.log1p(-teacher_mix))


def log_mixture(policy_logits: Tensor, teacher_logits: Tensor, teacher_mix: float) -> Tensor:
    """log(α·softmax(teacher) + (1−α)·softmax(policy)) over the vocabulary, float32."""
    lq = torch.log_softmax(policy_logits.float(), -1)
    lp = torch.log_softmax(teacher_logits.float(), -1)
    return mix_logps(lp, lq, teacher_mix)


class MixtureGenerator(HFGenerator):
    """``HFGenerator`` over ``model`` (the policy) whose next-token distribution is mixed with ``teacher``."""

    def __init__(self, spec, *, teacher: torch.nn.Module | None, teacher_mix: float = 0.0, **kw):
        if not 0.0 <= teacher_mix <= 1.0:
            raise ValueError(f"teacher_mix must be in [0, 1], got {teacher_mix}")
        if teacher_mix > 0 and teacher is None:
            raise ValueError("teacher-mixed sampling (teacher_mix > 0) needs a teacher model")
        super().__init__(spec, **kw)
        self.teacher, self.teacher_mix = teacher, float(teacher_mix)

    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache) -> tuple[Tensor, Any]:
        if self.teacher_mix == 0.0:
            return super()._forward(input_ids, mask, positions, cache)
        policy_logits, teacher_logits, cache = step_both(
            super()._forward, self.teacher, input_ids, mask, positions, cache
        )
        return log_mixture(policy_logits, teacher_logits, self.teacher_mix), cache


def step_both(
    policy_forward, teacher: torch.nn.Module, input_ids: Tensor, mask: Tensor, positions: Tensor, cache
):
    """One decoding step of the policy (``policy_forward``, the generator's own) and ``teacher`` on the same
    tokens, each with its KV cache: ``(policy logits (B, V), teacher logits (B, V'), PairCache)``."""
    policy_cache, teacher_cache = (None, None) if cache is None else (cache.policy, cache.teacher)
    policy_logits, policy_cache = policy_forward(input_ids, mask, positions, policy_cache)
    out = teacher(
        input_ids=input_ids, attention_mask=mask, position_ids=positions,
        past_key_values=teacher_cache, use_cache=True, logits_to_keep=1,
    )  # fmt: skip
    return policy_logits, out.logits[:, -1].float(), PairCache(policy_cache, out.past_key_values)
