"""LightningModules. Each trains one family of losses (``Loss.kind``) and branches on ``Loss.needs``."""

from prefdistill.modules.base import PolicyModule
from prefdistill.modules.distill import DistillModule
from prefdistill.modules.listwise import ListwiseModule
from prefdistill.modules.preference import PreferenceModule

MODULES_BY_KIND = {"pairwise": PreferenceModule, "token": DistillModule, "listwise": ListwiseModule}

__all__ = ["MODULES_BY_KIND", "DistillModule", "ListwiseModule", "PolicyModule", "PreferenceModule"]


def build_module(*, loss, **kwargs) -> PolicyModule:
    """The module that trains ``loss``, chosen by its kind (pairwise, token, listwise)."""
    if loss.kind not in MODULES_BY_KIND:
        raise ValueError(f"no training module for {loss.kind!r} losses; known kinds: {sorted(MODULES_BY_KIND)}")
    return MODULES_BY_KIND[loss.kind](loss=loss, **kwargs)


__all__ += ["build_module"]
