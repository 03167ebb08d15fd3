"""The same generator interface through vLLM's offline API (``vllm.LLM``); vLLM is imported lazily.

    gen = build_generator(spec, backend="vllm", tensor_parallel_size=2)
    gen.generate(prompts, SamplingParams(temperature=1.0, top_p=0.95, n=5))
    gen.response_logps(prompts, responses)   # teacher scoring through prompt_logprobs

Prompts are encoded by :class:`prefdistill.data.PromptEncoder` with the HF tokenizer and handed to vLLM as
token ids, so both backends see identical prompts. Each prompt is one request seeded by
``sample_seed(seed, key, 0)``; its ``n`` samples come from that request's stream (vLLM's own RNG, so
samples differ from the HF backend's for the same seed). Install with ``pip install 'prefdistill[vllm]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefdistill.data.records import Prompt
from prefdistill.data.templates import PromptEncoder
from prefdistill.generation.base import Completion, Generator, SamplingParams, cut_at_stop, sample_seed
from prefdistill.models import load_tokenizer

INSTALL_HINT = "pip install 'prefdistill[vllm]'"


class VLLMNotInstalledError(ImportError):
    """vLLM is an optional extra; the message says how to install it."""


def import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise VLLMNotInstalledError(
            f"generation backend 'vllm' needs vLLM, which is not installed ({err}). Install it with "
            f"`{INSTALL_HINT}` (CUDA machines), or use backend='hf'."
        ) from err
    return vllm


class VLLMGenerator(Generator):
    """``build_generator(spec, backend="vllm")``. ``batch_size`` is ignored: vLLM schedules itself."""

    def __init__(
        self,
        spec,
        batch_size: int = 16,
        *,
        template: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        progress: bool = True,
        weights_dir: str | None = None,
        **llm_kwargs: Any,
    ):
        """``weights_dir``: a saved model folder to load instead of the spec's weights (a training policy as it
        stands, e.g. pruned or with merged adapters; ``vllm_rollouts.py``)."""
        vllm = import_vllm()
        self.spec, self.progress = spec, progress
        self.tokenizer = load_tokenizer(spec)
        self.encoder = PromptEncoder(self.tokenizer, template)
        local = weights_dir or spec.local_dir
        self.model = vllm.LLM(
            model=str(local) if local else spec.name_or_path,
            tokenizer=spec.tokenizer_source,
            revision=None if local else spec.revision,
            dtype=spec.dtype,
            trust_remote_code=spec.trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=spec.seed,
            **llm_kwargs,
        )
        self._vllm = vllm

    def encode(self, prompt: Prompt) -> list[int]:
        return self.encoder.encode(prompt, [])[0]

    def _params(self, params: SamplingParams, seed: int | None):
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop=list(params.stop) or None,
            stop_token_ids=sorted(self.encoder.end_ids),
            skip_special_tokens=True,
        )

    def generate_completions(
        self, prompts: Sequence[Prompt], params: SamplingParams, keys: Sequence[Any] | None = None
    ) -> list[list[Completion]]:
        keys = self.prompt_keys(prompts, keys)
        requests = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        per_request = [self._params(params, sample_seed(params.seed, k, 0)) for k in keys]
        outputs = self.model.generate(requests, per_request, use_tqdm=self.progress)
        return [[_completion(o, params) for o in out.outputs] for out in outputs]

    def response_logps(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[float, int]]:
        """``(sum of response-token log-probs, response token count)`` per (prompt, response),
        scored by vLLM's ``prompt_logprobs`` on the encoded ``prompt + response``."""
        requests, spans = [], []
        for prompt, response in zip(prompts, responses):
            prompt_ids, (response_ids,) = self.encoder.encode(prompt, [response])
            requests.append({"prompt_token_ids": prompt_ids + response_ids})
            spans.append((len(prompt_ids), len(prompt_ids) + len(response_ids)))
        scoring = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.model.generate(requests, scoring, use_tqdm=self.progress)
        result = []
        for out, (start, end) in zip(outputs, spans):
            ids = out.prompt_token_ids
            total = sum(_logprob(out.prompt_logprobs[t], ids[t]) for t in range(start, end))
            result.append((total, end - start))
        return result


def _logprob(entry, token_id: int) -> float:
    value = entry[token_id]
    return float(getattr(value, "logprob", value))


def _completion(output, params: SamplingParams) -> Completion:
    text, stopped = cut_at_stop(output.text, params.stop)  # vLLM already cut; keep the contract
    if output.finish_reason == "length":
        reason = "length"
    else:
        reason = "stop" if (stopped or isinstance(output.stop_reason, str)) else "eos"
    return Completion(text, len(output.token_ids), reason, list(output.token_ids))
