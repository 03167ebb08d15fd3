"""The three options TRL's DPOTrainer applies across its log-ratio losses: f-DPO, LD-DPO and WPO.

TRL 1.x's ``DPOConfig`` has knobs that act on every ``loss_type`` (``trl/trainer/dpo_trainer.py``,
``_compute_loss``). Here each is a small pure helper, and a hyper-parameter of every loss TRL applies
it to (with TRL's name and default), so ``method=<loss> method.<knob>=...`` works for the whole family:

* ``f_divergence_type`` / ``f_alpha_divergence_coef`` (f-DPO, Wang et al. 2023, arXiv 2309.16240,
  Thm. 1 and Table 1): the policy/reference log-ratio ``u = S_θ − S_ref`` enters the loss through the
  derivative of the f-divergence's generator at ``e^u`` (:func:`f_scores`). Only the losses built on the
  chosen − rejected score difference take it (TRL: the ``β·log Z(x)`` term of the reparameterisation
  cancels only there).
* ``ld_alpha`` (LD-DPO, Liu et al. 2024, arXiv 2409.06411, Eq. 9-10): the log-prob of each response is
  its first ``min(|y_w|, |y_l|)`` tokens plus ``α`` times the rest (:func:`length_desensitized`), for the
  policy and the reference alike. Needs per-token log-probs.
* ``use_weighting`` (WPO, Zhou et al. 2024, arXiv 2406.11827, Eq. 2 as TRL computes it): each pair's
  loss is multiplied by ``w(y_w)·w(y_l)``, ``w(y) = exp(mean_t [log π_θ(y_t) − log Σ_v π_θ(v)²])``,
  detached (:func:`wpo_weights`). Needs per-token log-probs and ``log Σ_v π_θ(v)²`` at every token.

:func:`knob_needs` turns the knobs' values into the inputs the training module must add; the default
values (reverse KL, no LD, no weighting) need nothing beyond the (B,) sums.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.terms import check_choice, check_range

Tensor = torch.Tensor

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
F_KNOBS = {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5}  # TRL DPOConfig defaults
LD_KNOB = {"ld_alpha": None}
WPO_KNOB = {"use_weighting": False}
_ALPHA_EXP_MAX = 80.0  # TRL clamps (α−1)·u here in float32 so exp() stays finite


def check_knobs(loss: str, hp: dict) -> None:
    """A clear ValueError for an unknown f-divergence or an ``ld_alpha`` outside [0, 1]."""
    if "f_divergence_type" in hp:
        check_choice(loss, "f_divergence_type", hp["f_divergence_type"], F_DIVERGENCES)
    if hp.get("ld_alpha") is not None:
        check_range(loss, "ld_alpha", hp["ld_alpha"], 0.0, 1.0)


def knob_needs(hp: dict, *, reference: bool) -> set[str]:
    """The extra inputs the knobs' values need: per-token log-probs for LD-DPO (the reference's too when the
    loss uses one) and for WPO (with the per-token ``log Σ_v π_θ(v)²``)."""
    needs = set()
    if hp.get("ld_alpha") is not None:
        needs |= {"token_logps", "reference_token_logps"} if reference else {"token_logps"}
    if hp.get("use_weighting"):
        needs |= {"token_logps", "token_sq_probs", "rejected"}
    return needs


def f_scores(chosen: Tensor, rejected: Tensor, f_divergence_type: str, alpha: float) -> tuple[Tensor, Tensor]:
    """f-DPO scores ``f'(e^u)`` of the log-ratios u (B,) of chosen and rejected (TRL's conventions).

    * ``reverse_kl`` (DPO): ``u``;
    * ``forward_kl``: ``1 − e^{−u}`` (f'(t) = 1 − 1/t; the paper's −1/t differs by a constant that cancels);
    * ``js_divergence``: ``log 2 + log σ(u)`` (f'(t) = log(2t/(1+t)));
    * ``alpha_divergence``: ``(e^{(α−1)u} − 1)/(α−1)``, with ``(α−1)u`` clamped at 80 as TRL does; α → 1
      (within 1e-6) is reverse KL. TRL's α is 1 − the paper's α (whose f'(t) = (1 − t^{−α})/α).
    """
    if f_divergence_type == "reverse_kl":
        return chosen, rejected
    if f_divergence_type == "forward_kl":
        return 1.0 - torch.exp(-chosen), 1.0 - torch.exp(-rejected)
    if f_divergence_type == "js_divergence":
        return tuple(math.log(2.0) + F.logsigmoid(u) for u in (chosen, rejected))
    if f_divergence_type == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return chosen, rejected
        c = alpha - 1.0
        return tuple(torch.expm1((c * u).clamp_max(_ALPHA_EXP_MAX)) / c for u in (chosen, rejected))
    raise ValueError(f"f_divergence_type must be one of {list(F_DIVERGENCES)}, got {f_divergence_type!r}")


def _tokens(x: PairwiseInputs, side: str, reference: bool = False) -> tuple[Tensor, Tensor]:
    """(B, T) per-token log-probs and bool mask of one side, with a clear error when absent."""
    name = f"{'ref_' if reference else ''}{side}_token_logps"
    values, mask = getattr(x, name), getattr(x, f"{side}_mask")
    if values is None or mask is None:
        raise ValueError(
            f"loss {x.loss_name!r} needs per-token log-probs ({name!r} and '{side}_mask', (B, T)) but they are "
            "None: the training module provides them when the loss declares the 'token_logps' / "
            "'reference_token_logps' needs"
        )
    if values.shape != mask.shape:
        raise ValueError(f"loss {x.loss_name!r}: {name} {tuple(values.shape)} and {side}_mask {tuple(mask.shape)} differ")
    return values.float(), mask.bool()


def _split_sum(values: Tensor, mask: Tensor, shared: Tensor, ld_alpha: float) -> Tensor:
    """``Σ_{first `shared` tokens} + ld_alpha · Σ_{the rest}`` per row (masked positions selected away)."""
    position = mask.long().cumsum(-1)  # 1-based index among the response's tokens
    head = mask & (position <= shared[:, None])
    tail = mask & (position > shared[:, None])
    zero = values.new_zeros(())
    return torch.where(head, values, zero).sum(-1) + ld_alpha * torch.where(tail, values, zero).sum(-1)


def length_desensitized(x: PairwiseInputs, ld_alpha: float | None, *, reference: bool) -> PairwiseInputs:
    """LD-DPO: ``x`` with summed log-probs ``S = S_{≤ℓ} + α·S_{>ℓ}``, ℓ = min(|y_w|, |y_l|) per pair.

    Applied to the policy and (``reference``) the reference, as TRL's ``ld_alpha``. ``ld_alpha=None``
    returns ``x`` unchanged; 1 is plain DPO, 0 ignores every token past the shorter response.
    Token counts (``*_lengths``) are not changed: TRL's length-averaged losses divide by the full length.
    """
    if ld_alpha is None:
        return x
    cw, mw = _tokens(x, "chosen")
    cl, ml = _tokens(x, "rejected")
    shared = torch.minimum(mw.sum(-1), ml.sum(-1))
    out = {"chosen_logps": _split_sum(cw, mw, shared, ld_alpha), "rejected_logps": _split_sum(cl, ml, shared, ld_alpha)}
    if reference:
        rw, _ = _tokens(x, "chosen", reference=True)
        rl, _ = _tokens(x, "rejected", reference=True)
        out |= {"ref_chosen_logps": _split_sum(rw, mw, shared, ld_alpha),
                "ref_rejected_logps": _split_sum(rl, ml, shared, ld_alpha)}  # fmt: skip
    return dataclasses.replace(x, **out)


def _mean_weight(x: PairwiseInputs, side: str) -> Tensor:
    values, mask = _tokens(x, side)
    sq = getattr(x, f"{side}_log_sq_probs")
    if sq is None:
        raise ValueError(
            f"loss {x.loss_name!r} with use_weighting needs '{side}_log_sq_probs' (B, T): the training module "
            "provides them when the loss declares the 'token_sq_probs' need"
        )
    aligned = torch.where(mask, values.detach() - sq.detach().float(), 0.0)
    return torch.exp(aligned.sum(-1) / mask.sum(-1).clamp_min(1))


def wpo_weights(x: PairwiseInputs) -> Tensor:
    """WPO's detached pair weight ``w(y_w)·w(y_l)`` (B,), ``w(y) = exp(mean_t [log π_θ(y_t) − log Σ_v π_θ(v)²])``."""
    return _mean_weight(x, "chosen") * _mean_weight(x, "rejected")


def weighted(loss: Tensor, metrics: dict[str, Tensor], x: PairwiseInputs, use_weighting: bool):
    """``(loss · wpo_weights(x), metrics + wpo/weight)`` when ``use_weighting``, else unchanged."""
    if not use_weighting:
        return loss, metrics
    w = wpo_weights(x)
    return loss * w, {**metrics, "wpo/weight": w}
