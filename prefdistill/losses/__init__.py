"""Loss registry. ``get_loss(name, **hparams)`` -> a pure function with declared needs.

Every module of this package is imported here, so each registers its losses on import: a new loss
module is found without editing any list. A module that fails to import fails loudly here. (``__main__``
is the package's command line, ``python -m prefdistill.losses --write docs/losses.md``: run, not imported.)
"""

import importlib
import pkgutil

from prefdistill.losses.inputs import (
    INPUTS_BY_KIND,
    ListwiseInputs,
    PairwiseInputs,
    RewardInputs,
    TokenInputs,
    UnpairedInputs,
)
from prefdistill.losses.registry import (
    ALIASES,
    KNOWN_NEEDS,
    REGISTRY,
    Loss,
    LossOutput,
    LossSpec,
    get_loss,
    list_losses,
    register,
    resolve_name,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "__main__":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ALIASES",
    "INPUTS_BY_KIND",
    "KNOWN_NEEDS",
    "REGISTRY",
    "ListwiseInputs",
    "Loss",
    "LossOutput",
    "LossSpec",
    "PairwiseInputs",
    "RewardInputs",
    "TokenInputs",
    "UnpairedInputs",
    "get_loss",
    "list_losses",
    "register",
    "resolve_name",
]
