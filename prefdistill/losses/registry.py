"""The loss registry: one flat table of pure loss functions, each declaring what it needs.

A loss is a function of one typed input (:mod:`prefdistill.losses.inputs`: the tensors of its
``kind``) and keyword hyper-parameters, registered with its defaults::

    @register("ipo", kind="pairwise", needs=REFERENCE_PAIR, hparams={"beta": 0.1, "length_norm": "mean"},
              source="Azar et al. 2023 (arXiv 2310.12036); TRL loss_type='ipo'", aliases=("ipo",))
    def ipo(x: PairwiseInputs, *, beta, length_norm) -> LossOutput: ...

``hparams`` is the single place a loss's hyper-parameters and their defaults are written; the same
function may be registered several times under other names with other tables (a family, e.g. the
token-level divergences), and ``aliases`` add other names (TRL's ``loss_type`` values).

``get_loss(name, **hparams)`` builds a :class:`Loss`: a callable bound to its hyper-parameters,
with ``needs`` (the inputs the training module must provide: ``"reference"`` log-probs, the
``"rejected"`` response, a ``"teacher"`` ...) and ``kind`` (``pairwise``, ``unpaired``, ``listwise``,
``token``, ``reward``). Training modules branch on ``needs`` and ``kind``, never on a loss name, so
a new method is one registered function, one test and one ``configs/method/*.yaml``.

Call it with keyword tensors (the public form, e.g. ``loss(chosen_logps=..., rejected_logps=...,
chosen_lengths=..., rejected_lengths=..., ref_chosen_logps=None, ref_rejected_logps=None)`` or the
listwise ``loss(logps=..., lengths=..., teacher_scores=...)``) or with one inputs object.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from prefdistill.losses.inputs import INPUTS_BY_KIND

# Vocabulary of needs. Modules look only at these.
KNOWN_NEEDS = frozenset(
    {
        "reference",  # (B,) reference log-probs of the responses
        "rejected",  # the pair's rejected response (chosen-only losses skip it)
        "teacher",  # teacher token logits / log-probs (token-level distillation)
        "scores",  # per-response scores (listwise / margin losses)
        "token_logps",  # per-token log-probs rather than (B,) sums
        "reference_token_logps",  # per-token reference log-probs (pairwise, e.g. LD-DPO)
        "token_sq_probs",  # per-token log Σ_v π_θ(v)² of the policy (pairwise, WPO's weights)
        "policy_samples",  # responses sampled from the policy during training (on-policy)
        "speculative_samples",  # rollouts whose student tokens outside the teacher's top-k the teacher replaced (SKD)
        "kl_pairs",  # unpaired: log-probs of mismatched (prompt, completion) pairs (KTO's KL estimate)
        "cross_tokenizer",  # a teacher with its own tokenizer, aligned to the student's tokens (data path)
    }
)
KINDS = tuple(INPUTS_BY_KIND)


class LossOutput(NamedTuple):
    """What every loss returns.

    loss:    (B,) per-example loss, differentiable; the module averages it.
    metrics: name -> (B,) detached tensor, e.g. ``reward/chosen``; the module averages and logs
             them under ``split/<name>``.
    state:   the loss's updated running state (see ``register(state=...)``), or None.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class LossSpec:
    """One registry entry. ``hparams`` are the defaults; ``needs`` a set or a function of the hparams."""

    name: str
    fn: Callable[..., LossOutput]
    kind: str
    needs: frozenset | Callable[[dict], Iterable[str]]
    hparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    aliases: tuple[str, ...] = ()
    validate: Callable[[dict], None] | None = None
    state: dict[str, float] | Callable[[dict], dict[str, float]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)  # old hparam name -> current name
    summary: str = ""  # one line: what the loss computes (default: the docstring's first line)
    open_hparams: bool = False  # takes hyper-parameters beyond ``hparams`` (checked by ``validate``)
    teacher_formats: frozenset = frozenset({"topk"})  # stored teacher formats it reads (token losses)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.hparams)


REGISTRY: dict[str, LossSpec] = {}
ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    kind: str,
    needs: Iterable[str] | Callable[[dict], Iterable[str]] = (),
    hparams: Mapping[str, Any] | None = None,
    source: str = "",
    aliases: Iterable[str] = (),
    validate: Callable[[dict], None] | None = None,
    state: Mapping[str, float] | Callable[[dict], Mapping[str, float]] | None = None,
    renamed: Mapping[str, str] | None = None,
    summary: str | None = None,
    open_hparams: bool = False,
    teacher_formats: Iterable[str] = ("topk",),
):
    """Register ``fn(x, **hparams)`` under ``name`` (returns ``fn`` unchanged, so it stacks).

    ``needs`` names inputs from :data:`KNOWN_NEEDS`, or is a function of the hyper-parameters
    returning them (DPO with ``reference_free=True`` needs no reference). ``validate(hparams)``
    raises ``ValueError`` for out-of-range values when the loss is built, not at the first step.
    ``state`` declares a running state (name -> initial value) that the training module keeps,
    checkpoints and passes back as ``state=`` on every call (e.g. BCO's reward mean); the loss
    returns the updated state in ``LossOutput.state``. ``renamed`` maps old hyper-parameter names
    to current ones (accepted with a warning). ``summary`` (default: the first line of ``fn``'s
    docstring) is the one-line description the loss table (docs/losses.md) shows. A loss built from others
    (the weighted mixture) declares ``open_hparams=True`` (it takes its parts' hyper-parameters,
    which its ``validate`` checks) and a ``state`` that is a function of its hyper-parameters.
    ``teacher_formats`` names the stored teacher formats a token loss reads correctly
    (``prefdistill/modules/teacher_formats.py``: ``topk``, ``topk_tail``, ``sampled``); a training module
    refuses to give it another.
    """
    if kind not in INPUTS_BY_KIND:
        raise ValueError(f"loss {name!r}: unknown kind {kind!r}; known kinds: {list(INPUTS_BY_KIND)}")
    if not callable(needs):
        unknown = set(needs) - KNOWN_NEEDS
        if unknown:
            raise ValueError(f"loss {name!r} declares unknown needs {sorted(unknown)}")
    hparams = dict(hparams or {})

    def deco(fn):
        extra = {"state": {}} if state else {}
        try:
            inspect.signature(fn).bind(None, **hparams, **extra)
        except TypeError as err:
            what = getattr(fn, "__name__", repr(fn))
            raise TypeError(f"loss {name!r}: {what} does not take hparams {sorted(hparams)}: {err}") from err
        for key in (name, *aliases):
            if key in REGISTRY or key in ALIASES:
                raise ValueError(f"loss name {key!r} is registered twice")
        frozen = needs if callable(needs) else frozenset(needs)
        doc = (inspect.getdoc(fn) or "").splitlines() if summary is None else [summary]
        REGISTRY[name] = LossSpec(
            name, fn, kind, frozen, hparams, source, tuple(aliases), validate,
            state if callable(state) else dict(state or {}), dict(renamed or {}), doc[0] if doc else "", open_hparams,
            frozenset(teacher_formats),
        )  # fmt: skip
        for alias in aliases:
            ALIASES[alias] = name
        return fn

    return deco


class Loss:
    """A registered loss bound to its hyper-parameters; see the module docstring for the call forms."""

    def __init__(self, spec: LossSpec, hparams: dict[str, Any]):
        self.spec = spec
        self.name = spec.name
        self.fn = spec.fn
        self.kind = spec.kind
        self.teacher_formats = spec.teacher_formats
        self.hparams = {**spec.hparams, **{k: _plain(v) for k, v in hparams.items()}}
        if spec.validate is not None:
            spec.validate(self.hparams)
        needs = spec.needs(self.hparams) if callable(spec.needs) else spec.needs
        self.needs = frozenset(needs)
        unknown = self.needs - KNOWN_NEEDS
        if unknown:
            raise ValueError(f"loss {self.name!r} declares unknown needs {sorted(unknown)}")
        state = spec.state(self.hparams) if callable(spec.state) else spec.state
        self.state_defaults = dict(state)

    @property
    def inputs(self) -> type:
        """The dataclass of tensors this loss reads (``prefdistill.losses.inputs``)."""
        return INPUTS_BY_KIND[self.kind]

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The running state the module keeps for this loss (empty for stateless losses)."""
        return {k: torch.tensor(float(v)) for k, v in self.state_defaults.items()}

    def __call__(self, x=None, /, *, state: dict[str, torch.Tensor] | None = None, **tensors) -> LossOutput:
        if x is None:
            try:
                x = self.inputs(**tensors)
            except TypeError as err:
                fields = [f.name for f in dataclasses.fields(self.inputs)]
                raise TypeError(f"loss {self.name!r} ({self.kind}) takes tensors {fields}: {err}") from None
        elif tensors:
            raise TypeError(f"loss {self.name!r}: pass either an inputs object or keyword tensors, not both")
        x = dataclasses.replace(x, loss_name=self.name)
        extra = {}
        if self.spec.state:  # a stateful loss (or one whose parts may be) always takes its state
            extra["state"] = state if state is not None else self.initial_state()
        out = self.fn(x, **self.hparams, **extra)
        return out if isinstance(out, LossOutput) else LossOutput(*out)

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
    """Names of every registered loss (aliases not included), sorted."""
    return sorted(REGISTRY)


def resolve_name(name: str) -> str:
    """The registered name of ``name`` or of the alias ``name``; a clear KeyError otherwise."""
    if name in REGISTRY:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise KeyError(
        f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}; aliases: "
        f"{', '.join(sorted(ALIASES))}. Every module under prefdistill/losses/ registers its losses on "
        "import: a new loss needs @register(...) in such a module."
    )


def get_loss(name: str, **hparams) -> Loss:
    """Build the loss ``name`` (or an alias) with ``hparams``; unknown names or hyper-parameters fail loudly."""
    spec = REGISTRY[resolve_name(name)]
    for old, new in spec.renamed.items():
        if old in hparams:
            if new in hparams:
                raise TypeError(f"loss {spec.name!r}: {old!r} is the old name of {new!r}; set only {new!r}")
            warnings.warn(f"loss {spec.name!r}: hyper-parameter {old!r} is now {new!r}", FutureWarning, 2)
            hparams[new] = hparams.pop(old)
    unknown = set() if spec.open_hparams else set(hparams) - set(spec.hparams)
    if unknown:
        raise TypeError(
            f"loss {spec.name!r} got unknown hyper-parameters {sorted(unknown)}; it accepts {sorted(spec.hparams)}"
        )
    return Loss(spec, dict(hparams))
