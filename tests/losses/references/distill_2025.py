"""Reference formulas of the 2025-26 distillation losses, float64, one position at a time.

OPD (Lu & Thinking Machines 2025; GKD λ = 1, β = 1): per position KL(q ‖ p) exactly, or the sampled estimate
−A_t·log q(y_t), A_t = log p(y_t) − log q_old(y_t); IW-OPD weights w_t = 1 + γ·(1 − Σ_{s<t}|A_s| / max(Σ_s|A_s|, 1e-8))
(TRL 1.16 trl/experimental/iw_opd/iw_opd_trainer.py, _compute_iw_opd_loss). Token mean per example.
ABKD (arXiv 2505.04560): D_AB^(α,β)(p ‖ q) = −1/(αβ)·Σ(p^α q^β − α/(α+β)·p^(α+β) − β/(α+β)·q^(α+β)), its edge cases
(1/α² or the released code's 1/α at β = 0, likewise for α = 0; ½Σ(log p − log q)² at 0, 0).
TAID (arXiv 2501.16937; SakanaAI/TAID src/distil_losses/taid.py): KL(p_t ‖ q) (or −Σ p_t log q), p_t =
softmax((1−t) log q + t log p); the schedule update of TAID.update_t with the batch's token-mean objective.
SKD (arXiv 2410.11325; google-research speculative_kd train/ddp_skd.py): FKL, RKL, JSD, and the code's
½KL(m ‖ p) + ½KL(m ‖ q).
"""

from __future__ import annotations

import math

import torch
from conformance import CASES, Reference

lsm = torch.log_softmax


def _kl(la, lb):
    return (la.exp() * (la - lb)).sum()


def _positions(t, b):
    return [j for j in range(t["mask"].shape[1]) if bool(t["mask"][b, j])]


def _mix(t, b, j, tau, kd_ratio, divergence):
    """kd_ratio·τ²·D(p, q) + (1 − kd_ratio)·CE at one position (the token KD mix)."""
    lp = lsm(t["teacher_logits"][b, j].detach() / tau, -1)
    lq = lsm(t["student_logits"][b, j] / tau, -1)
    ce = -lsm(t["student_logits"][b, j], -1)[int(t["labels"][b, j])]
    return kd_ratio * tau**2 * divergence(lp, lq) + (1 - kd_ratio) * ce


def _token_mean(t, per_position):
    out = []
    for b in range(t["mask"].shape[0]):
        pos = _positions(t, b)
        total = sum((per_position(b, j) for j in pos), torch.zeros((), dtype=torch.float64))
        out.append(total / max(len(pos), 1))
    return torch.stack(out)


# ------------------------------------------------------------------ OPD
def _opd(t, **hp):
    tau, gamma = hp["temperature"], hp["iw_gamma"]
    out = []
    for b in range(t["mask"].shape[0]):
        pos = _positions(t, b)
        terms, adv = [], []
        for j in pos:
            lq = lsm(t["student_logits"][b, j] / tau, -1)
            lp = lsm(t["teacher_logits"][b, j].detach() / tau, -1)
            y = int(t["labels"][b, j])
            old = t["sample_logps"][b, j].detach() if "sample_logps" in t else lq[y].detach()
            a = float(lp[y] - old)
            adv.append(a)
            terms.append(_kl(lq, lp) if hp["estimator"] == "full" else -a * lq[y])
        total_abs = max(sum(abs(a) for a in adv), 1e-8)
        loss, prefix = torch.zeros((), dtype=torch.float64), 0.0
        for term, a in zip(terms, adv):
            w = 1.0 if gamma is None else 1 + gamma * (1 - prefix / total_abs)
            loss = loss + w * term
            prefix += abs(a)
        out.append(loss / max(len(pos), 1))
    return torch.stack(out)


# ------------------------------------------------------------------ ABKD
def _ab(lp, lq, alpha, beta, edge_form):
    """In log space (p^α = exp(α log p)): the cases hold log-probs near -1e4, whose powers underflow to 0."""
    if alpha == 0 and beta == 0:
        return 0.5 * ((lp - lq) ** 2).sum()
    if beta == 0:
        scale = 1 / alpha**2 if edge_form == "continuous" else 1 / alpha
        pa, qa = (alpha * lp).exp(), (alpha * lq).exp()
        return scale * (pa * (alpha * lp - alpha * lq) - pa + qa).sum()
    if alpha == 0:
        scale = 1 / beta**2 if edge_form == "continuous" else 1 / beta
        qb, pb = (beta * lq).exp(), (beta * lp).exp()
        return scale * (qb * (beta * lq - beta * lp) - qb + pb).sum()
    s = alpha + beta
    return -(
        (alpha * lp + beta * lq).exp() - alpha / s * (s * lp).exp() - beta / s * (s * lq).exp()
    ).sum() / (alpha * beta)


def _abkd(t, **hp):
    def div(lp, lq):
        return _ab(lp, lq, hp["alpha"], hp["beta"], hp["edge_form"])

    return _token_mean(t, lambda b, j: _mix(t, b, j, hp["temperature"], hp["kd_ratio"], div))


# ------------------------------------------------------------------ TAID
def _taid(t, state, **hp):
    tt = state["t"]

    def div(lp, lq):
        lpt = lsm((1 - tt) * lq.detach() + tt * lp, -1)
        ce = -(lpt.exp() * lq).sum()
        return ce if hp["objective"] == "cross_entropy" else ce + (lpt.exp() * lpt).sum()

    loss = _token_mean(t, lambda b, j: _mix(t, b, j, 1.0, hp["kd_ratio"], div))
    # the schedule: J = the batch's token mean of the objective (the code's forward_kl reduction)
    terms = [div(lsm(t["teacher_logits"][b, j].detach(), -1), lsm(t["student_logits"][b, j], -1)).item()
             for b in range(t["mask"].shape[0]) for j in _positions(t, b)]  # fmt: skip
    objective = sum(terms) / max(len(terms), 1)
    prev, momentum = state["prev_loss"], state["momentum"]
    if math.isinf(prev):
        return loss, {"t": tt, "prev_loss": objective, "momentum": momentum}
    momentum = hp["beta"] * momentum + (1 - hp["beta"]) * (prev - objective) / (prev + 1e-15)
    target = hp["t_start"]  # progress 0: the cases carry none
    step = hp["alpha"] * (1 / (1 + math.exp(-momentum))) * (1 - tt)
    new_t = min(hp["t_end"], max(target, tt + step)) if hp["adaptive"] else target
    return loss, {"t": new_t, "prev_loss": objective, "momentum": momentum}


# ------------------------------------------------------------------ SKD
def _jsd(lp, lq):
    lm = torch.logaddexp(lp, lq) - math.log(2)
    return 0.5 * _kl(lp, lm) + 0.5 * _kl(lq, lm)


def _jsd_released(lp, lq):
    lm = torch.logaddexp(lp, lq) - math.log(2)
    return 0.5 * _kl(lm, lp) + 0.5 * _kl(lm, lq)


SKD_DIVERGENCES = {"fkl": lambda lp, lq: _kl(lp, lq), "rkl": lambda lp, lq: _kl(lq, lp), "jsd": _jsd,
                   "jsd_released": _jsd_released}  # fmt: skip


def _skd(t, **hp):
    div = SKD_DIVERGENCES[hp["divergence"]]
    return _token_mean(t, lambda b, j: _mix(t, b, j, hp["temperature"], hp["kd_ratio"], div))


REFERENCES = {
    "opd": Reference(
        _opd,
        (
            {},
            {"iw_gamma": 0.5},
            {"estimator": "sampled"},
            {"estimator": "sampled", "iw_gamma": 1.0},
            {"temperature": 2.0, "iw_gamma": 0.3},
        ),
    ),  # fmt: skip
    "abkd": Reference(
        _abkd,
        (
            {},
            {"alpha": 0.2, "beta": 0.7},
            {"alpha": 1.0, "beta": 0.0},
            {"alpha": 0.5, "beta": 0.0},
            {"alpha": 0.5, "beta": 0.0, "edge_form": "released"},
            {"alpha": 0.0, "beta": 0.3},
            {"alpha": 0.0, "beta": 0.3, "edge_form": "released"},
            {"alpha": 0.0, "beta": 0.0},
            {"temperature": 2.0, "kd_ratio": 0.5},
        ),
    ),  # fmt: skip
    "taid": Reference(
        _taid,
        ({}, {"objective": "cross_entropy"}, {"adaptive": False}, {"kd_ratio": 0.5}),
        state={"t": 0.55, "prev_loss": 3.0, "momentum": 0.1},
    ),
    # not `large`: the released JSD's gradient at log-probs near -1e4 sums terms of that size which cancel to O(1),
    # beyond float32 at 1e-5 (skd's other divergences are kd_fkl's, kd_rkl's and kd_jsd's, checked on `large`)
    "skd": Reference(
        _skd,
        (
            {},
            {"divergence": "rkl"},
            {"divergence": "jsd"},
            {"divergence": "jsd_released"},
            {"temperature": 2.0, "kd_ratio": 0.5},
        ),
        cases=tuple(c for c in CASES if c != "large"),
    ),  # fmt: skip
}
