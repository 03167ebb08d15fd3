"""vLLM rollouts during training, against a small fake ``vllm`` (``LLM`` recording what it is given, its
engine's ``load_weights`` recording what is pushed): the engine starts from the policy as it stands, the
policy's weights are pushed under the plain model's names (LoRA merged, then unmerged) once per optimizer
step, every row is a request with its own seed, and a missing vLLM fails with the install hint."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch
from fake_vllm import install

from prefdistill.generation import SamplingParams
from prefdistill.generation.base import sample_seed
from prefdistill.models import load_model


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str = "length"
    stop_reason: None = None


class FakeEngineModel:
    def __init__(self):
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights):
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.resets = kwargs, [], 0
        self.engine_model = FakeEngineModel()
        runner = types.SimpleNamespace(model=self.engine_model)
        worker = types.SimpleNamespace(model_runner=runner)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append((requests, params))
        return [types.SimpleNamespace(outputs=[FakeCompletion("x", [7, 8, 9])]) for _ in requests]

    def reset_prefix_cache(self):
        self.resets += 1


@pytest.fixture
def fake_vllm(monkeypatch):
    return install(monkeypatch, FakeLLM)


@pytest.fixture
def lora_policy(peaky_spec):
    spec = dataclasses.replace(peaky_spec, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    policy = load_model(spec, trainable=True)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    return spec, policy


def test_the_engine_starts_from_the_policy_saved_as_a_plain_model(fake_vllm, lora_policy):
    from prefdistill.generation.vllm_rollouts import VLLMRollouts

    spec, policy = lora_policy
    rollouts = VLLMRollouts(spec, policy, version=3, gpu_memory_utilization=0.25)
    (llm,) = FakeLLM.instances
    folder = Path(llm.kwargs["model"])
    assert llm.kwargs["gpu_memory_utilization"] == 0.25 and folder.is_dir()
    assert "adapter_config.json" not in {p.name for p in folder.iterdir()}  # merged, no adapter
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    rollouts.sync_weights(3)
    assert llm.engine_model.loaded == {}  # the engine already holds step 3's weights
    rollouts.close()
    assert not folder.exists()


def test_weights_are_pushed_merged_under_plain_names_once_per_step(fake_vllm, lora_policy):
    from prefdistill.generation.vllm_rollouts import VLLMRollouts

    spec, policy = lora_policy
    merged = copy.deepcopy(policy).merge_and_unload()
    probe = torch.tensor([[1, 5, 9, 13]])
    before = policy(input_ids=probe).logits
    rollouts = VLLMRollouts(spec, policy, version=0)
    rollouts.sync_weights(1)
    engine = FakeLLM.instances[0]
    assert set(engine.engine_model.loaded) == {n for n, _ in merged.named_parameters()}
    for name, weight in merged.named_parameters():
        assert torch.allclose(engine.engine_model.loaded[name], weight, atol=1e-6), name
    assert engine.resets == 1
    assert torch.allclose(policy(input_ids=probe).logits, before, atol=1e-5)  # adapters unmerged again
    rollouts.sync_weights(1)
    assert engine.resets == 1  # the same step: nothing pushed twice
    rollouts.close()


def test_each_row_is_a_request_with_its_own_seed(fake_vllm, peaky_spec):
    from prefdistill.generation.vllm_rollouts import VLLMRollouts

    policy = load_model(peaky_spec, trainable=True)
    rollouts = VLLMRollouts(peaky_spec, policy)
    seeds = [sample_seed(5, row, 0) for row in (3, 11)]
    out = rollouts.complete_ids([[1, 2, 3], [1, 4]], seeds, SamplingParams(temperature=0.7, max_new_tokens=3))
    requests, params = FakeLLM.instances[0].calls[0]
    assert [r["prompt_token_ids"] for r in requests] == [[1, 2, 3], [1, 4]]
    assert [p.kwargs["seed"] for p in params] == seeds and params[0].kwargs["temperature"] == 0.7
    assert [c.token_ids for c in out] == [[7, 8, 9], [7, 8, 9]] and out[0].finish_reason == "length"
    rollouts.close()


def test_the_distill_module_samples_through_vllm_and_pushes_after_each_step(fake_vllm):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from train_helpers import CONFIGS

    from prefdistill.data import PreferenceDataModule
    from prefdistill.losses import get_loss
    from prefdistill.models import load_tokenizer
    from prefdistill.modules import build_module
    from prefdistill.modules.on_policy import OnPolicy

    tiny = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
    module = build_module(
        loss=get_loss("opd"), policy=tiny, teacher=dataclasses.replace(tiny, seed=1),
        optimizer=partial(torch.optim.SGD, lr=0.5), on_policy=OnPolicy(fraction=1.0, backend="vllm", max_new_tokens=3),
    )  # fmt: skip
    module.configure_model()
    dm = PreferenceDataModule(
        source="shipped", record_type="sft", max_samples=4, batch_size=4, val_fraction=0.0
    )
    dm.connect(load_tokenizer(tiny))
    dm.setup("fit")
    rollout = module.maybe_rollout(next(iter(dm.loader("train"))))
    assert rollout["rollout"] and (rollout["chosen_labels"] != -100).sum(-1).tolist() == [3, 3, 3, 3]
    (engine,) = FakeLLM.instances
    assert engine.resets == 0  # step 0: the engine was built from these very weights
    loss, _ = module.compute(rollout)
    assert torch.isfinite(loss)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_missing_vllm_fails_with_the_install_hint(peaky_spec):
    from prefdistill.generation.vllm import VLLMNotInstalledError
    from prefdistill.modules.on_policy import OnPolicy, rollout_generator

    with pytest.raises(VLLMNotInstalledError, match=r"pip install 'prefdistill\[vllm\]'"):
        rollout_generator(OnPolicy(backend="vllm"), peaky_spec, load_model(peaky_spec), None)
