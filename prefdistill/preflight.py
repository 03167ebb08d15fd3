"""Preflight: before any stage runs, check that everything the run needs is here and that it fits.

    python train.py method=plad model=llama2_7b teacher=llama2_13b preflight_only=true  # print the plan, exit

:func:`check` (the first thing ``train.py`` does after building the run's objects -- specs, loss, data chain,
training module; nothing loaded) asks those objects what the run will load and run -- the chain its stages
and the models each loads (``Chain.stages``), the module the models it holds, how and for how long
(``held_models``, :mod:`prefdistill.modules.held`) -- and resolves, without downloading anything,

1. every model the run will load -- policy, reference, teacher, the pipeline's scorer, the evaluation's
   reward model -- and its tokenizer: a random-init spec; a local folder; the Hugging Face cache
   (``huggingface_hub.try_to_load_from_cache``); the spec's offline GGUF package (``models/gguf.py``);
   else, only when the hub is reachable (``models/hub.py``), one metadata request, which finds gated and
   missing repositories;
2. every data source (training data, evaluation data): shipped, a local file or folder, or a hub dataset
   in the HF caches;
3. what a stage will need besides: CUDA for GPU profiles, DeepSpeed, vLLM, a judge's API key;
4. the memory each device needs in every phase (the chain's inference and training stages, training with
   what the module holds frozen, a pass that fills a cache), refusing a phase that cannot fit and naming the
   hardware profiles that would fit it.

Each problem is one numbered line saying what is missing, where it was looked for and the fix;
:class:`PreflightError` carries them all. :func:`needs_of` gathers plain facts from the objects (and, from the
resolved config, the data locations, the hardware and the evaluation suite); :func:`plan_run` resolves and
sizes them. A further check is one more function adding to ``RunNeeds.problems`` (or the plan's).

The memory model and its assumptions are in :mod:`prefdistill.memory`; model sizes come from the
model's ``config.json`` when it is on this machine (counted on the meta device), else
:data:`prefdistill.memory.PARAMETERS` (published counts).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prefdistill.data.scan import bad_rows
from prefdistill.memory import (
    PARAMETERS,
    Hardware,
    Phase,
    Size,
    Trainee,
    device_memory,
    gib,
    hardware_of,
    hardware_profiles,
    host_memory,
    inference_phase,
    memory_problems,
    meta_size,
    pass_phase,
    sft_phase,
    training_memory,
)
from prefdistill.models.spec import ModelSpec

log = logging.getLogger("prefdistill.preflight")

GATED = ("meta-llama/", "google/gemma", "mistralai/")  # hub prefixes whose licence must be accepted


class PreflightError(SystemExit):
    """The run cannot start. A ``SystemExit``: Hydra and the task wrapper print a traceback for an
    ``Exception``, and a refusal is not a crash -- Python prints this message alone and exits 1."""

    def __init__(self, problems: list[str]):
        lines = [f"  {i}. {p}" for i, p in enumerate(problems, 1)]
        super().__init__(f"preflight: this run cannot start ({len(problems)} problems):\n" + "\n".join(lines))
        self.problems = problems


# -- where things are looked for -------------------------------------------------------------------------
@dataclass(frozen=True)
class Places:
    """Where to look: the HF hub and datasets caches, and whether the hub may be asked (no download)."""

    hub_cache: Path
    datasets_cache: Path
    online: bool

    @classmethod
    def here(cls) -> Places:
        """This process's caches (read from the environment now) and ``models.hub.hub_reachable()``."""
        from prefdistill.models.hub import hub_reachable

        home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
        hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or home / "hub"
        data = os.environ.get("HF_DATASETS_CACHE") or home / "datasets"
        return cls(Path(hub).expanduser(), Path(data).expanduser(), hub_reachable())

    def offline_reason(self) -> str:
        from prefdistill.models.hub import offline_mode

        return "offline (HF_HUB_OFFLINE=1)" if offline_mode() else "unreachable"


@dataclass(frozen=True)
class Resolved:
    """One thing the run needs: ``source`` says how it will load; ``problem`` (then ``source`` is
    None) what is missing, where it was looked for and the fix."""

    label: str
    source: str | None
    problem: str | None = None


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).suffix in (".jsonl", ".json", ".parquet")


def _download_fix(repo: str, key: str, repo_type: str = "model") -> str:
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    gated = (
        f" (gated: accept its licence at https://huggingface.co/{repo} and set HF_TOKEN or run "
        "`hf auth login` first)"
        if repo.startswith(GATED)
        else ""
    )
    return f"`hf download {repo}{flag}` on a machine with network{gated}, or {key}=<local path>"


def _remote_problem(repo: str, revision: str | None, repo_type: str) -> str | None:
    """None when the hub has the repository and this machine may read it (a metadata request)."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from prefdistill.models.hub import PROBE_TIMEOUT_S

    try:
        if repo_type == "model":  # a file request: gated repositories answer 401/403
            get_hf_file_metadata(hf_hub_url(repo, "config.json", revision=revision), timeout=PROBE_TIMEOUT_S)
        else:
            HfApi().repo_info(repo, repo_type=repo_type, revision=revision, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return "gated on the hub and this machine's token has no access"
    except RepositoryNotFoundError:
        return "not on the hub (or private: set HF_TOKEN)"
    except Exception as err:  # any other transport or HTTP error: it cannot be fetched now
        return f"the hub did not serve it ({type(err).__name__})"
    return None


def _hub_missing(label: str, repo: str, revision: str | None, key: str, places: Places, looked: list[str],
                 repo_type: str = "model") -> Resolved:  # fmt: skip
    """Not found locally: will download (online, readable), else a problem naming the fix."""
    if places.online:
        problem = _remote_problem(repo, revision, repo_type)
        if problem is None:
            return Resolved(label, "the hub (downloaded when first loaded)")
        looked = [*looked, f"the hub: {problem}"]
    else:
        looked = [*looked, f"not the hub: it is {places.offline_reason()}"]
    fix = _download_fix(repo, key, repo_type)
    return Resolved(label, None, f"not found. Looked in {'; '.join(looked)}. Fix: {fix}")


def _cached_file(repo: str, filename: str, places: Places, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=places.hub_cache, revision=revision)
    return found if isinstance(found, str) else None


def _fallback_source(spec: ModelSpec) -> tuple[str | None, str]:
    """``(how it loads, where it was looked for)`` for the spec's packaged GGUF (None: not installed)."""
    from prefdistill.models.gguf import find_package_file, install_command

    fb = spec.offline_fallback
    if fb is None:
        return None, "no offline GGUF fallback"
    parts = [find_package_file(p["package"], p["file"]) for p in fb.get("parts") or []]
    if find_package_file(fb["package"], fb["gguf_file"]) or (parts and all(parts)):
        return f"offline GGUF fallback {fb['gguf_file']} (package {fb['package']})", ""
    return (
        None,
        f"the offline GGUF package {fb['package']} (not installed: {install_command(fb)})",
    )


def resolve_model(spec: ModelSpec, role: str, key: str, places: Places) -> Resolved:
    """How ``spec``'s weights will load (see the module docstring), or what is missing and the fix."""
    label = f"{role} {spec.name_or_path}"
    if spec.random_init is not None:
        return Resolved(label, f"random init ({spec.random_init['model_type']}, seed {spec.seed})")
    wanted = spec.gguf_file or "config.json"
    if spec.local_dir is not None or _looks_local(spec.name_or_path):
        folder = spec.local_dir or Path(spec.name_or_path).expanduser()
        if (folder / wanted).is_file():
            return Resolved(label, f"local folder {folder}")
        return Resolved(label, None, f"no {wanted} in {folder}. Fix: {key}=<a save_pretrained folder>")
    cached = _cached_file(spec.name_or_path, wanted, places, spec.revision)
    if cached:
        return Resolved(label, f"HF cache {Path(cached).parent}")
    fallback, looked = _fallback_source(spec)
    if fallback:
        return Resolved(label, fallback)
    return _hub_missing(
        label, spec.name_or_path, spec.revision, key, places, [f"the HF cache {places.hub_cache}", looked]
    )


def resolve_tokenizer(spec: ModelSpec, role: str, key: str, places: Places) -> Resolved | None:
    """A tokenizer that does not come with the weights (random init, or ``tokenizer`` set); None otherwise."""
    if spec.random_init is None and spec.tokenizer in (None, spec.name_or_path):
        return None
    source = spec.tokenizer_source
    label = f"{role} tokenizer {source}"
    if Path(source).is_dir():
        return Resolved(label, f"local folder {source}")
    if _cached_file(source, "tokenizer_config.json", places, None):
        return Resolved(label, "HF cache")
    return _hub_missing(label, source, None, key, places, [f"the HF cache {places.hub_cache}"])


def resolve_dataset(label: str, location: str | None, key: str, places: Places) -> Resolved:
    """A local file or folder, or a hub dataset id found in the hub or datasets cache."""
    if location is None:
        return Resolved(label, None, f"no location. Fix: {key}=<a .jsonl/.json/.parquet file or a folder>")
    if Path(location).expanduser().exists():
        return Resolved(label, f"local {location}")
    if _looks_local(location):
        return Resolved(label, None, f"no file or folder {location}. Fix: {key}=<an existing path>")
    hub = places.hub_cache / f"datasets--{location.replace('/', '--')}" / "snapshots"
    built = places.datasets_cache / location.replace("/", "___")
    if (hub.is_dir() and any(hub.iterdir())) or built.is_dir():
        return Resolved(label, f"HF cache {hub if hub.is_dir() else built}")
    looked = [f"the HF caches {places.hub_cache}, {places.datasets_cache}"]
    return _hub_missing(label, location, None, key, places, looked, repo_type="dataset")


# -- memory --------------------------------------------------------------------------------------------
def model_size(spec: ModelSpec, places: Places) -> Size | None:
    """From a config on this machine (random init, local folder, HF cache, converted GGUF), else the
    published count; None when neither is known."""
    folder = None if spec.random_init is not None else _config_folder(spec, places)
    if spec.random_init is not None or folder is not None:
        try:
            return meta_size(_config(spec, folder), spec.lora)
        except Exception as err:  # an architecture this transformers cannot build: use the table
            log.info("preflight: could not count %s from its config (%s)", spec.name_or_path, err)
    known = PARAMETERS.get(spec.name_or_path)
    return Size(known) if known else None


def _config(spec: ModelSpec, folder: str | None):
    """The transformers config of a random-init spec (vocabulary: the tokenizer's unless given) or folder."""
    from transformers import AutoConfig

    if folder is not None:
        return AutoConfig.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
    kwargs = dict(spec.random_init)
    if "vocab_size" not in kwargs:
        from prefdistill.models import load_tokenizer

        kwargs["vocab_size"] = len(load_tokenizer(spec))
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def _config_folder(spec: ModelSpec, places: Places) -> str | None:
    if spec.local_dir is not None and (spec.local_dir / "config.json").is_file():
        return str(spec.local_dir)
    cached = _cached_file(spec.name_or_path, "config.json", places, spec.revision)
    if cached:
        return str(Path(cached).parent)
    if spec.offline_fallback:
        stem = Path(spec.offline_fallback["gguf_file"]).name.removesuffix(".gguf")
        converted = spec.resolved_cache_dir() / "gguf" / stem
        return str(converted) if (converted / "config.json").is_file() else None
    return None


# -- what a run needs, from the objects it is made of ---------------------------------------------------
@dataclass
class RunNeeds:
    """Plain facts about a run: models ``[(role, spec, config key)]``, data ``[(label, location, key)]``,
    stage names, memory phases, the models the training module holds (:class:`~prefdistill.modules.held.
    HeldModel`) and problems visible before anything loads (a missing teacher, a judge without its key...)."""

    models: list[tuple[str, ModelSpec, str]] = field(default_factory=list)
    data: list[tuple[str, str | None, str]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    held: list = field(default_factory=list)
    pipeline: list = field(default_factory=list)  # the chain's PlannedStage s


class Sizes:
    """Parameter counts of specs, each counted once (:func:`model_size`)."""

    def __init__(self, places: Places):
        self.places, self._known = places, {}

    def __call__(self, spec: ModelSpec | None) -> Size | None:
        if spec is None:
            return None
        key = repr(spec)
        if key not in self._known:
            self._known[key] = model_size(spec, self.places)
        return self._known[key]


def _data_location(data: dict) -> str | None:
    from prefdistill.data.loading import get_source, shipped_dir

    if data.get("path"):
        return str(data["path"])
    source = data.get("source", "shipped")
    return str(shipped_dir(data.get("name"))) if source == "shipped" else get_source(source).path


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs_of(config: dict, policy: ModelSpec, teacher: ModelSpec | None, loss, places: Places, *, module=None,
             chain=None) -> RunNeeds:  # fmt: skip
    """What the run will load and run, asked of the objects it is made of: ``policy``/``teacher`` (the specs it
    built), ``loss``, ``module`` (the training module built from them, unloaded: ``held_models()``) and
    ``chain`` (the data chain, or None: ``stages()``). ``config`` (the resolved config as plain dicts) gives
    the data locations, the hardware and the evaluation suite."""
    run = RunNeeds(models=[("policy", policy, "model.name_or_path")])
    if teacher is not None:
        local, problems = _teachers(teacher)
        run.models += [("teacher", spec, "teacher.name_or_path") for spec in local]
        run.problems += problems
    elif "teacher" in loss.needs or (chain is not None and chain.needs_teacher):
        run.problems.append(
            f"teacher: method {loss.name!r} needs one. Fix: teacher=<model config>, e.g. teacher=tiny"
        )
    run.data.append((f"data {config['data'].get('source')}", _data_location(config["data"]), "data.path"))
    run.problems += [p for p in [bad_rows(config["data"])] if p]  # every bad row, in one problem (data/scan.py)
    sizes = Sizes(places)
    if chain is not None:
        _pipeline_needs(run, chain, policy, teacher, sizes)
    _training_needs(run, loss, module, sizes)
    if config.get("eval"):
        _eval_needs(run, config["eval"], places)
    return run


def _teachers(teacher) -> tuple[list[ModelSpec], list[str]]:
    """The local teacher models (one, or a mixture's) and the problems of a served one (one try to reach it)."""
    from prefdistill.models.served import ServedTeacher, ServedTeacherError

    teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    problems = []
    for served in (t for t in teachers if isinstance(t, ServedTeacher)):
        try:
            dataclasses.replace(served, max_retries=0).model_name()
        except ServedTeacherError as err:
            problems.append(f"teacher: {err}")
    return [t for t in teachers if isinstance(t, ModelSpec)], problems


def _pipeline_needs(run: RunNeeds, chain, policy, teacher, sizes: Sizes) -> None:
    """The chain's stages (``Chain.stages``) and the memory of each that loads a model: an SFT (or reward-model)
    stage trains it, a sampling or scoring stage holds it for inference."""
    run.pipeline = chain.stages(policy, teacher)
    for stage in run.pipeline:
        run.stages.append(stage.name)
        for role, spec in stage.models:
            if spec is None:
                continue
            if role not in ("student", "teacher") and spec not in (policy, teacher):  # a scorer, a reward model
                run.models.append((role, spec, "pipeline.prepare.step.scorer"))
            size = sizes(spec)
            if size is not None:
                make = sft_phase if stage.trains else inference_phase
                run.phases.append(make(f"{stage.name} ({role})", spec, size))
    if chain.sampler.backend == "vllm" and not _installed("vllm"):
        run.problems.append("vLLM (pipeline.prepare.sampler.backend=vllm) is not installed. Fix: pip install "
                            "'prefdistill[vllm]' on a CUDA machine, or pipeline.prepare.sampler.backend=hf")  # fmt: skip


def _training_needs(run: RunNeeds, loss, module, sizes: Sizes) -> None:
    """Training's memory from what ``module`` says it holds (``held_models()``): the policy trained, the frozen
    copies beside it in every step, and one phase per pass that fills a cache (the policy plus that model)."""
    run.stages.append(f"train {loss.name} ({loss.kind})")
    if module is None:
        return
    run.held = module.held_models()
    for h in run.held:  # a reference of its own (module.reference) must resolve too
        if h.role == "reference" and h.loads and h.spec != module.policy_spec:
            run.models.append(("reference", h.spec, "module.reference.name_or_path"))
    policy = sizes(module.policy_spec)
    if policy is None:
        return
    frozen = tuple((h.role, h.spec, sizes(h.spec) or policy) for h in run.held if h.how == "frozen")
    trainee = Trainee(module.policy_spec, policy, module.optimizer_name, frozen, not module.optimizer_in_backward)
    run.phases.append(Phase("training", lambda hw: training_memory(trainee, hw)))
    for h in run.held:
        if h.how == "pass" and sizes(h.spec) is not None:
            run.phases.append(pass_phase(f"{h.role} pass ({h.note or 'cache'})", trainee, h.spec, sizes(h.spec)))


def _eval_needs(run, suite: dict, places) -> None:
    run.stages.append(f"evaluate {suite.get('name')}")
    data, task = suite.get("data") or {}, suite.get("task", "pairs")
    default = {"gsm8k": "openai/gsm8k", "alpacaeval": "tatsu-lab/alpaca_eval"}.get(task)
    location = data.get("path") or default or _data_location({"source": "shipped", **data})
    run.data.append((f"eval data {data.get('source') or task}", location, "eval.data.path"))
    if (suite.get("reward") or {}).get("name_or_path"):
        run.models.append(
            ("reward model", ModelSpec(suite["reward"]["name_or_path"]), "eval.reward.name_or_path")
        )
    judge = suite.get("judge") or {}
    key = judge.get("api_key_env")
    if judge and key and not judge.get("base_url") and not os.environ.get(key):
        run.problems.append(
            f"judge {judge.get('model')}: ${key} is not set. Fix: export {key}=<key>, or eval.judge=null"
        )
    if suite.get("backend") == "vllm" and not _installed("vllm"):
        run.problems.append(
            "vLLM (eval.backend=vllm) is not installed. Fix: pip install 'prefdistill[vllm]', or eval.backend=hf"
        )


# -- the plan ------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What will run, how each piece loads, and memory per device per phase; ``problems`` empty = go
    (they are not rendered: :class:`PreflightError` lists them)."""

    stages: list[str]
    resolved: list[Resolved]
    hardware: Hardware
    capacity: tuple[int | None, str]
    memory: dict[str, dict[str, float]]
    problems: list[str]
    held: list = field(default_factory=list)  # the training module's HeldModel s (per rank)
    pipeline: list = field(default_factory=list)  # the data chain's PlannedStage s

    def render(self) -> str:
        lines = ["preflight plan", "  stages: " + " -> ".join(self.stages)]
        lines += [f"  {r.label}: {r.source or 'MISSING'}" for r in self.resolved]
        if self.held:
            lines.append("  training holds, per rank:")
            lines += [f"    {h.describe()}" for h in self.held]
        lines.append(f"  memory per device, at least (hardware={self.hardware.name}: {self.capacity[1]}):")
        for phase, parts in self.memory.items():
            detail = " + ".join(f"{k} {gib(v)}" for k, v in parts.items() if v)
            lines.append(f"    {phase:<28} {gib(sum(parts.values())):>7} GiB  ({detail or 'nothing'})")
        return "\n".join(lines)


def plan_run(run: RunNeeds, hw: Hardware, places: Places, *, cuda: tuple[int, int | None] = (0, None),
             host: int | None = None) -> Plan:  # fmt: skip
    """Resolve ``run``'s models and data, check ``hw`` (``cuda`` = visible GPUs and memory of one) and
    the memory of every phase. Returns the plan; its ``problems`` list is empty when the run can start."""
    resolved = []
    for role, spec, key in run.models:
        resolved.append(resolve_model(spec, role, key, places))
        tokenizer = resolve_tokenizer(spec, role, key.replace("name_or_path", "tokenizer"), places)
        resolved += [tokenizer] if tokenizer else []
    resolved += [resolve_dataset(label, loc, key, places) for label, loc, key in run.data]
    problems = list(dict.fromkeys(f"{r.label}: {r.problem}" for r in resolved if r.problem))
    problems += run.problems
    if hw.accelerator == "gpu" and cuda[0] < hw.devices:
        problems.append(
            f"hardware={hw.name} needs {hw.devices} CUDA GPU(s), {cuda[0]} visible here. "
            "Fix: hardware=cpu (or deepspeed_cpu), or run on a machine with the GPUs"
        )
    if hw.zero_stage and not _installed("deepspeed"):
        problems.append(
            f"hardware={hw.name} needs DeepSpeed. Fix: DS_BUILD_OPS=0 pip install 'prefdistill[deepspeed]'"
        )
    host = host if host is not None else host_memory()
    capacity = device_memory(hw, cuda[1], host)
    problems += memory_problems(run.phases, hw, capacity[0], hardware_profiles(cuda[1], host))
    memory = {p.name: p.estimate(hw) for p in run.phases}
    return Plan(run.stages, resolved, hw, capacity, memory, problems, run.held, run.pipeline)


def _cuda() -> tuple[int, int | None]:
    import torch

    if not torch.cuda.is_available():
        return 0, None
    return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory


def check(
    config: dict, policy: ModelSpec, teacher: ModelSpec | None, loss, *, module=None, chain=None,
    places: Places | None = None,
) -> Plan:  # fmt: skip
    """The entry point's preflight: ``config`` is its resolved config as plain dicts, ``module`` and ``chain`` the
    training module and data chain built from it (nothing loaded; see :func:`needs_of`). Returns the plan (the
    entry point shows it); logs it and raises :class:`PreflightError` listing every problem."""
    places = places or Places.here()
    cuda = _cuda()
    run = needs_of(config, policy, teacher, loss, places, module=module, chain=chain)
    plan = plan_run(
        run,
        hardware_of(config.get("hardware") or {}, config.get("trainer") or {}, cuda[0]),
        places,
        cuda=cuda,
    )
    if plan.problems:
        log.info("%s", plan.render())
        raise PreflightError(plan.problems)
    return plan
