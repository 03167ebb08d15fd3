"""A stand-in ``vllm`` module for the backend tests: ``SamplingParams`` records its arguments; each test file
brings the ``LLM`` it needs (``install(monkeypatch, FakeLLM)``)."""

from __future__ import annotations

import sys
import types


class FakeSamplingParams:  # vllm.SamplingParams
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def install(monkeypatch, llm_class) -> types.ModuleType:
    """Make ``import vllm`` give a module with ``llm_class`` as ``LLM``; ``llm_class.instances`` starts empty."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = llm_class, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    llm_class.instances = []
    return module
