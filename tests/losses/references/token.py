"""Reference formulas of the token-level distillation losses, float64, one position at a time.

KD (Hinton et al. 2015; DistiLLM ``distillm/losses.py``; GKD / TRL ``generalized_jsd_loss``): per position
the teacher's ``p = softmax(z_T/τ)`` and the student's ``q = softmax(z_S/τ)`` are compared by a divergence
D; per example ``τ²·mean_t D`` over the masked positions, mixed ``(1 − kd_ratio)·CE + kd_ratio·KD``.
MiniLLM (Gu et al., ICLR 2024, Sec. 2.2: single-step decomposition, length-normalised future return,
PPO-style clipping; microsoft/LMOps ``minillm/losses.py``) as the loss's docstring states it.
"""

from __future__ import annotations

import math

import torch
from conformance import Reference

lsm = torch.log_softmax


def _kl(la, lb):
    return (la.exp() * (la - lb)).sum()


def _mix(la, lb, w):  # log(w a + (1 - w) b)
    if w == 0.0:
        return lb
    if w == 1.0:
        return la
    return torch.logaddexp(la + math.log(w), lb + math.log(1 - w))


DIVERGENCES = {
    "kd_fkl": lambda lp, lq, hp: _kl(lp, lq),
    "kd_rkl": lambda lp, lq, hp: _kl(lq, lp),
    "kd_tvd": lambda lp, lq, hp: 0.5 * (lp.exp() - lq.exp()).abs().sum(),
    "kd_jsd": lambda lp, lq, hp: (
        _kl(lp, lq) if hp["beta"] == 0 else _kl(lq, lp) if hp["beta"] == 1
        else hp["beta"] * _kl(lp, _mix(lp, lq, hp["beta"])) + (1 - hp["beta"]) * _kl(lq, _mix(lp, lq, hp["beta"]))
    ),
    "kd_skl": lambda lp, lq, hp: _kl(lp, _mix(lp, lq, hp["alpha"])),
    "kd_srkl": lambda lp, lq, hp: _kl(lq, _mix(lp, lq, 1 - hp["alpha"])),
}


def _positions(t, b):
    return [j for j in range(t["mask"].shape[1]) if bool(t["mask"][b, j])]


def _kd(name):
    def fn(t, **hp):
        tau, r = hp["temperature"], hp["kd_ratio"]
        out = []
        for b in range(t["mask"].shape[0]):
            pos = _positions(t, b)
            kd = ce = torch.zeros((), dtype=torch.float64)
            for j in pos:
                lp = lsm(t["teacher_logits"][b, j].detach() / tau, -1)
                lq = lsm(t["student_logits"][b, j] / tau, -1)
                kd = kd + DIVERGENCES[name](lp, lq, hp)
                ce = ce - lsm(t["student_logits"][b, j], -1)[int(t["labels"][b, j])]
            n = max(len(pos), 1)
            out.append(r * tau**2 * kd / n + (1 - r) * ce / n)
        return torch.stack(out)

    return fn


def _minillm(t, **hp):
    tau, gamma, eps, scale = hp["temperature"], hp["gamma"], hp["clip"], hp["reward_scale"]
    out = []
    for b in range(t["mask"].shape[0]):
        pos = _positions(t, b)
        lq = {j: lsm(t["student_logits"][b, j] / tau, -1) for j in pos}
        lp = {j: lsm(t["teacher_logits"][b, j].detach() / tau, -1) for j in pos}
        y = {j: int(t["labels"][b, j]) for j in pos}
        old = {j: t["sample_logps"][b, j].detach() for j in pos}  # log-probs of the sampling policy
        reward = {j: float(lp[j][y[j]] - old[j]) for j in pos}  # r_t = log p(y_t) - log q_old(y_t)
        total = torch.zeros((), dtype=torch.float64)
        for i, j in enumerate(pos):
            future = pos[i + 1 :]
            ret = sum(gamma ** (k - j - 1) * reward[k] for k in future)
            if hp["length_norm"] == "mean" and future:
                ret = ret / len(future)
            adv = scale * ret
            rho = torch.exp(lq[j][y[j]] - old[j])
            pg = torch.maximum(-adv * rho, -adv * torch.clamp(rho, 1 - eps, 1 + eps))
            single = _kl(lq[j], lp[j]) if hp["single_step"] else 0.0
            total = total + pg + single
        out.append(total / max(len(pos), 1))
    return torch.stack(out)


KD_SETTINGS = ({}, {"temperature": 2.0, "kd_ratio": 0.5})
REFERENCES = {
    "kd_fkl": Reference(_kd("kd_fkl"), KD_SETTINGS),
    "kd_rkl": Reference(_kd("kd_rkl"), KD_SETTINGS),
    "kd_tvd": Reference(_kd("kd_tvd"), KD_SETTINGS),
    "kd_jsd": Reference(_kd("kd_jsd"), (*KD_SETTINGS, {"beta": 0.0}, {"beta": 1.0}, {"beta": 0.2})),
    "kd_skl": Reference(_kd("kd_skl"), (*KD_SETTINGS, {"alpha": 0.0}, {"alpha": 0.6})),
    "kd_srkl": Reference(_kd("kd_srkl"), (*KD_SETTINGS, {"alpha": 0.0}, {"alpha": 0.6})),
    "minillm": Reference(_minillm, ({}, {"single_step": False}, {"length_norm": "sum", "gamma": 0.5},
                                    {"clip": 0.05, "temperature": 2.0})),
}
