"""On-policy rollouts during token-level distillation: GKD's λ, MiniLLM's teacher-mixed samples, SKD's
interleaved samples, on-policy distillation (OPD, λ = 1).

With probability ``fraction`` (GKD's λ) a training batch's responses are replaced by responses the
current policy samples for the same prompts, through the HF generation backend
(:class:`~prefdistill.generation.mixture.MixtureGenerator`); with ``teacher_mix`` α > 0 the tokens
are drawn from ``α·p_teacher + (1−α)·q_policy`` (MiniLLM, α = 0.2). With ``speculative`` set the teacher
replaces every student token outside its top-k (Speculative KD,
:class:`~prefdistill.generation.speculative.SpeculativeGenerator`). ``backend: vllm`` samples plain student
rollouts through a colocated vLLM engine kept in step with the policy (``generation/vllm_rollouts.py``; no
teacher mixing or interleaving there). A rollout can serve ``reuse`` consecutive optimizer steps (MiniLLM's
PPO epochs over one set of rollouts); the log-probs of the policy that sampled it are kept so the loss can
form the ratio q_θ / q_old.

Randomness comes from torch's global generator (saved in our checkpoints and taken up again at the first
batch after a resume, so a resumed run samples what the uninterrupted one does), and every sequence gets
its own stream seeded by (rollout seed, dataset row), so a rollout does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from prefdistill.data.collate import IGNORE_INDEX, pad_rows
from prefdistill.generation.base import SamplingParams, sample_seed
from prefdistill.generation.mixture import MixtureGenerator
from prefdistill.generation.speculative import Speculative, SpeculativeGenerator
from prefdistill.models import load_tokenizer

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class OnPolicy:
    """How often and how to sample responses from the policy during training."""

    fraction: float = 0.5  # λ: probability that a batch is replaced by policy samples
    teacher_mix: float = 0.0  # α: sample from α·p_teacher + (1−α)·q_policy
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    reuse: int = 1  # optimizer steps per rollout
    speculative: Speculative | None = None  # the teacher replaces proposals outside its top-k (SKD)
    backend: str = "hf"  # hf | vllm (plain student samples only)
    gpu_memory_utilization: float | None = None  # vllm only: the engine's share of the device (None: 0.3)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or not 0.0 <= self.teacher_mix <= 1.0:
            raise ValueError(f"on_policy.fraction and teacher_mix must be in [0, 1], got {self}")
        if self.reuse < 1:
            raise ValueError(f"on_policy.reuse must be >= 1, got {self.reuse}")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
        if isinstance(self.speculative, Mapping):  # a plain mapping from the command line
            object.__setattr__(self, "speculative", Speculative(**self.speculative))
        if self.speculative is not None and self.teacher_mix > 0:
            raise ValueError("on_policy.speculative (the teacher corrects proposals) and teacher_mix > 0 (sampling "
                             "from a mixture) are two ways of sampling: set one")  # fmt: skip
        if self.backend not in BACKENDS:
            raise ValueError(f"on_policy.backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.backend == "vllm" and (self.teacher_mix > 0 or self.speculative is not None):
            raise ValueError("on_policy.backend=vllm samples the student alone: teacher_mix > 0 and speculative "
                             "need the hf backend, which steps the teacher alongside")  # fmt: skip
        if self.backend != "vllm" and self.gpu_memory_utilization is not None:
            raise ValueError(
                "on_policy.gpu_memory_utilization sizes the vLLM engine: it needs on_policy.backend=vllm"
            )

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, n=1
        )


def rollout_generator(on_policy: OnPolicy, spec, policy: torch.nn.Module, teacher, *, version: int = 0):
    """The sampler of ``on_policy`` over the loaded ``policy`` (and ``teacher``): teacher-mixed or plain HF sampling,
    SKD's interleaved sampling, or a vLLM engine (imported only here, only for ``backend=vllm``)."""
    if on_policy.backend == "vllm":
        from prefdistill.generation.vllm_rollouts import VLLMRollouts

        memory = on_policy.gpu_memory_utilization
        return VLLMRollouts(
            spec, policy, version=version, gpu_memory_utilization=0.3 if memory is None else memory
        )
    common = {"model": policy, "tokenizer": load_tokenizer(spec), "progress": False, "batch_size": 64}
    if on_policy.speculative is not None:
        return SpeculativeGenerator(spec, teacher=teacher, speculative=on_policy.speculative, **common)
    return MixtureGenerator(spec, teacher=teacher, teacher_mix=on_policy.teacher_mix, **common)


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
    stats = getattr(generator, "stats", None)  # e.g. SKD's share of replaced proposals
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
        "rollout_stats": stats() if stats is not None else {},
    }
