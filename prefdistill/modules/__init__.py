"""LightningModules. Each trains one family of losses (``Loss.kind``) and branches on ``Loss.needs``."""

import inspect

from prefdistill.modules.base import PolicyModule
from prefdistill.modules.distill import DistillModule
from prefdistill.modules.listwise import ListwiseModule
from prefdistill.modules.preference import PreferenceModule

MODULES_BY_KIND = {"pairwise": PreferenceModule, "token": DistillModule, "listwise": ListwiseModule}

__all__ = ["MODULES_BY_KIND", "DistillModule", "ListwiseModule", "PolicyModule", "PreferenceModule"]


def _accepted(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kw", "kwargs"}
    return names


def build_module(*, loss, **kwargs) -> PolicyModule:
    """The module that trains ``loss``, chosen by its kind (pairwise, token, listwise).

    One ``configs/module`` node serves every kind: each module receives the keys it accepts
    (e.g. ``forward`` and ``reference_cache`` only concern pairwise training); a key that no
    module accepts is a typo and fails.
    """
    if loss.kind not in MODULES_BY_KIND:
        raise ValueError(
            f"no training module for {loss.kind!r} losses; known kinds: {sorted(MODULES_BY_KIND)}"
        )
    known = set().union(*(_accepted(c) for c in MODULES_BY_KIND.values()))
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"unknown module arguments {sorted(unknown)}; modules accept {sorted(known)}")
    cls = MODULES_BY_KIND[loss.kind]
    accepted = _accepted(cls)
    return cls(loss=loss, **{k: v for k, v in kwargs.items() if k in accepted})


__all__ += ["build_module"]
