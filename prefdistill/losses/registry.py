"""The loss registry: one flat dict of pure loss functions, each declaring what it needs.

A loss is registered with ``@register(name, needs=..., kind=...)`` and built with
``get_loss(name, **hparams)``. The result is a :class:`Loss`: a callable holding the
function and its hyper-parameters, plus ``needs`` (the inputs the training module
must provide: ``"reference"`` log-probs, ``"rejected"`` responses, ``"teacher"`` ...)
and ``kind`` (the call signature family: ``"pairwise"``, ``"listwise"``, ``"token"``).

Training modules branch on ``needs`` and ``kind``, never on the loss name, so a new
method is one registered function, one test and one ``configs/method/*.yaml``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

# Vocabulary of needs. Modules look only at these.
KNOWN_NEEDS = frozenset(
    {
        "reference",  # (B,) reference log-probs of chosen/rejected
        "rejected",  # the pair's rejected response (chosen-only losses skip it)
        "teacher",  # teacher token logits / log-probs (token-level distillation)
        "scores",  # per-response scores (listwise / margin losses)
        "token_logps",  # (B, T) per-token log-probs rather than (B,) sums
        "policy_samples",  # responses sampled from the policy during training (on-policy)
    }
)


class LossOutput(NamedTuple):
    """What every loss returns.

    loss:    (B,) per-example loss, differentiable; the module averages it.
    metrics: name -> (B,) detached tensor, e.g. ``reward/chosen``; the module
             averages and logs them under ``split/<name>``.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., LossOutput]
    needs: Any  # frozenset or callable(hparams) -> iterable
    kind: str
    defaults: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, needs: Iterable[str] | Callable = (), kind: str = "pairwise"):
    """Register ``fn`` under ``name``.

    ``needs`` is an iterable of names from :data:`KNOWN_NEEDS`, or a function of the
    hyper-parameters returning one (e.g. DPO with ``reference_free=True`` needs no
    reference). Keyword-only parameters of ``fn`` that have defaults are its
    hyper-parameters; everything else is a tensor input, so optional tensor inputs
    (``ref_chosen_logps=None``) must be positional-or-keyword, before the ``*``.
    A ``needs`` callable may also validate the hyper-parameters: it runs in ``get_loss``.
    """

    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"loss {name!r} is registered twice")
        if not callable(needs):
            unknown = set(needs) - KNOWN_NEEDS
            if unknown:
                raise ValueError(f"loss {name!r} declares unknown needs {sorted(unknown)}")
        sig = inspect.signature(fn)
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }
        frozen = needs if callable(needs) else frozenset(needs)
        REGISTRY[name] = _Entry(fn=fn, needs=frozen, kind=kind, defaults=defaults)
        return fn

    return deco


class Loss:
    """A registered loss function bound to its hyper-parameters.

    Call it with tensors only: ``loss(chosen_logps=..., rejected_logps=..., ...)``.
    """

    def __init__(self, name: str, entry: _Entry, hparams: dict[str, Any]):
        self.name = name
        self.fn = entry.fn
        self.kind = entry.kind
        self.hparams = {**entry.defaults, **{k: _plain(v) for k, v in hparams.items()}}
        needs = entry.needs(self.hparams) if callable(entry.needs) else entry.needs
        self.needs = frozenset(needs)
        unknown = self.needs - KNOWN_NEEDS
        if unknown:
            raise ValueError(f"loss {name!r} declares unknown needs {sorted(unknown)}")

    def __call__(self, **tensors) -> LossOutput:
        out = self.fn(**tensors, **self.hparams)
        if not isinstance(out, LossOutput):
            out = LossOutput(*out)
        return out

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"Loss({self.name}: {hp}; needs={sorted(self.needs)})"


def _plain(value: Any) -> Any:
    """Config containers (e.g. Hydra's ListConfig) -> plain lists/dicts, so losses pickle safely."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def list_losses() -> list[str]:
    """Names of every registered loss, sorted."""
    return sorted(REGISTRY)


def get_loss(name: str, **hparams) -> Loss:
    """Build the loss ``name`` with ``hparams``; unknown names or hyper-parameters fail loudly."""
    if name not in REGISTRY:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}")
    entry = REGISTRY[name]
    unknown = set(hparams) - set(entry.defaults)
    if unknown:
        raise TypeError(
            f"loss {name!r} got unknown hyper-parameters {sorted(unknown)}; "
            f"it accepts {sorted(entry.defaults)}"
        )
    return Loss(name, entry, dict(hparams))
