"""The pieces of a :class:`~prefdistill.pipeline.chain.Chain`: SFT and sampling stages, and the method's step.

* :class:`SFTStep` and :func:`finetuned`: stage ``sft-<role>``, a model fine-tuned before anything samples it.
* :class:`Sampler` and :func:`sample_stage`: stage ``samples-<role>``, a model's samples over the prompts.
* :class:`Step`: what a method adds after them -- one stage that reads the chain's samples and writes the
  training file (``PladPairs``, ``PadLists``, ``SeqKDRecords``). A new pipeline is one such class.
* :class:`ChainState`: what a step is given -- the (SFT'd) models, the prompts, the finished sample stages
  -- when it runs, or, when it is only planned, whatever is known before anything ran.

Cache keys chain: an SFT stage is keyed by the base model's identity and the SFT recipe; the tuned
model's spec points into that stage folder, so everything downstream (samples, pairs, lists) is
keyed by it in turn. Change any input and every stage after it runs again; nothing else does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefdistill.generation import PromptSet, SamplingParams, build_generator, generate_to_shards
from prefdistill.generation.shards import finish_shards, read_shards
from prefdistill.pipeline.stages import Stage, StageResult
from prefdistill.utils import distributed
from prefdistill.utils.cache import content_hash, hash_inputs

ROLES = ("teacher", "student")


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


@dataclass(frozen=True)
class PlannedStage:
    """A stage a chain will run: its name, the models it loads (base specs: an SFT'd model has its base's
    size), whether it trains them, and its cache key (folder ``<name>-<key>``) when that is known before any
    stage runs -- None when it is keyed by the output of an earlier stage that has not run yet."""

    name: str
    models: tuple = ()  # ((role, ModelSpec), ...)
    key: str | None = None
    trains: bool = False

    @property
    def folder_name(self) -> str | None:
        return None if self.key is None else f"{self.name}-{self.key}"


def model_key(spec) -> str:
    return hash_inputs({"identity": spec.identity()})


def data_key(data: PromptSet) -> str:
    return content_hash({"prompts": data.prompts, "ids": data.ids})[:16]


INHERIT = "inherit"  # an SFT recipe's `lora`: train the spec's own adapter


def sft_spec(spec, lora=INHERIT):
    """The spec an SFT recipe (or a reward-model stage) trains: ``spec`` with the recipe's adapter (``lora``: a
    mapping like the model configs' ``lora``, or null for full fine-tuning), or its own (``inherit``)."""
    return spec if check_adapter(lora) == INHERIT else dataclasses.replace(spec, lora=lora)


def check_adapter(lora):
    """``lora`` itself when it is ``inherit``, null or an adapter mapping; a ValueError naming the choices else."""
    if lora != INHERIT and lora is not None and not isinstance(lora, Mapping):
        raise ValueError(f"lora={lora!r}: use {INHERIT!r}, null (full fine-tuning) or an adapter mapping like the "
                         "model configs' lora")  # fmt: skip
    return lora


def sft_key(spec, sft: SFTStep) -> str:
    """The cache key of stage ``sft-<role>``: the base model, the recipe and the adapter it trains (a LoRA SFT
    and a full fine-tuning of one model are two models; ``identity()`` leaves adapters out, as a frozen model
    computes the same without one)."""
    inputs = {"model": spec.identity(), "sft": sft.config}
    if "lora" not in sft.config and spec.lora is not None:  # the spec's own adapter; a full fine-tuning's key
        inputs["adapter"] = dict(spec.lora)  # stays what it was, so those cached models stay valid
    return hash_inputs(inputs)


def finetuned(
    role: str, spec, sft: SFTStep | None, cache_dir: str | os.PathLike
) -> tuple[object, StageResult | None]:
    """``spec`` itself when ``sft`` is None, else the spec of its SFT'd copy (stage ``sft-<role>``)."""
    if sft is None:
        return spec, None

    def train(folder: Path) -> dict:
        counters = sft.fn(spec, folder / "model") or {}
        return {"model": str(folder / "model"), **counters}

    description = {"model": spec.name_or_path, **sft.config}
    result = Stage(f"sft-{role}", sft_key(spec, sft), train, description=description).run(cache_dir)
    tuned = dataclasses.replace(
        spec, name_or_path=str(result.path / "model"), revision=None, tokenizer=None,
        gguf_file=None, offline_fallback=None, random_init=None, prune=None,  # the folder holds the result
    )  # fmt: skip
    return tuned, result


def sample_key(spec, data_key_: str, params: SamplingParams, sampler: Sampler) -> str:
    """The cache key of stage ``samples-<role>``: model, prompts, sampling settings and template."""
    return hash_inputs({
        "model": model_key(spec), "data": data_key_, "params": params.to_dict(), "template": sampler.template,
    })  # fmt: skip


def sample_stage(
    role: str, spec, data: PromptSet, data_key_: str, params: SamplingParams, sampler: Sampler,
    cache_dir: str | os.PathLike,
) -> StageResult:  # fmt: skip
    """Stage ``samples-<role>``: ``params.n`` samples of ``spec`` per prompt, resumable shards; on several
    ranks each samples every ``world``-th shard and rank 0 marks the whole complete."""

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
    key = sample_key(spec, data_key_, params, sampler)
    stage = Stage(
        f"samples-{role}", key, sample, resumable=True, description=desc, sharded=True, finish=finish
    )
    return stage.run(cache_dir)


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


@dataclass
class ChainState:
    """What a :class:`Step` is given. Running: every field is set and ``samples`` holds the finished sample
    stages. Planning (``Chain.stages``): ``models`` holds a spec only where it is known before any stage runs
    (not an SFT'd copy), ``data`` may be None, and ``samples`` is empty -- ``sample_folders`` has each
    sample stage's folder name, or None where its key is not known yet."""

    models: dict[str, object]  # role -> spec (None: not known yet)
    sampler: Sampler
    seed: int
    data: PromptSet | None = None
    cache_dir: str | os.PathLike | None = None
    samples: dict[str, StageResult] = field(default_factory=dict)
    sample_folders: dict[str, str | None] = field(default_factory=dict)
    base_models: dict[str, object] = field(default_factory=dict)  # role -> the configured spec (sizes)

    def model_key(self, role: str) -> str | None:
        spec = self.models.get(role)
        return None if spec is None else model_key(spec)


class Step:
    """A method's own stage at the end of a chain: it reads the samples of ``samples`` (roles, in order) and
    writes ``output`` into its stage folder, the file training reads.

    Subclasses set ``name`` (the stage), ``output`` and ``samples``, and define :meth:`key` and :meth:`build`;
    :meth:`sampling` adapts the chain's settings for one role (PAD draws k samples of the student),
    :meth:`loads` names the roles whose models the stage loads (the teacher that scores), and
    :meth:`before` returns stages the step's own stage needs first (a reward model trained here).
    """

    name: str = ""
    output: str = ""
    samples: tuple[str, ...] = ()
    sharded: bool = False  # build runs on every rank (its rows), then merge() on rank 0

    @property
    def needs_teacher(self) -> bool:
        return "teacher" in self.samples or "teacher" in self.loads()

    def sampling(self, role: str, params: SamplingParams) -> SamplingParams:
        return params

    def loads(self) -> tuple[str, ...]:
        """Roles of the models the step's stage loads (not counting the samples it reads)."""
        return ()

    def models(self, state: ChainState) -> tuple:
        """``((role, spec), ...)`` the step's stage loads, for the plan (base specs)."""
        return tuple((role, state.base_models.get(role)) for role in self.loads())

    def before(self, state: ChainState, *, planned: bool) -> list:
        """Stages that must finish before the step's own (run, or only planned)."""
        return []

    def key(self, state: ChainState) -> str | None:
        """The cache key of the step's stage; None when an input's key is not known yet (planning)."""
        raise NotImplementedError

    def description(self, state: ChainState) -> dict:
        return {}

    def build(self, state: ChainState, folder: Path) -> dict | None:
        """Write ``output`` (or, when ``sharded``, this rank's part) into ``folder``; returns counters."""
        raise NotImplementedError

    def merge(self, state: ChainState, folder: Path) -> dict | None:
        """Rank 0, after every rank's ``build`` (``sharded`` steps): merge the parts into ``output``."""
        return None

    def plan(self, state: ChainState) -> list[PlannedStage]:
        own = PlannedStage(self.name, self.models(state), self.key(state))
        return [*self.before(state, planned=True), own]

    def run(self, state: ChainState) -> list[StageResult]:
        """The stages ``before`` and the step's own stage, run (or reused) in order."""
        results = self.before(state, planned=False)
        key = self.key(state)
        stage = Stage(
            self.name, key, lambda folder: self.build(state, folder), description=self.description(state),
            sharded=self.sharded, finish=(lambda folder: self.merge(state, folder)) if self.sharded else None,
        )  # fmt: skip
        return [*results, stage.run(state.cache_dir)]
