"""``ModelSpec``: what to load, not the weights (configs hold specs; modules load lazily).

Built by Hydra from ``configs/model/*.yaml`` (``_target_: prefdistill.models.ModelSpec``).
Where the weights come from, in order:

1. ``random_init`` set: a fresh model from these transformers config kwargs (``model_type`` required),
   seeded with ``seed``; ``vocab_size`` defaults to the tokenizer's size.
2. ``gguf_file`` set: that GGUF file inside ``name_or_path`` (a folder or hub id), dequantised.
3. otherwise ``name_or_path`` as a local folder or a hub id; when the hub is unreachable and the model
   is not cached, ``offline_fallback`` names a GGUF shipped in a pip package (see ``gguf.py``).

``prune`` (e.g. ``{keep_layers: every_3rd}``) keeps only some decoder layers of the loaded model
(``prune.py``); it is part of ``identity()``.

Tokenizer rule (``tokenizer``, default ``name_or_path``): an existing local folder wins; else a name
of a folder under ``prefdistill/assets/tokenizers/`` (e.g. ``tiny``); else a hub id.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16", "float16", "auto")
ASSET_TOKENIZERS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # weight files of a local model folder
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear", "modules_to_save": None}


def _plain(value: Any) -> Any:
    """DictConfig/ListConfig (or any Mapping/sequence) -> plain dict/list, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def default_cache_dir() -> Path:
    return Path(os.environ.get("PREFDISTILL_CACHE") or Path.home() / ".cache" / "prefdistill")


def file_fingerprint(path: str | os.PathLike) -> dict:
    """Size, mtime and sha256 of the first MiB: cheap, and enough to notice a replaced file."""
    p = Path(path)
    with open(p, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime), "sha256_1mb": head}


@dataclass
class ModelSpec:
    name_or_path: str
    revision: str | None = None
    tokenizer: str | None = None
    gguf_file: str | None = None
    offline_fallback: dict | None = None
    random_init: dict | None = None
    seed: int = 0
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    gradient_checkpointing: bool = False
    lora: dict | None = None
    trust_remote_code: bool = False
    cache_dir: str | None = None
    prune: dict | None = None

    def __post_init__(self) -> None:
        for name in ("offline_fallback", "random_init", "lora", "prune"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"ModelSpec.{name} must be a mapping or null, got {type(value).__name__}")
            setattr(self, name, _plain(value))
        if not self.name_or_path:
            raise ValueError("ModelSpec.name_or_path must be a non-empty string")
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelSpec.dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.random_init is not None and "model_type" not in self.random_init:
            raise ValueError("ModelSpec.random_init needs a 'model_type' (e.g. llama)")
        if self.offline_fallback is not None:
            missing = {"package", "gguf_file"} - set(self.offline_fallback)
            if missing:
                raise ValueError(f"ModelSpec.offline_fallback is missing {sorted(missing)}")
        if self.lora is not None:
            self.lora = {**LORA_DEFAULTS, **self.lora}
        if self.prune is not None:
            from prefdistill.models.prune import check_prune

            self.prune = check_prune(self.prune)

    # --- resolution -------------------------------------------------------------------------------
    @property
    def tokenizer_source(self) -> str:
        """Folder or hub id to load the tokenizer from (see the module docstring for the rule)."""
        name = self.tokenizer or self.name_or_path
        local = Path(name).expanduser()
        if local.is_dir():
            return str(local.resolve())
        asset = ASSET_TOKENIZERS / name
        if "/" not in name and asset.is_dir():
            return str(asset)
        return name

    @property
    def local_dir(self) -> Path | None:
        """``name_or_path`` as an existing local folder, else None (a hub id)."""
        p = Path(self.name_or_path).expanduser()
        return p.resolve() if p.is_dir() else None

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def identity(self) -> dict:
        """Everything that determines the (frozen) weights and their numerics, for cache keys.

        LoRA, gradient checkpointing and the attention kernel are left out: they do not change
        what a frozen reference computes (up to kernel rounding). The offline fallback's GGUF is
        fingerprinted when installed, since it is what loads when the hub is unreachable. A local folder's
        weight files are fingerprinted too: a folder rewritten in place (a re-run into the same run
        folder) is another model, not a cache hit.
        """
        ident: dict[str, Any] = {
            "name_or_path": str(self.local_dir or self.name_or_path),
            "revision": self.revision,
            "tokenizer": self.tokenizer_source,
            "dtype": self.dtype,
        }
        if self.random_init is not None:
            ident["random_init"] = dict(sorted(self.random_init.items()))
            ident["seed"] = self.seed
        if self.gguf_file is not None:
            path = (self.local_dir / self.gguf_file) if self.local_dir else None
            ident["gguf"] = file_fingerprint(path) if path and path.is_file() else self.gguf_file
        if self.offline_fallback is not None:
            from prefdistill.models.gguf import find_package_file

            path = find_package_file(self.offline_fallback["package"], self.offline_fallback["gguf_file"])
            ident["offline_fallback"] = file_fingerprint(path) if path else dict(self.offline_fallback)
        if self.prune is not None:
            ident["prune"] = self.prune
        folder = self.local_dir
        if folder is not None and self.gguf_file is None and self.random_init is None:
            weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
            ident["weights"] = [file_fingerprint(p) for p in weights]
        return ident

    def to_dict(self) -> dict:
        return asdict(self)


# -- the specs a run trained with, recorded in its folder ----------------------------------------
RUN_SPEC_FILES = {"policy": "policy_spec.json", "teacher": "teacher_spec.json"}
_CONFIG_NODES = {"policy": "model", "teacher": "teacher"}


def record_run_spec(spec: ModelSpec, run_dir: str | os.PathLike, role: str) -> Path:
    """Write ``<run>/<role>_spec.json``: the spec the run trains with after any pipeline stage replaced
    the configured one (an SFT'd student is the base of its LoRA adapter; an SFT'd teacher the T-S
    comparator). ``role``: ``policy`` or ``teacher``."""
    from prefdistill.utils.atomic import atomic_write_json

    return atomic_write_json(Path(run_dir) / RUN_SPEC_FILES[role], spec.to_dict())


def run_spec(run_dir: str | os.PathLike, role: str) -> ModelSpec | None:
    """The ``role`` spec of a train.py run: the recorded file, else (older runs) the node of its
    ``config_resolved.yaml`` (``model`` / ``teacher``), else None."""
    import json

    run_dir = Path(run_dir)
    recorded = run_dir / RUN_SPEC_FILES[role]
    if recorded.is_file():
        return ModelSpec(**json.loads(recorded.read_text()))
    config = run_dir / "config_resolved.yaml"
    if not config.is_file():
        return None
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(config).get(_CONFIG_NODES[role])
    return instantiate(node) if node else None
