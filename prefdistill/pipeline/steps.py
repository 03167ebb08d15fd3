"""Stages shared by the PLaD and PAD chains: optional SFT of a model, sampling a model over a split.

Cache keys chain: an SFT stage is keyed by the base model's identity and the SFT recipe; the tuned
model's spec points into that stage folder, so everything downstream (samples, pairs, lists) is
keyed by it in turn. Change any input and every stage after it runs again; nothing else does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefdistill.generation import PromptSet, SamplingParams, build_generator, generate_to_shards
from prefdistill.generation.shards import finish_shards, read_shards
from prefdistill.pipeline.stages import Stage, StageResult
from prefdistill.utils import distributed
from prefdistill.utils.cache import content_hash, hash_inputs


@dataclass(frozen=True)
class SFTStep:
    """How to fine-tune a model before sampling.

    ``fn(spec, out_dir)`` trains ``spec`` and saves a plain transformers folder (full weights, LoRA
    merged, and the tokenizer) at ``out_dir``; it may return counters for the stage's marker (``tokens``
    trained on, read by the cost columns). ``config`` names the recipe (data, steps, lr, ...) for the
    cache key: the same spec and config reuse the saved model.
    """

    fn: Callable[..., None]
    config: dict


@dataclass(frozen=True)
class Sampler:
    """How a pipeline samples a model: backend, batching, shard size and prompt template.

    Built by Hydra (``pipeline.prepare.sampler``) and shared by every sampling (and scoring) stage of a
    chain. The template enters the stages' cache keys (it changes the outputs); backend, batching and
    shard size do not (the outputs do not depend on them).
    """

    backend: str = "hf"  # hf | vllm
    batch_size: int = 16  # sequences per forward
    shard_size: int = 256  # prompts per shard file: the unit a killed stage resumes from
    template: str = "auto"  # chat template when the tokenizer has one, else raw text
    backend_kwargs: dict | None = None  # extra arguments of the backend (e.g. vLLM's tensor_parallel_size)

    def generator(self, spec):
        """A generator of ``spec`` on this backend."""
        kw = {"template": self.template, **(self.backend_kwargs or {})}
        return build_generator(spec, backend=self.backend, batch_size=self.batch_size, **kw)


def model_key(spec) -> str:
    return hash_inputs({"identity": spec.identity()})


def finetuned(
    role: str, spec, sft: SFTStep | None, cache_dir: str | os.PathLike
) -> tuple[object, StageResult | None]:
    """``spec`` itself when ``sft`` is None, else the spec of its SFT'd copy (stage ``sft-<role>``)."""
    if sft is None:
        return spec, None
    key = hash_inputs({"model": spec.identity(), "sft": sft.config})

    def train(folder: Path) -> dict:
        counters = sft.fn(spec, folder / "model") or {}
        return {"model": str(folder / "model"), **counters}

    result = Stage(f"sft-{role}", key, train, description={"model": spec.name_or_path, **sft.config}).run(
        cache_dir
    )
    tuned = dataclasses.replace(
        spec, name_or_path=str(result.path / "model"), revision=None, tokenizer=None,
        gguf_file=None, offline_fallback=None, random_init=None, prune=None,  # the folder holds the result
    )  # fmt: skip
    return tuned, result


def sample_stage(
    role: str, spec, data: PromptSet, data_key: str, params: SamplingParams, sampler: Sampler,
    cache_dir: str | os.PathLike,
) -> StageResult:  # fmt: skip
    """Stage ``samples-<role>``: ``params.n`` samples of ``spec`` per prompt, resumable shards; on several
    ranks each samples every ``world``-th shard and rank 0 marks the whole complete."""
    key = hash_inputs({
        "model": model_key(spec), "data": data_key, "params": params.to_dict(), "template": sampler.template,
    })  # fmt: skip

    def sample(folder: Path) -> None:
        generate_to_shards(
            lambda: sampler.generator(spec), data.prompts, folder, params, ids=data.ids,
            references=data.references, shard_size=sampler.shard_size,
            meta={"model": spec.identity(), "template": sampler.template},
            part=(distributed.rank(), distributed.world_size()),
        )  # fmt: skip

    def finish(folder: Path) -> dict:
        finish_shards(folder)
        return {"prompts": len(data.prompts), "samples_per_prompt": params.n}

    desc = {"model": spec.name_or_path, "params": params.to_dict(), "prompts": len(data.prompts)}
    stage = Stage(
        f"samples-{role}", key, sample, resumable=True, description=desc, sharded=True, finish=finish
    )
    return stage.run(cache_dir)


def data_key(data: PromptSet) -> str:
    return content_hash({"prompts": data.prompts, "ids": data.ids})[:16]


def read_samples(result: StageResult) -> list[list[str]]:
    """``[[sample 0, ...] per prompt]`` of a finished ``samples-*`` stage."""
    from prefdistill.generation import responses_by_prompt

    return responses_by_prompt(read_shards(result.path))


def teacher_stream(sampling: SamplingParams) -> SamplingParams:
    """The teacher's sampling settings by default: the student's on an independent stream (seed + 1).

    With one seed, a teacher sharing the student's checkpoint would repeat its samples; PLaD and SeqKD
    both use this, so they share one cached teacher-sampling stage.
    """
    return dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + 1)
