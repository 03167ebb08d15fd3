"""A weighted mixture of registered losses: TRL 1.x's ``loss_type`` list with ``loss_weights``.

::

    get_loss("mixture", losses=["dpo", "sft"], weights=[1.0, 1.0], beta=0.1)
    python train.py method=mixture method.losses=[dpo,sft] method.weights=[1.0,0.5]

The loss is ``Σ_i weights[i] · loss_i`` per example. Every other keyword is a hyper-parameter *shared*
by the parts, as TRL shares β (and ``ld_alpha``, ``use_weighting``, ...) across its list: it is given
to each part that takes it, and naming one that no part takes is an error. The parts must be of one
kind (pairwise: the mixture's module gives every part the same inputs); ``needs`` is the union of the
parts', and a stateful part keeps its running state under ``<part>/<key>``.

Metrics: every part's metrics prefixed with its name (``dpo/reward/margin``, ``sft/nll/chosen``) plus
``<part>/loss``, and the first part's metrics also unprefixed, so ``reward/accuracy`` and the like read
as for a single loss. RPO is ``losses=[dpo, sft], weights=[1, α]`` (TRL 1.x's own spelling of it).
"""

from __future__ import annotations

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.registry import REGISTRY, Loss, LossOutput, get_loss, register, resolve_name

KIND = "pairwise"


def _accepts(name: str, key: str) -> bool:
    spec = REGISTRY[name]
    return key in spec.hparams or key in spec.renamed


def parts(hp: dict) -> list[tuple[Loss, float]]:
    """The mixture's parts as built losses with their weights; clear errors for anything that cannot work."""
    names, weights = hp["losses"], hp["weights"]
    shared = {k: v for k, v in hp.items() if k not in ("losses", "weights")}
    if not names:
        raise ValueError("loss 'mixture': losses must name at least one registered loss")
    resolved = [resolve_name(n) for n in names]
    if "mixture" in resolved:
        raise ValueError("loss 'mixture': a mixture cannot contain another mixture; list its parts instead")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"loss 'mixture': a loss is listed twice in {names} (add its weights instead)")
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names):
        raise ValueError(f"loss 'mixture': {len(names)} losses {names} but {len(weights)} weights {weights}")
    kinds = {n: REGISTRY[n].kind for n in resolved}
    if set(kinds.values()) != {KIND}:
        raise ValueError(f"loss 'mixture' mixes {KIND} losses only; got kinds {kinds}")
    unused = [k for k in shared if not any(_accepts(n, k) for n in resolved)]
    if unused:
        accepted = {n: sorted(REGISTRY[n].hparams) for n in resolved}
        raise TypeError(f"loss 'mixture': hyper-parameters {unused} fit none of its parts; they accept {accepted}")
    built = [get_loss(n, **{k: v for k, v in shared.items() if _accepts(n, k)}) for n in resolved]
    return list(zip(built, (float(w) for w in weights)))


def _needs(hp: dict) -> set[str]:
    return set().union(*(loss.needs for loss, _ in parts(hp)))


def _state(hp: dict) -> dict[str, float]:
    return {f"{loss.name}/{k}": v for loss, _ in parts(hp) for k, v in loss.state_defaults.items()}


def _validate(hp: dict) -> None:
    parts(hp)


@register(
    "mixture", kind=KIND, needs=_needs, hparams={"losses": ["dpo", "sft"], "weights": [1.0, 1.0]},
    open_hparams=True, validate=_validate, state=_state,
    source="TRL DPOConfig loss_type (a list) + loss_weights, trl/trainer/dpo_trainer.py; e.g. MPO, RPO",
)  # fmt: skip
def mixture(x: PairwiseInputs, *, losses: list, weights: list | None, state: dict, **shared) -> LossOutput:
    """Weighted sum of registered losses sharing hyper-parameters: ``Σ_i w_i · loss_i`` (TRL's loss_type list)."""
    total, metrics, new_state = None, {}, {}
    for i, (loss, weight) in enumerate(parts({"losses": losses, "weights": weights, **shared})):
        prefix = f"{loss.name}/"
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        out = loss(x, state=own or None) if loss.spec.state else loss(x)
        total = weight * out.loss if total is None else total + weight * out.loss
        metrics |= {prefix + k: v for k, v in out.metrics.items()} | {prefix + "loss": out.loss.detach()}
        if i == 0:
            metrics |= out.metrics
        new_state |= {prefix + k: v for k, v in (out.state or {}).items()}
    return LossOutput(total, metrics, new_state or None)
