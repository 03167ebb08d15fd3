"""vLLM backend against a small fake ``vllm`` module (``LLM`` + ``SamplingParams`` recording what they are
given): engine arguments, the sampling-parameter mapping and per-prompt seeds, prompt ids identical to
training's, finish reasons, and the response log-prob span of teacher scoring. Plus the lazy import with
its install hint and the factory's unknown-backend error."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field

import pytest
from fake_vllm import install

from prefdistill.data.templates import PromptEncoder
from prefdistill.generation import SamplingParams, build_generator
from prefdistill.generation.base import sample_seed


@dataclass
class FakeCompletion:  # vllm.CompletionOutput
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    stop_reason: int | str | None = None  # the stop string, a stop token id, or None (eos)


@dataclass
class FakeLogprob:  # vllm.Logprob
    logprob: float


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion] = field(default_factory=list)
    prompt_logprobs: list | None = None


def position_logprob(t: int) -> float:
    """The fake model's log-prob of whatever token sits at position t: -(t + 1) / 100."""
    return -(t + 1) / 100


class FakeLLM:
    """Records its arguments; ``generate`` replays ``completions`` (one list per request) or, for a
    ``prompt_logprobs`` request, scores every position with :func:`position_logprob`."""

    instances: list[FakeLLM] = []
    completions: list[list[FakeCompletion]] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        FakeLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append((requests, params))
        if not isinstance(params, list) and params.kwargs.get("prompt_logprobs") is not None:
            return [
                FakeRequestOutput(r["prompt_token_ids"], [], [None] + [
                    {tok: FakeLogprob(position_logprob(t))} for t, tok in enumerate(r["prompt_token_ids"]) if t > 0
                ])
                for r in requests
            ]  # fmt: skip
        return [FakeRequestOutput(r["prompt_token_ids"], c) for r, c in zip(requests, FakeLLM.completions)]


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeLLM.completions = []
    return install(monkeypatch, FakeLLM)


@pytest.fixture
def gen(fake_vllm, peaky_spec):
    return build_generator(peaky_spec, backend="vllm", tensor_parallel_size=2, gpu_memory_utilization=0.5,
                           progress=False, enforce_eager=True)  # fmt: skip


def test_engine_gets_the_spec_and_backend_arguments(gen, peaky_spec):
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {
        "model": peaky_spec.name_or_path, "tokenizer": peaky_spec.tokenizer_source, "revision": None,
        "dtype": "float32", "trust_remote_code": False, "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5, "max_model_len": None, "seed": peaky_spec.seed, "enforce_eager": True,
    }  # fmt: skip


def test_sampling_parameters_map_and_each_prompt_has_its_seed(gen):
    prompts = ["What is two plus two?", [{"role": "user", "content": "Name a colour."}]]
    FakeLLM.completions = [[FakeCompletion("a", [5], "stop")], [FakeCompletion("b", [6], "stop")]]
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=5, n=1, seed=3, stop=["\n\n"])
    gen.generate(prompts, params, keys=["p0", "p1"])
    requests, per_request = FakeLLM.instances[0].calls[0]
    encoder = PromptEncoder(gen.tokenizer, "auto")
    assert [r["prompt_token_ids"] for r in requests] == [encoder.encode(p, [])[0] for p in prompts]
    assert [p.kwargs["seed"] for p in per_request] == [sample_seed(3, "p0", 0), sample_seed(3, "p1", 0)]
    assert per_request[0].kwargs["seed"] != per_request[1].kwargs["seed"]
    assert {k: v for k, v in per_request[0].kwargs.items() if k != "seed"} == {
        "n": 1, "temperature": 0.7, "top_p": 0.9, "top_k": -1,  # 0 (off) is vLLM's -1
        "max_tokens": 5, "stop": ["\n\n"], "stop_token_ids": sorted(encoder.end_ids), "skip_special_tokens": True,
    }  # fmt: skip
    greedy = SamplingParams(temperature=0.0, top_k=7, max_new_tokens=2, seed=None)
    gen.generate(prompts[:1], greedy)
    (kw,) = [p.kwargs for p in FakeLLM.instances[0].calls[1][1]]
    assert (kw["temperature"], kw["top_k"], kw["seed"], kw["stop"]) == (0.0, 7, None, None)


def test_finish_reasons_and_token_counts(gen):
    FakeLLM.completions = [[
        FakeCompletion("cut at the limit", [4, 5, 6], "length"),
        FakeCompletion("ended by a stop string", [4, 5], "stop", stop_reason="\n\n"),
        FakeCompletion("ended by eos", [4], "stop", stop_reason=None),
        FakeCompletion("kept, then\n\nmore", [4, 5, 6, 7], "stop", stop_reason=2),  # stop token id, text cut here
    ]]  # fmt: skip
    (row,) = gen.generate_completions(["Hi?"], SamplingParams(n=4, stop=["\n\n"]))
    assert [c.finish_reason for c in row] == ["length", "stop", "eos", "stop"]
    assert [c.num_tokens for c in row] == [3, 2, 1, 4] and row[0].token_ids == [4, 5, 6]
    assert [c.text for c in row] == [
        "cut at the limit",
        "ended by a stop string",
        "ended by eos",
        "kept, then",
    ]


def test_response_logps_sum_exactly_the_response_span(gen):
    """Scored as prompt + response in one request with ``prompt_logprobs``: the sum runs over the
    response positions [P, P + R) only. With log-prob -(t + 1)/100 at position t it is
    -sum_{t=P}^{P+R-1} (t + 1)/100 = -R (2P + R + 1) / 200."""
    prompts, responses = ["What is two plus two?", "Hi?"], ["Four.", "Hello there, friend."]
    scores = gen.response_logps(prompts, responses)
    (_, params) = FakeLLM.instances[0].calls[0]
    assert params.kwargs == {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0}
    encoder = PromptEncoder(gen.tokenizer, "auto")
    for (total, count), prompt, response in zip(scores, prompts, responses):
        prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
        p, r = len(prompt_ids), len(response_ids)
        assert count == r > 0
        assert total == pytest.approx(-r * (2 * p + r + 1) / 200, abs=1e-9)
    assert scores[0][0] != scores[1][0]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_missing_vllm_raises_import_error_with_install_hint(peaky_spec):
    from prefdistill.generation.vllm import VLLMNotInstalledError

    with pytest.raises(ImportError) as err:
        build_generator(peaky_spec, backend="vllm", tensor_parallel_size=1)
    assert isinstance(err.value, VLLMNotInstalledError)
    assert "pip install 'prefdistill[vllm]'" in str(err.value)


def test_importing_the_vllm_backend_does_not_import_vllm(monkeypatch):
    """A fresh import of the backend module leaves ``vllm`` unimported (it loads in the constructor)."""
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.delitem(sys.modules, "prefdistill.generation.vllm", raising=False)
    importlib.import_module("prefdistill.generation.vllm")
    assert "vllm" not in sys.modules


def test_unknown_backend(peaky_spec):
    with pytest.raises(ValueError, match="unknown generation backend"):
        build_generator(peaky_spec, backend="tgi")
