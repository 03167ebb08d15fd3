"""The evaluation cache: generations and deterministic scores, keyed by what produced them.

Every job of a distillation table evaluates against the same teacher and the same references with the
same reward model; without a cache each job regenerates the teacher's outputs and rescores them and the
references. With ``EvalSuite.cache_dir`` set, :func:`cached` stores such lists as
``<cache_dir>/eval/<kind>-<key>.json`` (written atomically) and the next job reads them back:

* ``generations``: keyed by the model's ``ModelSpec.identity()`` (for a local folder this fingerprints
  its weight files, so a folder rewritten in place is a new model), backend, template, batch size (it
  changes padding, hence greedy outputs up to rounding), the sampling parameters and the prompts;
* ``scores``: keyed by the scorer's ``cache_identity`` (a reward model folder's weights and how it
  renders its inputs; scorers without one, e.g. an LLM judge, are never cached), the prompts, the
  responses and the references.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from prefdistill.utils.atomic import atomic_write_json
from prefdistill.utils.cache import hash_inputs

log = logging.getLogger("prefdistill.evaluate")


def cached(cache_dir: str | Path, kind: str, inputs: dict, compute: Callable[[], list], label: str) -> list:
    """``compute()`` (a list with one value per input row), or the list stored for the same ``inputs``."""
    path = Path(cache_dir).expanduser() / "eval" / f"{kind}-{hash_inputs(inputs, length=16)}.json"
    if path.is_file():
        values = json.loads(path.read_text())["values"]
        log.info("eval cache: %s of %s reused (%d rows) %s", kind, label, len(values), path)
        return values
    values = list(compute())
    atomic_write_json(path, {"kind": kind, "label": label, "values": values})
    return values
