"""Reference formulas of the cross-tokenizer losses on one vocabulary (every position its own matched span).

ULD (Boizard et al. 2024, arXiv 2402.12030, Eq. 3; Nicolas-BZRD/llm-recipes ``models/distillation_model.py``):
per position the L1 distance between the teacher's and the student's probability vectors, each sorted in
decreasing order; mean over the example's positions, mixed ``(1 − kd_ratio)·CE + kd_ratio·ULD``.
GOLD-style hybrid (TRL ``GOLDTrainer``): on a matched span ``matched_weight·KL(p ‖ q)`` over the shared
vocabulary, which with one tokenizer is the whole vocabulary. Spans of several tokens, top-k teachers and
unmatched spans are worked by hand in ``tests/losses/test_cross_tokenizer.py``.
"""

from __future__ import annotations

import torch
from conformance import Reference

lsm = torch.log_softmax


def _per_position(divergence):
    def fn(t, **hp):
        out = []
        for b in range(t["mask"].shape[0]):
            pos = [j for j in range(t["mask"].shape[1]) if bool(t["mask"][b, j])]
            d = ce = torch.zeros((), dtype=torch.float64)
            for j in pos:
                lp, lq = lsm(t["teacher_logits"][b, j].detach(), -1), lsm(t["student_logits"][b, j], -1)
                d = d + divergence(lp, lq, hp)
                ce = ce - lq[int(t["labels"][b, j])]
            n = max(len(pos), 1)
            out.append(hp["kd_ratio"] * d / n + (1 - hp["kd_ratio"]) * ce / n)
        return torch.stack(out)

    return fn


def _sorted_l1(lp, lq, hp):
    return (lp.exp().sort(descending=True).values - lq.exp().sort(descending=True).values).abs().sum()


def _matched_kl(lp, lq, hp):
    return hp["matched_weight"] * (lp.exp() * (lp - lq)).sum()


REFERENCES = {
    "uld": Reference(_per_position(_sorted_l1), hparams=({}, {"kd_ratio": 1.0}, {"kd_ratio": 0.2})),
    "gold": Reference(_per_position(_matched_kl), hparams=({}, {"matched_weight": 0.5, "kd_ratio": 0.3})),
}
