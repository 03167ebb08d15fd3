"""Static memory per device of a run's phases, and the hardware facts it depends on.

Used by :mod:`prefdistill.preflight` to refuse a run that cannot fit before anything loads. Bytes per
device, with P parameters, T trainable, b bytes per weight and N devices. Static memory only --
weights, gradients, optimizer state, frozen copies; activations, KV caches and allocator slack come
on top, so a phase refused here cannot fit at any batch size:

* b = 2 for bfloat16/float16 weights (the spec's dtype, ``auto`` for a pretrained model, a 16-bit
  ``*-true`` precision, or any 16-bit precision under DeepSpeed, which casts the model), else 4.
* Weights P*b, gradients T*b (none kept with ``module.optimizer_in_backward``), optimizer states in the
  weights' dtype (Adam 2, RMSprop 1); DeepSpeed with 16-bit precision keeps fp32 states plus an fp32
  master copy: Adam 12*T, RMSprop 8*T (ZeRO, Rajbhandari et al. 2020, sec. 3.1: K = 12).
* ZeRO-1/2/3 divide optimizer state by N, ZeRO-2/3 also gradients, ZeRO-3 also weights and the frozen
  copies (built under ``zero.Init``); offloading moves optimizer state (parameters) to host memory.
* LoRA: T = r*(in + out) per adapted linear layer of the model built on the meta device
  (:func:`meta_size`); with only a published count, T = r * 0.04 % of P (Llama-2-7B, every linear
  layer: 40 M at r = 16).
* Inference phases (sampling, scoring) hold P*b on one device; a pass that fills a cache before training
  (reference log-probs, a teacher's top-k) holds the policy's weights beside the full model it runs.

Worked example (tests/test_preflight.py): P = T = 1e9, Adam, 16-bit under DeepSpeed on N = 8:
ZeRO-2 = 2 + 2/8 + 12/8 = 3.75 GB per device, ZeRO-3 = (2 + 2 + 12)/8 = 2 GB; fp32 on one device
without DeepSpeed = 4 + 4 + 8 = 16 GB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from prefdistill.models.spec import ModelSpec

GiB = 1024**3
ASSUMED_GPU_MEMORY = 80 * GiB  # per GPU, for profiles of GPUs this machine does not have (A100/H100 80 GB)
LORA_FRACTION_PER_RANK = 4e-4
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "rmsprop": 1, "sgd": 0}
# Published parameter counts (model cards, safetensors metadata) of the checkpoints the configs name.
PARAMETERS = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-2-13b-hf": 13_015_864_320,
    "meta-llama/Meta-Llama-3-8B": 8_030_261_248,
    "meta-llama/Meta-Llama-3-8B-Instruct": 8_030_261_248,
    "princeton-nlp/Llama-3-Base-8B-SFT": 8_030_261_248,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "mistralai/Mistral-7B-Instruct-v0.2": 7_241_732_096,
    "alignment-handbook/zephyr-7b-sft-full": 7_241_732_096,
    "google/gemma-2-2b-it": 2_614_341_888,
    "google/gemma-2-9b-it": 9_241_705_984,
    "google/gemma-3-270m": 268_098_176,
    "openai-community/gpt2": 124_439_808,
    "openai-community/gpt2-medium": 354_823_168,
    "openai-community/gpt2-large": 774_030_080,
    "EleutherAI/gpt-neo-1.3B": 1_315_575_808,
    "EleutherAI/gpt-neo-2.7B": 2_651_307_520,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 134_515_008,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "Qwen/Qwen2.5-1.5B-Instruct": 1_543_714_304,
    "OpenAssistant/reward-model-deberta-v3-large-v2": 435_000_000,
}


# -- hardware ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hardware:
    """What the memory estimate needs to know about a hardware profile (``configs/hardware/``)."""

    name: str
    accelerator: str = "cpu"  # cpu | gpu
    devices: int = 1  # world size: devices per node x nodes
    precision: str = "32-true"
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_parameters: bool = False

    @property
    def sixteen_bit(self) -> bool:
        return self.precision.startswith(("bf16", "16"))


def hardware_of(hardware: dict, trainer: dict, cuda_devices: int = 0) -> Hardware:
    """A ``Hardware`` from the ``hardware`` and ``trainer`` sections of a config (plain dicts). Devices
    ``-1``/``auto`` are the GPUs visible here, or the profile's ``gpus_per_node`` without any."""
    strategy = trainer.get("strategy") if isinstance(trainer.get("strategy"), dict) else {}
    accelerator = "gpu" if trainer.get("accelerator") in ("gpu", "cuda") else "cpu"
    devices = trainer.get("devices", 1)
    if devices in (-1, "-1", "auto", None):
        devices = cuda_devices or int(hardware.get("gpus_per_node") or 1) if accelerator == "gpu" else 1
    devices = len(devices) if isinstance(devices, list) else int(devices)
    deepspeed = "DeepSpeed" in str(strategy.get("_target_", ""))
    return Hardware(
        name=str(hardware.get("name", "?")),
        accelerator=accelerator,
        devices=devices * int(trainer.get("num_nodes") or 1),
        precision=str(trainer.get("precision", "32-true")),
        zero_stage=int(strategy.get("stage", 0)) if deepspeed else 0,
        offload_optimizer=bool(strategy.get("offload_optimizer")) if deepspeed else False,
        offload_parameters=bool(strategy.get("offload_parameters")) if deepspeed else False,
    )


def host_memory() -> int:
    """Physical memory, or the cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        return total


def device_memory(hw: Hardware, cuda_memory: int | None, host: int) -> tuple[int | None, str]:
    """``(bytes per device, how it is known)``: host memory shared by CPU devices; a GPU's memory
    when this machine has that accelerator, else None for this run (or the assumed 80 GiB when
    ``cuda_memory`` is passed as ``ASSUMED_GPU_MEMORY`` for another profile)."""
    if hw.accelerator == "cpu":
        return host // hw.devices, f"{hw.devices} x {host / hw.devices / GiB:.1f} GiB host memory"
    if cuda_memory is None:
        return None, f"{hw.devices} GPUs, none here"
    assumed = " assumed" if cuda_memory == ASSUMED_GPU_MEMORY else ""
    return cuda_memory, f"{hw.devices} x {cuda_memory / GiB:.0f} GiB{assumed}"


def hardware_profiles(cuda_memory: int | None, host: int) -> list[tuple[Hardware, int | None, str]]:
    """Every ``configs/hardware/*.yaml`` as ``(Hardware, bytes per device, description)``; GPU profiles
    get this machine's GPU memory, or the assumed 80 GiB without one. Read as plain YAML: the few
    ``${hardware.<key>}`` values they use are looked up in the same file."""
    import yaml

    from prefdistill.utils.run import config_dir

    out = []
    for path in sorted(Path(config_dir(), "hardware").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        hardware = raw.get("hardware") or {}

        def value(v, hardware=hardware):
            m = re.fullmatch(r"\$\{hardware\.(\w+)\}", str(v))
            return hardware.get(m.group(1)) if m else v

        trainer = {k: value(v) for k, v in (raw.get("trainer") or {}).items()}
        hw = hardware_of(hardware, trainer)
        cap, desc = device_memory(hw, cuda_memory or ASSUMED_GPU_MEMORY, host)
        out.append((hw, cap, desc))
    return out


# -- memory --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """A model's parameter count and, under LoRA, its adapter count (None: estimate from the rank)."""

    params: int
    adapters: int | None = None
    source: str = "table"


def _adapted(name: str, targets, output_name: str) -> bool:
    """Does a LoRA ``target_modules`` value (peft's rules) select the linear layer ``name``?"""
    if targets == "all-linear":
        return name != output_name
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name.split(".")[-1] in targets


def meta_size(config, lora: dict | None) -> Size:
    """Exact parameter and LoRA adapter counts of a transformers config, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    if not lora:
        return Size(params, None, "config")
    output = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
    adapters = sum(
        lora["r"] * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and _adapted(name, lora["target_modules"], output)
    )
    return Size(params, adapters, "config")


def weight_bytes(spec: ModelSpec, hw: Hardware) -> int:
    if hw.sixteen_bit and (hw.precision.endswith("-true") or hw.zero_stage > 0):
        return 2
    pretrained_auto = spec.dtype == "auto" and spec.random_init is None
    return 2 if spec.dtype in ("bfloat16", "float16") or pretrained_auto else 4


def trainable(size: Size, spec: ModelSpec) -> int:
    if not spec.lora:
        return size.params
    return (
        size.adapters
        if size.adapters is not None
        else int(size.params * LORA_FRACTION_PER_RANK * spec.lora["r"])
    )


@dataclass(frozen=True)
class Trainee:
    """A model trained in a phase, with the frozen copies held beside it: ``[(name, spec, size)]``."""

    spec: ModelSpec
    size: Size
    optimizer: str = "adamw"
    frozen: tuple = ()
    grads_kept: bool = True


def training_memory(t: Trainee, hw: Hardware) -> dict[str, float]:
    """Bytes per device of training ``t`` on ``hw`` (formulas in the module docstring)."""
    b, n, z = weight_bytes(t.spec, hw), hw.devices, hw.zero_stage
    n_trainable = trainable(t.size, t.spec)
    states = OPTIMIZER_STATES.get(t.optimizer, 2)
    per_state = 4 + 4 * states if z and hw.sixteen_bit else states * b  # fp32 master + fp32 states
    parts = {
        "weights": 0.0 if hw.offload_parameters else t.size.params * b / (n if z == 3 else 1),
        "gradients": n_trainable * b / (n if z >= 2 else 1) if t.grads_kept else 0.0,
        "optimizer": 0.0 if hw.offload_optimizer else n_trainable * per_state / (n if z >= 1 else 1),
    }
    for name, spec, size in t.frozen:
        parts[name] = size.params * weight_bytes(spec, hw) / (n if z == 3 else 1)
    return parts


@dataclass(frozen=True)
class Phase:
    """A span of the run with its own memory: ``estimate(hardware) -> {part: bytes per device}``."""

    name: str
    estimate: Callable[[Hardware], dict[str, float]]
    trains: bool = True  # inference only: LoRA would not make it smaller


def inference_phase(name: str, spec: ModelSpec, size: Size) -> Phase:
    return Phase(name, lambda hw: {"weights": size.params * weight_bytes(spec, hw)}, trains=False)


def pass_phase(name: str, trainee: Trainee, spec: ModelSpec, size: Size) -> Phase:
    """A no-grad pass that fills a cache before the first step (reference log-probs, teacher top-k): the
    policy's weights (as training holds them) beside a full, unpartitioned copy of the model that runs it."""

    def estimate(hw: Hardware) -> dict[str, float]:
        return {"policy": training_memory(trainee, hw)["weights"], "pass": size.params * weight_bytes(spec, hw)}

    return Phase(name, estimate, trains=False)


def sft_phase(name: str, spec: ModelSpec, size: Size) -> Phase:
    """A pipeline SFT stage: one device, fp32 precision, AdamW (``pipeline/sft.py``), whatever the profile."""
    single = Hardware("sft stage")
    return Phase(
        name, lambda hw: training_memory(Trainee(spec, size), replace(single, accelerator=hw.accelerator))
    )


def gib(x: float) -> str:
    return f"{x / GiB:.2f}" if x < 10 * GiB else f"{x / GiB:.1f}"


def memory_problems(
    phases: list[Phase], hw: Hardware, capacity: int | None, profiles: list[tuple]
) -> list[str]:
    """One problem per phase whose static memory exceeds ``capacity``, naming the ``profiles``
    (``[(Hardware, capacity, description)]``) on which it would fit."""
    problems = []
    for phase in phases:
        parts = phase.estimate(hw)
        need = sum(parts.values())
        if capacity is None or need <= capacity:
            continue
        fits = sorted(
            (sum(phase.estimate(other).values()), other.name, desc)
            for other, cap, desc in profiles
            if cap is not None and sum(phase.estimate(other).values()) <= cap
        )
        listed = ", ".join(f"hardware={name} ({desc}: {gib(n)} GiB each)" for n, name, desc in fits)
        detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items() if v)
        problems.append(
            f"memory: {phase.name} needs at least {gib(need)} GiB per device ({detail}; activations "
            f"excluded) and hardware={hw.name} has {gib(capacity)} GiB. Fix: "
            + (f"a profile that fits, {listed}" if fits else "no hardware profile fits it")
            + (
                "; or LoRA (model.lora={r: 16}), 16-bit weights (model.dtype=bfloat16)"
                if phase.trains
                else ""
            )
            + ", or a smaller model"
        )
    return problems
