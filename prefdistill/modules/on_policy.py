"""On-policy rollouts during token-level distillation: GKD's λ and MiniLLM's teacher-mixed samples.

With probability ``fraction`` (GKD's λ) a training batch's responses are replaced by responses the
current policy samples for the same prompts, through the HF generation backend
(:class:`~prefdistill.generation.mixture.MixtureGenerator`); with ``teacher_mix`` α > 0 the tokens
are drawn from ``α·p_teacher + (1−α)·q_policy`` (MiniLLM, α = 0.2). A rollout can serve ``reuse``
consecutive optimizer steps (MiniLLM's PPO epochs over one set of rollouts); the log-probs of the
policy that sampled it are kept so the loss can form the ratio q_θ / q_old.

Randomness comes from torch's global generator (saved in our checkpoints), and every sequence gets
its own stream seeded by (rollout seed, dataset row), so a rollout does not depend on its batch-mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefdistill.data.collate import IGNORE_INDEX, pad_rows
from prefdistill.generation.base import SamplingParams, sample_seed


@dataclass(frozen=True)
class OnPolicy:
    """How often and how to sample responses from the policy during training."""

    fraction: float = 0.5  # λ: probability that a batch is replaced by policy samples
    teacher_mix: float = 0.0  # α: sample from α·p_teacher + (1−α)·q_policy
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    reuse: int = 1  # optimizer steps per rollout

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or not 0.0 <= self.teacher_mix <= 1.0:
            raise ValueError(f"on_policy.fraction and teacher_mix must be in [0, 1], got {self}")
        if self.reuse < 1:
            raise ValueError(f"on_policy.reuse must be >= 1, got {self.reuse}")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, n=1
        )


def split_prompts(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The prompt token ids of every row of an SFT/pairwise batch (what precedes the first label)."""
    prompts = []
    for ids, attention, labels in zip(
        batch["chosen_input_ids"], batch["chosen_attention_mask"], batch["chosen_labels"]
    ):
        supervised = (labels != IGNORE_INDEX).nonzero()
        start = int(supervised[0]) if len(supervised) else int(attention.sum())
        prompts.append(ids[:start].tolist())
    return prompts


def rollout_batch(generator, batch: dict[str, torch.Tensor], seed: int, params: SamplingParams) -> dict:
    """A batch with the same prompts and rows whose responses the generator sampled.

    A response that ended on an end-of-turn token gets the eos appended, as dataset responses have;
    one cut at ``max_new_tokens`` is kept as is.
    """
    prompts = split_prompts(batch)
    index = batch["index"]
    seeds = [sample_seed(seed, int(i), 0) for i in index.tolist()]
    completions = generator.complete_ids(prompts, seeds, params)
    eos = generator.encoder.eos_id
    responses = [list(c.token_ids) + ([eos] if c.finish_reason == "eos" else []) for c in completions]
    responses = [r if r else [eos] for r in responses]
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids, attention, labels = pad_rows(prompts, responses, generator.pad_id, length)
    device = batch["chosen_input_ids"].device
    return {
        "chosen_input_ids": ids.to(device),
        "chosen_attention_mask": attention.to(device),
        "chosen_labels": labels.to(device),
        "index": index,
        "rollout": True,
    }
