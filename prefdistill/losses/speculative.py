"""Speculative KD (Xu et al., ICLR 2025, arXiv 2410.11325): token KD on interleaved student-teacher samples.

During training the student proposes each next token and the teacher replaces every proposal outside its own
top-K by a token it samples itself (paper Algorithm 1; the sampling is
:class:`~prefdistill.generation.speculative.SpeculativeGenerator`, selected by ``on_policy.speculative``, e.g.
``configs/on_policy/skd.yaml``). On each such response the student minimises the token-level divergence
``D(M_t ‖ M_s)(y|x) = (1/|y|)·Σ_t D(p_t, q_t)`` (paper Eq. 1). Early in training most proposals are replaced
(≈ supervised KD on teacher tokens); as the student improves more are kept (≈ on-policy KD).

The loss declares ``speculative_samples``: the training module refuses it unless the rollouts are interleaved
(``on_policy.speculative`` set, ``on_policy.fraction`` 1). ``divergence`` picks D, as the released code's
``distance_metric`` (google-research/google-research ``speculative_kd/train/ddp_skd.py``): ``fkl`` forward
KL(p ‖ q) (its ``kl``, the default of ``config/kd_train.yaml``), ``rkl`` reverse KL(q ‖ p), ``jsd`` the
Jensen-Shannon divergence ½KL(p ‖ m) + ½KL(q ‖ m), m = (p + q)/2 (the paper's JSD), and ``jsd_released`` what
the code's ``JSD`` module computes, ½KL(m ‖ p) + ½KL(m ‖ q) (its ``kl_div`` calls take the arguments the other
way round). Mixed with cross-entropy through ``kd_ratio`` by :func:`~prefdistill.losses.divergence.token_kd`.
"""

from __future__ import annotations

import math

import torch

from prefdistill.losses.divergence import _fkl, _jsd, _kl, _rkl, token_kd
from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, check_range


def _jsd_released(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """½KL(m ‖ p) + ½KL(m ‖ q), m = (p + q)/2 (the released code's ``JSD``)."""
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    return 0.5 * (_kl(lm, lp) + _kl(lm, lq))


DIVERGENCES = {
    "fkl": _fkl,
    "rkl": _rkl,
    "jsd": lambda lp, lq: _jsd(lp, lq, 0.5),
    "jsd_released": _jsd_released,
}


def _check(hp: dict) -> None:
    check_choice("skd", "divergence", hp["divergence"], tuple(DIVERGENCES))
    check_range("skd", "kd_ratio", hp["kd_ratio"], 0.0, 1.0)


@register(
    "skd", kind="token", needs={"teacher", "token_logps", "policy_samples", "speculative_samples"}, validate=_check,
    hparams={"divergence": "fkl", "temperature": 1.0, "kd_ratio": 1.0},
    summary="Token KD D(p_T, q_S) on interleaved samples: student proposals outside the teacher's top-k "
            "replaced by the teacher",
    source="Speculative KD, Xu et al., ICLR 2025 (arXiv 2410.11325); google-research speculative_kd",
)  # fmt: skip
def skd(x: TokenInputs, *, divergence: str, temperature: float, kd_ratio: float) -> LossOutput:
    """Token KD with the chosen divergence on the interleaved rollouts; see the module docstring."""
    _check({"divergence": divergence, "kd_ratio": kd_ratio})
    return token_kd(DIVERGENCES[divergence], x, temperature=temperature, kd_ratio=kd_ratio)
