"""Turn a ``ModelSpec`` into a tokenizer and an HF model (optionally LoRA-wrapped), and save them.

``head="score"`` builds the same network with a scalar head instead of the LM head
(``AutoModelForSequenceClassification``, ``num_labels=1``: a reward model; same weights, a new head
seeded with ``spec.seed``, ``config.pad_token_id`` set so the model finds each row's last token).

Hub ids are tried first (with ``local_files_only=True`` when ``hub.hub_reachable()`` says the hub
is down, so an unreachable hub fails in milliseconds instead of ~23 s of retries). If that fails and
the spec has an ``offline_fallback``, the packaged GGUF is converted once into
``<cache_dir>/gguf/<name>/`` and loaded from there, with a WARNING saying so.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from prefdistill.models import gguf
from prefdistill.models.hub import hub_reachable
from prefdistill.models.prune import prune_layers
from prefdistill.models.spec import ModelSpec
from prefdistill.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

TORCH_DTYPES: dict[str, Any] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}
_warned: set[str] = set()
_fallbacks_used: dict[str, str] = {}  # name_or_path -> how its weights were loaded instead (this process)
HEADS = ("lm", "score")  # causal-LM head | scalar score head (reward model)


def _auto_class(head: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return AutoModelForCausalLM if head == "lm" else AutoModelForSequenceClassification


def _head_kwargs(head: str, tokenizer) -> dict[str, Any]:
    """A score head has one output and needs the pad id to find each row's last token."""
    return {} if head == "lm" else {"num_labels": 1, "pad_token_id": tokenizer.pad_token_id}


def _load_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return (OSError, HfHubHTTPError)


def _fallback_folder(spec: ModelSpec, reason: BaseException, offline: bool) -> Path:
    """Convert (once) and return the offline fallback's HF folder; warn once per process."""
    fb, cache_dir = spec.offline_fallback, spec.resolved_cache_dir()
    path = gguf.fallback_gguf_path(fb, cache_dir)
    start = time.perf_counter()
    folder, converted = gguf.cached_conversion(path, cache_dir)
    _fallbacks_used[spec.name_or_path] = (
        f"the offline GGUF fallback {path.name} ({gguf.quant_label(path)} dequantised, package {fb['package']})"
    )
    if str(folder) not in _warned:
        _warned.add(str(folder))
        why = "the hub is unreachable" if offline else "loading from the hub failed"
        first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
        log.warning(
            "Could not load %r (%s; %s). Using the offline fallback GGUF %s from package %r: a %s "
            "dequantisation, so weights differ slightly from the original bf16 release. Cached HF "
            "folder: %s (%s).",
            spec.name_or_path, why, first_line, path, fb["package"], gguf.quant_label(path), folder,
            f"converted now in {time.perf_counter() - start:.1f} s" if converted else "reused",
        )  # fmt: skip
    return folder


def _load_source(spec: ModelSpec, load: Callable[..., Any]) -> Any:
    """Call ``load(path, **kw)`` on the spec's weights source, falling back to the packaged GGUF."""
    extra = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    if spec.local_dir is not None:
        return load(str(spec.local_dir), **extra)
    offline = not hub_reachable()
    try:
        return load(spec.name_or_path, revision=spec.revision, local_files_only=offline, **extra)
    except _load_errors() as err:
        if spec.offline_fallback is None:
            raise
        return load(str(_fallback_folder(spec, err, offline)))


def fallback_used(spec: ModelSpec) -> str | None:
    """How ``spec``'s weights were loaded in this process when not from ``spec.name_or_path`` itself (the
    offline GGUF fallback), else None."""
    return _fallbacks_used.get(spec.name_or_path)


def load_tokenizer(spec: ModelSpec):
    """Tokenizer for ``spec`` (rule in ``spec.py``); pad = eos if missing, right padding."""
    from transformers import AutoTokenizer

    def load(path: str, **kw: Any):
        return AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code, **kw)

    if spec.tokenizer in (None, spec.name_or_path) and spec.random_init is None:
        tokenizer = _load_source(spec, load)
    else:
        tokenizer = load(spec.tokenizer_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _random_init(spec: ModelSpec, head: str = "lm"):
    from transformers import AutoConfig

    tokenizer = load_tokenizer(spec)
    kwargs = dict(spec.random_init)
    model_type = kwargs.pop("model_type")
    kwargs.setdefault("vocab_size", len(tokenizer))
    for name in ("bos", "eos", "pad"):
        kwargs.setdefault(f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
    config = AutoConfig.for_model(model_type, **{**kwargs, **_head_kwargs(head, tokenizer)})
    dtype = torch.float32 if spec.dtype == "auto" else TORCH_DTYPES[spec.dtype]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _auto_class(head).from_config(
            config, dtype=dtype, attn_implementation=spec.attn_implementation, trust_remote_code=spec.trust_remote_code
        )  # fmt: skip
    model.config._name_or_path = spec.name_or_path
    return model


def _pretrained(spec: ModelSpec, head: str = "lm"):
    kw: dict[str, Any] = {"dtype": TORCH_DTYPES[spec.dtype], "trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation:
        kw["attn_implementation"] = spec.attn_implementation
    kw |= _head_kwargs(head, load_tokenizer(spec) if head != "lm" else None)

    def load(path: str, **extra: Any):
        if extra.get("local_files_only"):  # transformers does not pass it on to its adapter lookup
            extra["adapter_kwargs"] = {"local_files_only": True}
        return _auto_class(head).from_pretrained(path, **kw, **extra)

    with _seeded(spec.seed) if head != "lm" else contextlib.nullcontext():  # the new head: from spec.seed
        model = _load_source(spec, load)
    if (
        spec.local_dir is None
    ):  # the hub id, also when the weights came from the fallback's cache folder: what
        model.name_or_path = model.config.name_or_path = spec.name_or_path  # an adapter names as its base
    if getattr(model, "hf_quantizer", None) is not None and spec.gguf_file:
        model.hf_quantizer.remove_quantization_config(model)  # dequantised: train and save as plain
    return model


@contextlib.contextmanager
def _seeded(seed: int):
    """Draw from ``seed`` inside, and leave the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _apply_lora(model, lora: dict, head: str = "lm"):
    """PEFT-wrap ``model``; with a score head (``SEQ_CLS``) PEFT also trains and saves the head itself."""
    from peft import LoraConfig, get_peft_model

    extra = dict(lora)
    config = LoraConfig(
        r=extra.pop("r"),
        lora_alpha=extra.pop("alpha"),
        lora_dropout=extra.pop("dropout"),
        target_modules=extra.pop("target_modules"),
        modules_to_save=extra.pop("modules_to_save"),
        task_type="CAUSAL_LM" if head == "lm" else "SEQ_CLS",
        **extra,  # any other LoraConfig field, e.g. use_rslora, bias
    )
    return get_peft_model(model, config)


def _enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (renamed in transformers 5.x; old name kept for 4.x)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_model(spec: ModelSpec, *, trainable: bool = True, head: str = "lm") -> torch.nn.Module:
    """HF causal LM for ``spec`` (``head="score"``: a one-output sequence classifier, see the module
    docstring); PEFT-wrapped when ``spec.lora`` and ``trainable``.

    ``trainable=False`` gives a frozen copy (reference/teacher): eval mode, no grads, no LoRA.
    ``spec.prune`` keeps only some decoder layers (``prune.py``), before LoRA is applied.
    """
    model = _random_init(spec, head) if spec.random_init is not None else _pretrained(spec, head)
    if spec.prune is not None:
        model = prune_layers(model, spec.prune["keep_layers"])
    if not trainable:
        model.requires_grad_(False)
        return model.eval()
    if spec.gradient_checkpointing:
        _enable_checkpointing(model)
        model.config.use_cache = False
        if spec.lora:  # frozen embeddings: make checkpointed inputs require grad (reentrant-safe)
            model.enable_input_require_grads()
    if spec.lora:
        model = _apply_lora(model, spec.lora, head)
    return model.train()


def merge_and_save(
    model, tokenizer, out_dir: str | Path, *, merge: bool = False, standalone: bool = False
) -> Path:
    """Save ``model`` (+ tokenizer) so plain transformers/peft can load it; returns ``out_dir``.

    A PEFT model saves its adapter (``PeftModel.from_pretrained(base, out_dir)``); with ``merge=True``
    a merged full model also goes to ``out_dir/merged`` (merged on a copy: ``model`` keeps its
    adapter). ``standalone=True`` saves the merged full model at ``out_dir`` itself, no adapter (a reward
    model: ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` needs no base model). A plain
    model is saved in full at ``out_dir`` (``merged/`` is then not written). Written to a temporary
    sibling and renamed, so ``out_dir`` is never half-written.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    if standalone and isinstance(model, PeftModel):
        model, merge = copy.deepcopy(model).merge_and_unload(), False
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if merge and isinstance(model, PeftModel):
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(tmp / "merged")
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp / "merged")
    return out_dir
