"""Models: ``ModelSpec`` (what to load) -> tokenizer / HF model (+LoRA), and memory-lean log-probs.

``load_model`` and ``load_tokenizer`` import transformers lazily; ``spec.py`` is cheap to import.
"""

from prefdistill.models.load import load_model, load_tokenizer, merge_and_save
from prefdistill.models.logprobs import response_logps, response_token_logps
from prefdistill.models.spec import ModelSpec, record_run_spec, run_spec

__all__ = [
    "ModelSpec",
    "load_model",
    "load_tokenizer",
    "merge_and_save",
    "record_run_spec",
    "response_logps",
    "response_token_logps",
    "run_spec",
]
