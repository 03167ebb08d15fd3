"""What every generation backend shares: ``SamplingParams``, the ``Generator`` protocol, the factory.

    from prefdistill.generation import SamplingParams, build_generator
    gen = build_generator(spec, backend="hf", batch_size=16)
    completions = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=64))

A prompt is a string or a list of ``{"role", "content"}`` messages; the chat template (or raw text)
is applied by :class:`prefdistill.data.PromptEncoder`, so sampling sees exactly the prompt ids that
training sees (one BOS). ``generate`` returns ``n`` strings per prompt, in input order, with the
end-of-turn/eos token and anything from the first stop string on removed.

Seeding: sample ``j`` of the prompt with key ``k`` (its index in the call unless ``keys`` are given)
draws from its own random stream seeded by ``(seed, k, j)``, so results do not depend on batch size,
sorting, or on which other prompts are in the call -- a resumed run draws the same samples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefdistill.data.records import Prompt

BACKENDS = ("hf", "vllm")
FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable those filters."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    n: int = 1
    seed: int | None = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop or ()))  # lists from YAML -> tuple
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"need top_k >= 0, max_new_tokens >= 1, n >= 1 (got {self})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Completion:
    """One sampled response: its text, how many tokens were generated, and why it ended."""

    text: str
    num_tokens: int
    finish_reason: str  # one of FINISH_REASONS
    token_ids: list[int] = field(default_factory=list, repr=False)  # generated ids, eos excluded


class Generator:
    """What every backend offers. Backends implement ``generate_completions``; ``generate`` is
    its text-only view. ``keys`` name the prompts for seeding (default: their positions), so a
    prompt's samples do not depend on its batch or on a resumed run."""

    model: Any
    tokenizer: Any

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, keys: Sequence[Any] | None = None
    ) -> list[list[str]]:
        return [[c.text for c in row] for row in self.generate_completions(prompts, params, keys)]

    def generate_completions(
        self, prompts: Sequence[Prompt], params: SamplingParams, keys: Sequence[Any] | None = None
    ) -> list[list[Completion]]:
        raise NotImplementedError

    @staticmethod
    def prompt_keys(prompts: Sequence[Prompt], keys: Sequence[Any] | None) -> list[Any]:
        keys = list(range(len(prompts))) if keys is None else list(keys)
        if len(keys) != len(prompts):
            raise ValueError(f"got {len(keys)} keys for {len(prompts)} prompts")
        return keys


def sample_seed(seed: int | None, key: Any, sample: int) -> int | None:
    """A 63-bit seed for sample ``sample`` of the prompt with ``key``; ``None`` stays unseeded."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}|{key}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def build_generator(spec, backend: str = "hf", batch_size: int = 16, **backend_kwargs) -> Generator:
    """A generator for ``spec`` (a :class:`~prefdistill.models.ModelSpec`) on ``backend``.

    ``hf`` kwargs: ``template``, ``device``, ``progress``, ``model``/``tokenizer`` (reuse loaded ones).
    ``vllm`` kwargs: ``template``, ``tensor_parallel_size``, ``gpu_memory_utilization``, any ``vllm.LLM``
    argument. The vLLM backend raises :class:`~prefdistill.generation.vllm.VLLMNotInstalledError`
    (an ``ImportError``) when vLLM is missing.
    """
    if backend == "hf":
        from prefdistill.generation.hf import HFGenerator

        return HFGenerator(spec, batch_size=batch_size, **backend_kwargs)
    if backend == "vllm":
        from prefdistill.generation.vllm import VLLMGenerator

        return VLLMGenerator(spec, batch_size=batch_size, **backend_kwargs)
    raise ValueError(f"unknown generation backend {backend!r}; known: {BACKENDS}")
