"""Call a registered loss as one function of tensors and hyper-parameters (for hand-worked tests)."""

from __future__ import annotations

from prefdistill.losses import REGISTRY, get_loss


def bound(name: str):
    """``f(**tensors_and_hparams)``: splits the keywords into the loss's hparams and its tensors."""

    def call(*args, **kw):
        hp = {k: kw.pop(k) for k in list(kw) if k in REGISTRY[name].hparams}
        return get_loss(name, **hp)(*args, **kw)

    return call
