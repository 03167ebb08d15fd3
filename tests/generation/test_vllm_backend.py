"""vLLM backend: lazy import with a clear install hint; the factory rejects unknown backends."""

from __future__ import annotations

import importlib.util

import pytest

from prefdistill.generation import build_generator


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_missing_vllm_raises_import_error_with_install_hint(peaky_spec):
    from prefdistill.generation.vllm import VLLMNotInstalledError

    with pytest.raises(ImportError) as err:
        build_generator(peaky_spec, backend="vllm", tensor_parallel_size=1)
    assert isinstance(err.value, VLLMNotInstalledError)
    assert "pip install 'prefdistill[vllm]'" in str(err.value)


def test_importing_the_vllm_module_does_not_import_vllm():
    import sys

    import prefdistill.generation.vllm  # noqa: F401

    assert "vllm" not in sys.modules or importlib.util.find_spec("vllm") is not None


def test_unknown_backend(peaky_spec):
    with pytest.raises(ValueError, match="unknown generation backend"):
        build_generator(peaky_spec, backend="tgi")
