"""On-policy distillation (OPD): the per-token reverse KL to the teacher on the student's own samples.

The objective of the on-policy distillation recipe (Lu & Thinking Machines, "On-Policy Distillation", 2025):
the student samples a response for each prompt, the teacher scores every sampled position, and the student
minimises, at every position of its own response,

    KL(q_θ(·|x, y_<t) ‖ p(·|x, y_<t))

This is GKD (Agarwal et al., ICLR 2024) with λ = 1 (every batch sampled from the student) and β = 1 (reverse
KL): ``method=opd`` computes the loss of ``method=gkd on_policy.fraction=1 method.beta=1``
(``tests/losses/test_on_policy_distill.py`` checks the equality; GKD's rollouts sample at temperature 0.9, TRL's
default, OPD's at 1). ``method=opd`` selects
``configs/on_policy/opd.yaml`` (λ = 1, temperature 1, no top-p, 128 new tokens); the loss declares
``policy_samples``, so a run without λ = 1 is refused.

Two estimators of the same gradient (``estimator``):

* ``full`` (default): the exact per-token reverse KL over the vocabulary (GKD β = 1; TRL ``generalized_jsd_loss``).
* ``sampled``: the one-token estimate the Thinking Machines recipe and TRL's IW-OPD train with,
  ``ℓ_t = −A_t·log q_θ(y_t)`` with the per-token advantage ``A_t = log p(y_t) − log q_old(y_t)`` (detached; −A_t is
  the sampled token's reverse-KL term). Over y_t ~ q_old = q_θ its expected gradient is that of the exact
  reverse KL. ``q_old`` is the sampling policy's log-prob (``sample_logps``, kept for reused rollouts), else the
  current policy's, detached. No importance ratio, as in TRL ``IWOPDTrainer._compute_iw_opd_loss``.

Optional token weights (``iw_gamma``; IW-OPD, Xie et al. 2026, "On the Position Bias of On-Policy
Distillation", arXiv 2606.22600; the weighting of TRL 1.16 ``trl/experimental/iw_opd/iw_opd_trainer.py``,
``IWOPDTrainer._compute_iw_opd_loss``), per response, detached::

    w_t = 1 + γ·(1 − Σ_{s<t} |A_s| / max(Σ_s |A_s|, ε)),    ε = 1e-8 (TRL's iw_opd_epsilon)

so the first token weighs 1 + γ and later tokens less as the teacher-student discrepancy accumulated on their
prefix grows (down to 1 + γ·|A_T| / Σ_s |A_s| at the last). ``iw_gamma: null`` (default) = no weights; TRL's
default γ is 0.5. The weights are not renormalised (TRL does not either).

Per example: ``Σ_t w_t·ℓ_t / #{t: mask}`` (token mean; TRL divides the batch sum by the batch's token count).
Both models' logits are divided by ``temperature`` (TRL: the same), without a τ² factor. ``teacher_logits`` must
be the full vocabulary (rollouts always run the teacher online). Metrics (B,): ``opd/reverse_kl`` (exact,
unweighted token mean), ``opd/advantage`` (mean A_t), ``opd/weight`` (mean w_t).
"""

from __future__ import annotations

import torch

from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice

_LOG_FLOOR = -1e30
IW_EPSILON = 1e-8  # TRL IWOPDConfig.iw_opd_epsilon default


def iw_opd_weights(abs_advantages: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, T) IW-OPD weights from |A_t| (0 outside the response): ``1 + γ·(1 − prefix / total)``."""
    prefix = abs_advantages.cumsum(-1) - abs_advantages
    total = abs_advantages.sum(-1, keepdim=True).clamp_min(IW_EPSILON)
    return 1.0 + gamma * (1.0 - prefix / total)


def _check(hp: dict) -> None:
    check_choice("opd", "estimator", hp["estimator"], ("full", "sampled"))
    if hp["temperature"] <= 0:
        raise ValueError(f"loss 'opd': temperature must be > 0, got {hp['temperature']}")
    if hp["iw_gamma"] is not None and hp["iw_gamma"] < 0:
        raise ValueError(f"loss 'opd': iw_gamma must be >= 0 (or null: no weights), got {hp['iw_gamma']}")


@register(
    "opd", kind="token", needs={"teacher", "token_logps", "policy_samples"}, validate=_check,
    hparams={"estimator": "full", "iw_gamma": None, "temperature": 1.0},
    summary="On-policy distillation: per-token reverse KL(q_S ‖ p_T) on student samples (GKD λ=1, β=1), "
            "optional IW-OPD weights",
    source="Lu & Thinking Machines 2025 (on-policy distillation); GKD (arXiv 2306.13649); IW-OPD (arXiv "
           "2606.22600), TRL 1.16 trl/experimental/iw_opd/iw_opd_trainer.py",
)  # fmt: skip
def opd(x: TokenInputs, *, estimator: str, iw_gamma: float | None, temperature: float) -> LossOutput:
    """Per-token reverse KL on the student's own tokens, optionally IW-OPD weighted; see the module docstring."""
    _check({"estimator": estimator, "iw_gamma": iw_gamma, "temperature": temperature})
    if x.labels is None or x.teacher_logits is None:
        raise ValueError("loss 'opd' needs labels (the sampled tokens) and the teacher's full teacher_logits")
    mask = x.mask.bool()
    rows = mask.nonzero(as_tuple=True)[0]  # example of each response position (masked rows only are computed)
    lq = torch.log_softmax(x.student_logits[mask].float() / temperature, -1).clamp_min(_LOG_FLOOR)  # (N, V)
    with torch.no_grad():
        lp = torch.log_softmax(x.teacher_logits.detach()[mask].float() / temperature, -1).clamp_min(
            _LOG_FLOOR
        )
    sampled = x.labels[mask].long().unsqueeze(-1)
    token_q = lq.gather(-1, sampled).squeeze(-1)  # (N,) log q_θ(y_t), with grad
    old = token_q.detach() if x.sample_logps is None else x.sample_logps.detach()[mask].float()
    advantages = lp.gather(-1, sampled).squeeze(-1) - old  # (N,) A_t, no grad
    reverse_kl = (lq.exp() * (lq - lp)).sum(-1)  # (N,) exact KL(q_t ‖ p_t)
    terms = reverse_kl if estimator == "full" else -advantages * token_q
    weights = torch.ones_like(advantages)
    if iw_gamma is not None:
        dense = advantages.new_zeros(mask.shape)
        dense[mask] = advantages.abs()
        weights = iw_opd_weights(dense, iw_gamma)[mask]
    count = mask.sum(-1).clamp_min(1).float()

    def per_example(tok: torch.Tensor) -> torch.Tensor:
        return tok.new_zeros(mask.shape[0]).index_add(0, rows, tok) / count

    metrics = {
        "opd/reverse_kl": per_example(reverse_kl.detach()),
        "opd/advantage": per_example(advantages),
        "opd/weight": per_example(weights),
    }
    return LossOutput(per_example(weights * terms), metrics)
