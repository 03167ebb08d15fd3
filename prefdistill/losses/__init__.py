"""Loss registry. ``get_loss(name, **hparams)`` -> a pure function with declared needs.

Importing this package registers every loss family module listed below.
"""

# Family modules register on import. Keep this list in sync with the files.
from prefdistill.losses import divergence, listwise, minillm, pairwise, plad, reference_free  # noqa: F401,E402
from prefdistill.losses.registry import (
    KNOWN_NEEDS,
    REGISTRY,
    Loss,
    LossOutput,
    get_loss,
    list_losses,
    register,
)

__all__ = ["KNOWN_NEEDS", "REGISTRY", "Loss", "LossOutput", "get_loss", "list_losses", "register"]
