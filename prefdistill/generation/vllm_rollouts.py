"""On-policy rollouts through vLLM during training (``on_policy.backend=vllm``); vLLM is imported lazily.

The engine runs beside the trained policy on the same device (TRL's "colocate" mode). It starts from the
policy as it stands when the first rollout is asked for (saved once to a temporary folder, adapters merged,
so a pruned or LoRA policy loads as the plain model it is), and before every rollout after an optimizer step
the policy's current weights are pushed into it in place, the way TRL's ``VLLMGeneration.sync_weights`` does
(``llm_engine.model_executor.driver_worker.model_runner.model.load_weights``; LoRA adapters merged for the
push and unmerged after, their own parameters skipped), then the prefix cache is reset.

Prompts go in as the token ids training uses; each row is one request seeded by its own per-row seed (the
rollout's seed and the dataset row, ``on_policy.py``), so rollouts are reproducible under vLLM's own sampler
(its samples differ from the HF backend's for the same seed). ``pip install 'prefdistill[vllm]'`` (CUDA).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence

import torch

from prefdistill.generation.base import Completion, SamplingParams
from prefdistill.generation.vllm import VLLMGenerator, _completion, import_vllm

LORA_PREFIX = "base_model.model."


def named_weights(policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the plain model's names; a PEFT policy is merged while they are read."""
    peft = hasattr(policy, "merge_adapter") and hasattr(policy, "peft_config")
    if not peft:
        for name, param in policy.named_parameters():
            yield name, param.detach()
        return
    policy.merge_adapter()
    try:
        for name, param in policy.named_parameters():
            if "lora_" in name or "original_module" in name:
                continue
            name = (
                name.removeprefix(LORA_PREFIX)
                .replace(".base_layer", "")
                .replace("modules_to_save.default.", "")
            )
            yield name, param.detach()
    finally:
        policy.unmerge_adapter()


class VLLMRollouts(VLLMGenerator):
    """Rollouts of ``policy`` (its spec ``spec``) through a colocated vLLM engine kept in step with it."""

    def __init__(
        self, spec, policy: torch.nn.Module, *, version: int | None = None, gpu_memory_utilization: float = 0.3,
        template: str = "auto",
    ):  # fmt: skip
        """``version``: the optimizer step the policy is at now (the engine starts from these weights)."""
        import_vllm()  # a clear error with the install hint before anything is written
        from prefdistill.models import load_tokenizer
        from prefdistill.models.load import merge_and_save

        self.policy = policy
        self._folder = tempfile.mkdtemp(prefix="prefdistill-vllm-policy-")
        try:
            merge_and_save(policy, load_tokenizer(spec), f"{self._folder}/model", standalone=True)
            super().__init__(
                spec, weights_dir=f"{self._folder}/model", template=template,
                gpu_memory_utilization=gpu_memory_utilization, progress=False,
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)  # at the latest on exit
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.synced_version = version

    def sync_weights(self, version: int) -> None:
        """Push the policy's weights into the engine unless ``version`` (the optimizer step) was pushed already."""
        if version == self.synced_version:
            return
        engine_model = self.model.llm_engine.model_executor.driver_worker.model_runner.model
        with torch.no_grad():
            for name, weight in named_weights(self.policy):
                engine_model.load_weights([(name, weight)])
        self.model.reset_prefix_cache()
        self.synced_version = version

    def complete_ids(
        self, prompt_ids: Sequence[list[int]], seeds: Sequence[int | None], params: SamplingParams
    ) -> list[Completion]:
        """One completion per encoded prompt, in input order, each request seeded by its own seed."""
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        per_request = [self._params(params, seed) for seed in seeds]
        outputs = self.model.generate(requests, per_request, use_tqdm=False)
        return [_completion(out.outputs[0], params) for out in outputs]

    def close(self) -> None:
        """Remove the saved starting weights now (otherwise when the object goes, or at exit)."""
        self._cleanup()
