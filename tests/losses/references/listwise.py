"""Reference formulas of the listwise PAD losses (EganGu/PAD ``scripts/simpo_trainer.py``), float64.

Plackett-Luce log-probability of a ranking τ: ``Σ_k [s_{τ_k} − log Σ_{m≥k} exp(s_{τ_m})]``, every ranking
enumerated with ``itertools.permutations`` and every sum written as a loop.
"""

from __future__ import annotations

import itertools

import torch
from conformance import Reference


def _scores(t, beta):
    return beta * t["logps"] / t["lengths"].double(), beta * t["teacher_scores"]


def _pl(scores_row: torch.Tensor, ranking) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for k in range(len(ranking)):
        rest = torch.stack([scores_row[m] for m in ranking[k:]])
        total = total + scores_row[ranking[k]] - torch.logsumexp(rest, 0)
    return total


def _pl_all(scores: torch.Tensor) -> torch.Tensor:
    """(B, n!) log-probabilities of every ranking (itertools order)."""
    perms = list(itertools.permutations(range(scores.shape[1])))
    return torch.stack([torch.stack([_pl(row, p) for p in perms]) for row in scores])


def _kl(log_a, log_b):
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _pad_pd(t, *, beta, divergence):
    s, te = _scores(t, beta)
    log_ps, log_pt = _pl_all(s), _pl_all(te)
    if divergence == "jsd":  # JSD(P_S || P_T), M = (P_S + P_T) / 2 per example
        log_m = torch.log(0.5 * (log_ps.exp() + log_pt.exp()))
        return 0.5 * _kl(log_ps, log_m) + 0.5 * _kl(log_pt, log_m)
    # released pd_loss: M = 1/2 * sum over the micro-batch of (P_S + P_T); F.kl_div(log P, log M) = KL(M || P)
    m = 0.5 * (log_ps.exp().sum(0) + log_pt.exp().sum(0))  # (R,)
    log_m = torch.log(m)
    kl_m = [(m * (log_m - lp)).sum(-1) for lp in (log_ps, log_pt)]
    return 0.5 * (kl_m[0] + kl_m[1])


def _pad_rd(t, *, beta):
    s, te = _scores(t, beta)
    out = []
    for b in range(s.shape[0]):  # the teacher's descending order, ties by index
        order = sorted(range(s.shape[1]), key=lambda i: (-float(te[b, i]), i))
        out.append(-_pl(s[b], order))
    return torch.stack(out)


REFERENCES = {
    "pad_pd": Reference(_pad_pd, ({}, {"divergence": "released"}, {"beta": 1.0}, {"beta": 1.0, "divergence": "released"})),
    "pad_rd": Reference(_pad_rd, ({}, {"beta": 1.0})),
}
