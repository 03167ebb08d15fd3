"""Conformance: every registered loss against a reference written from its source (value and gradient).

How it is organised (so another loss family is a file of its own, not an edit here):

* ``tests/losses/references/<family>.py`` defines ``REFERENCES = {registered name: Reference(fn, hparams,
  state, cases)}`` (``conformance.Reference``): ``fn`` computes the loss in float64 from the formula as the
  paper or reference repository writes it (no import of the loss code or of TRL), ``hparams`` lists the
  settings to check. A file may also define ``CASE_BUILDERS = {kind: fn(case) -> conformance.Case}`` for a
  loss kind without inputs here yet (``pairwise``, ``listwise`` and ``token`` are in ``conformance.py``).
  This test collects every such file.
* Every registered loss must have exactly one reference: a new loss without one fails
  ``test_every_registered_loss_has_a_reference`` (naming the file to add it to).
* For each loss, setting and input case (random, equal responses, length 1, log-probs near -1e4, NaN at
  masked positions) the loss (float32) and the reference (float64, same input values) must agree on the
  per-example values and on the gradients of the differentiated inputs, to ``conformance.RTOL`` = 1e-5
  relative (plus 1e-6 of the largest reference value, for entries that cancel to ~0); a stateful loss also
  on the state it returns. NaN at masked positions must not reach a value or a gradient.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from conformance import CASE_BUILDERS, assert_conforms

from prefdistill.losses import INPUTS_BY_KIND, REGISTRY, get_loss

REFERENCE_DIR = Path(__file__).parent / "references"


def _collect():
    references, builders = {}, dict(CASE_BUILDERS)
    for path in sorted(REFERENCE_DIR.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"loss_references_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, ref in getattr(module, "REFERENCES", {}).items():
            assert name not in references, f"{name!r} has references in two files (one is {path.name})"
            references[name] = ref
        builders |= getattr(module, "CASE_BUILDERS", {})
    return references, builders


REFERENCES, BUILDERS = _collect()
PARAMS = [
    pytest.param(name, i, case, id=f"{name}-{i}-{case}")
    for name in sorted(set(REFERENCES) & set(REGISTRY))
    for i in range(len(REFERENCES[name].hparams))
    for case in REFERENCES[name].cases
]


def test_every_registered_loss_has_a_reference():
    missing = sorted(set(REGISTRY) - set(REFERENCES))
    assert not missing, (
        f"losses without a conformance reference: {missing}; add REFERENCES entries (formula from the source, "
        "float64) in a file under tests/losses/references/ (see the docstring of test_conformance.py)"
    )
    unknown = sorted(set(REFERENCES) - set(REGISTRY))
    assert not unknown, f"references for losses that are not registered: {unknown}"


def test_every_setting_names_real_hyper_parameters():
    for name, ref in REFERENCES.items():
        if name in REGISTRY and not REGISTRY[name].open_hparams:
            for setting in ref.hparams:
                assert set(setting) <= set(REGISTRY[name].hparams), (name, setting)


def _inputs(name: str, case: str):
    """(ours float32 leaves, reference float64 leaves, differentiated fields) for the loss's input type."""
    kind = REGISTRY[name].kind
    built = BUILDERS[kind](case)
    fields = {f.name for f in dataclasses.fields(INPUTS_BY_KIND[kind])}
    tensors = {k: v for k, v in built.tensors.items() if k in fields}
    grad = [k for k in built.grad if k in tensors and tensors[k].is_floating_point()]
    ours = {k: v.clone().requires_grad_(k in grad) for k, v in tensors.items()}
    ref = {
        k: (v.double() if v.is_floating_point() else v.clone()).requires_grad_(k in grad) for k, v in tensors.items()
    }
    return ours, ref, grad, {k: v for k, v in built.extra.items() if k in fields}


@pytest.mark.parametrize(("name", "setting", "case"), PARAMS)
def test_value_and_gradient_match_the_reference(name, setting, case):
    reference = REFERENCES[name]
    overrides = reference.hparams[setting]
    loss = get_loss(name, **overrides)
    ours, ref, grad, extra = _inputs(name, case)
    hp = dict(loss.hparams)
    if reference.state is not None:
        state = {k: torch.tensor(v) for k, v in reference.state.items()}
        out = loss(**ours, **extra, state=state)
        want, want_state = reference.fn(ref, **hp, state=dict(reference.state))
        for key, value in want_state.items():
            assert_conforms(out.state[key].reshape(()), torch.tensor(float(value)), f"{name} state {key}")
    else:
        out = loss(**ours, **extra)
        want = reference.fn(ref, **hp)
    what = f"{name} {overrides} [{case}]"
    assert_conforms(out.loss, want, f"{what} value")
    for value in out.metrics.values():
        assert torch.isfinite(value).all(), f"{what}: a metric is not finite"
    want.sum().backward()
    out.loss.sum().backward()
    for key in grad:
        mine = ours[key].grad if ours[key].grad is not None else torch.zeros_like(ours[key])
        theirs = ref[key].grad if ref[key].grad is not None else torch.zeros_like(ref[key])
        assert_conforms(mine, theirs, f"{what} d/d{key}")
