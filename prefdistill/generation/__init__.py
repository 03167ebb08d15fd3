"""Sampling from any configured model: HF (batched, KV cache) and vLLM backends, resumable shards.

* :mod:`~prefdistill.generation.base`    ``SamplingParams``, ``Generator`` protocol, ``build_generator``
* :mod:`~prefdistill.generation.hf`      batched left-padded decoding with per-sequence seeds
* :mod:`~prefdistill.generation.vllm`    vLLM offline API (optional extra, imported lazily)
* :mod:`~prefdistill.generation.shards`  ``generate_to_shards`` / ``sample_split``: resumable on-disk sampling
"""

from prefdistill.generation.base import Completion, Generator, SamplingParams, build_generator
from prefdistill.generation.shards import (
    PromptSet,
    PromptSource,
    generate_to_shards,
    read_shards,
    responses_by_prompt,
    sample_split,
)

__all__ = [
    "Completion",
    "Generator",
    "PromptSet",
    "PromptSource",
    "SamplingParams",
    "build_generator",
    "generate_to_shards",
    "read_shards",
    "responses_by_prompt",
    "sample_split",
]
