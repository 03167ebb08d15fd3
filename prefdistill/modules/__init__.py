"""LightningModules. Each trains one kind of loss (``Loss.kind``) and branches on ``Loss.needs``."""

from __future__ import annotations

import inspect

from prefdistill.modules.base import PolicyModule
from prefdistill.modules.distill import DistillModule
from prefdistill.modules.held import HeldModel
from prefdistill.modules.listwise import ListwiseModule
from prefdistill.modules.preference import PreferenceModule
from prefdistill.modules.reward import RewardModule
from prefdistill.modules.unpaired import UnpairedModule

MODULES_BY_KIND: dict[str, type[PolicyModule]] = {
    cls.kind: cls for cls in (PreferenceModule, DistillModule, ListwiseModule, UnpairedModule, RewardModule)
}  # each module class names the loss kind it trains (``PolicyModule.kind``)
UNSET = (None, "auto")  # values of a module setting that mean "not set": the module's own default applies


def accepted_keys(cls: type) -> set[str]:
    """The constructor arguments of ``cls`` and its bases (the config keys it takes)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kw", "kwargs"}
    return names


def build_module(*, loss, **settings) -> PolicyModule:
    """The module that trains ``loss``, chosen by its kind, with exactly the settings that module uses.

    One ``configs/module`` node serves every kind. A setting that only another kind's module uses
    must be left unset (``null`` or ``auto``): a value there would have no effect, so it is an error
    naming the key and the kinds it belongs to; a key no module takes is a typo and fails too.
    ``auto`` stands for the module's default (each module resolves it).
    """
    if loss.kind not in MODULES_BY_KIND:
        raise ValueError(f"no training module for {loss.kind!r} losses; known kinds: {sorted(MODULES_BY_KIND)}")
    cls = MODULES_BY_KIND[loss.kind]
    own = accepted_keys(cls)
    owners = {kind: accepted_keys(c) for kind, c in MODULES_BY_KIND.items()}
    known = set().union(*owners.values())
    unknown = set(settings) - known
    if unknown:
        raise TypeError(f"unknown module arguments {sorted(unknown)}; modules accept {sorted(known)}")
    for key in sorted(set(settings) - own):
        if settings[key] not in UNSET:
            kinds = sorted(kind for kind, keys in owners.items() if key in keys)
            raise ValueError(
                f"module.{key}={settings[key]!r} is a setting of {'/'.join(kinds)} losses, but {loss.name!r} "
                f"is a {loss.kind} loss, whose module ({cls.__name__}) does not use it: remove the setting "
                "(or set it to null)"
            )
    return cls(loss=loss, **{k: v for k, v in settings.items() if k in own})


__all__ = [
    "MODULES_BY_KIND",
    "DistillModule",
    "HeldModel",
    "ListwiseModule",
    "PolicyModule",
    "PreferenceModule",
    "RewardModule",
    "UnpairedModule",
    "accepted_keys",
    "build_module",
]
