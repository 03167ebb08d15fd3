"""ABKD: token-level distillation with the α-β-divergence (Wang et al., ICML 2025, arXiv 2505.04560).

At every distilled position, teacher ``p`` and student ``q`` (``softmax(logits/τ)``) are compared with the
α-β-divergence of Cichocki, Cruces & Amari (2011), which ABKD takes as its family::

    D_AB^(α,β)(p ‖ q) = −1/(αβ) · Σ_v ( p_v^α q_v^β − α/(α+β)·p_v^(α+β) − β/(α+β)·q_v^(α+β) )   α, β, α+β ≠ 0

and at the edges its continuous limits::

    β = 0:      1/α² · Σ_v ( p^α·log(p^α/q^α) − p^α + q^α )      (α = 1: forward KL(p ‖ q))
    α = 0:      1/β² · Σ_v ( q^β·log(q^β/p^β) − q^β + p^β )      (β = 1: reverse KL(q ‖ p))
    α = β = 0:  ½ · Σ_v ( log p − log q )²

α = β = ½ gives 4·(squared Hellinger distance). α controls the "hardness-concentration" effect, β the
"confidence-concentration" effect of the paper; (1, 0) and (0, 1) are FKL and RKL. Everything is computed in
log space (``p^α q^β = exp(α log p + β log q)``), so vanishing probabilities give no NaN, and near p = q, where
the definition cancels, as a series (exactly 0 at p = q; :func:`ab_divergence`). α, β must each be 0 or at least
1e-3 (the paper interpolates FKL and RKL; a negative power of a vanishing probability overflows).

**Paper vs released code** (``ghwang-s/abkd`` ``distillation_llm/distillm/losses.py``, ``ab_div``): both agree
on the general case and at α = β = 0, but at the other edges the code divides by α (β = 0) and by β (α = 0)
instead of α² and β², so it is not continuous there unless α = 1 (resp. β = 1): e.g. α = 0.5, β = 0 gives twice
the limit. ``edge_form: continuous`` (default) is the definition above, ``edge_form: released`` the code's
scaling. The code averages over the batch's tokens; like every token loss here this is the token mean per
example (then the batch mean). The released default is α = β = 0.5 (``arguments.py``); its scripts sweep
(0.2, 0.7), (0.1, 0.8) and others per model pair.

Mixed with cross-entropy like every token KD (``kd_ratio``, τ² factor): :func:`~prefdistill.losses.divergence.token_kd`,
so a top-k teacher cache works too (both distributions restricted to the teacher's top-k, as documented there).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from prefdistill.losses.divergence import token_kd
from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, check_range

MIN_POWER = 1e-3  # smaller non-zero α or β: the closed form divides float32 rounding by α·β
_SERIES_TERMS = 14  # k(u) to n = 14: below float32 rounding wherever the series is used (|s·u| < 1)


def _series(alpha: float, total: float, u: torch.Tensor) -> torch.Tensor:
    """k(u) = Σ_{n≥2} P_n·u^n/n!, P_n = Σ_{j=0}^{n−2} s^j·α^(n−2−j), by Horner (no division by α or β)."""
    coefficients = [sum(total**j * alpha ** (n - 2 - j) for j in range(n - 1)) / math.factorial(n)
                    for n in range(2, _SERIES_TERMS + 1)]  # fmt: skip
    acc = torch.full_like(u, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * u + c
    return acc * u.square()


def _closed_form(lp: torch.Tensor, lq: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The definition's term per token (the edge forms at α = 0 or β = 0), in log space."""
    total = alpha + beta
    if alpha > 0 and beta > 0:
        cross = (alpha * lp + beta * lq).exp()
        return -(cross - alpha / total * (total * lp).exp() - beta / total * (total * lq).exp()) / (
            alpha * beta
        )
    a, la, lb = (alpha, lp, lq) if beta == 0 else (beta, lq, lp)  # D^(0,β)(p‖q) is D^(β,0)(q‖p)
    pa = (a * la).exp()
    return (pa * a * (la - lb) - pa + (a * lb).exp()) / a**2


def ab_divergence(
    lp: torch.Tensor, lq: torch.Tensor, *, alpha: float, beta: float, edge_form: str
) -> torch.Tensor:
    """D_AB^(α,β)(p ‖ q) over the last dim from log-probs ``lp``, ``lq``: (..., V) -> (...).

    Per token the term is ``q^s·k(u)`` with ``s = α + β`` and ``u = log p − log q`` (every case above, edges
    included). Near ``p = q`` (|s·u| < 1), where the definition cancels to ``q^s·u²/2``, ``k`` is summed as its
    series (:func:`_series`); elsewhere the definition itself is used, which cannot overflow in log space.
    """
    if alpha == 0 and beta == 0:
        return 0.5 * (lp - lq).square().sum(-1)
    total = alpha + beta
    u = lp - lq
    near = (total * u).abs() < 1.0
    series = (total * lq).exp() * _series(alpha, total, torch.where(near, u, 0.0))
    terms = torch.where(near, series, _closed_form(lp, lq, alpha, beta))
    if edge_form == "released" and (alpha == 0 or beta == 0):
        terms = terms * (alpha + beta)  # the code divides by α (β), not α² (β²)
    return terms.sum(-1)


def _check(hp: dict) -> None:
    for key in ("alpha", "beta"):
        if hp[key] < 0 or 0 < hp[key] < MIN_POWER:
            raise ValueError(
                f"loss 'abkd': {key} must be 0 or >= {MIN_POWER:g} (ABKD interpolates FKL and RKL; smaller "
                f"non-zero powers are beyond float32: use 0 for the limit), got {hp[key]}"
            )
    check_choice("abkd", "edge_form", hp["edge_form"], ("continuous", "released"))
    if hp["edge_form"] == "released" and hp["alpha"] > 0 and hp["beta"] > 0:
        raise ValueError("loss 'abkd': edge_form=released changes only the edges alpha = 0 or beta = 0; "
                         f"with alpha={hp['alpha']}, beta={hp['beta']} it has no effect: remove it")  # fmt: skip
    check_range("abkd", "kd_ratio", hp["kd_ratio"], 0.0, 1.0)


@register(
    "abkd", kind="token", needs={"teacher", "token_logps"}, validate=_check,
    hparams={"alpha": 0.5, "beta": 0.5, "edge_form": "continuous", "temperature": 1.0, "kd_ratio": 1.0},
    summary="α-β-divergence D_AB(p_T ‖ q_S) (FKL at α=1,β=0; RKL at α=0,β=1), token mean per example",
    source="ABKD, Wang et al., ICML 2025 (arXiv 2505.04560); ghwang-s/abkd distillation_llm/distillm/losses.py ab_div",
)  # fmt: skip
def abkd(
    x: TokenInputs, *, alpha: float, beta: float, edge_form: str, temperature: float, kd_ratio: float
) -> LossOutput:
    """α-β-divergence token KD; see the module docstring."""
    _check({"alpha": alpha, "beta": beta, "edge_form": edge_form, "kd_ratio": kd_ratio})
    divergence = partial(ab_divergence, alpha=float(alpha), beta=float(beta), edge_form=edge_form)
    return token_kd(divergence, x, temperature=temperature, kd_ratio=kd_ratio)
