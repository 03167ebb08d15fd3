"""Reference formula of DistiLLM-2 (Ko et al. 2025, arXiv 2503.07067; jongwooko/distillm-2
``src/distillm_trainer.py``, ``get_batch_logps`` and ``kd_loss`` with loss_type ``distillm_v2``).

Per row: teacher response (``chosen``) and student response (``rejected_*``); per position ``p`` teacher,
``q`` student::

    loss = (2 − β)·mean_t KL(p ‖ α₁p + (1 − α₁)q) [teacher response] + β·mean_t KL(q ‖ (1 − α₂)p + α₂·sg(q)) [student]

With the curriculum, ``α = clip(1 − (1 − α₀)·m / (gap + 1e-5), 0.01, α₀)`` per example, ``gap`` = ``p̄ − q̄`` on
the teacher response (``q̄ − p̄`` on the student's), ``p̄ = exp(mean_t log p(y_t))``; the anchor ``m`` is the
state's running mean once a batch was seen (else the batch mean), and the state's running mean takes this
batch in while fewer than ``anchor_steps`` batches were seen.
"""

from __future__ import annotations

import math

import torch
from conformance import Reference

lsm = torch.log_softmax


def _positions(mask, b):
    return [j for j in range(mask.shape[1]) if bool(mask[b, j])]


def _mean_label_probs(t, prefix, b):
    pos = _positions(t[f"{prefix}mask"], b)
    labels = [int(t[f"{prefix}labels"][b, j]) for j in pos]
    p = sum(float(lsm(t[f"{prefix}teacher_logits"][b, j].detach(), -1)[y]) for j, y in zip(pos, labels))
    q = sum(float(lsm(t[f"{prefix}student_logits"][b, j].detach(), -1)[y]) for j, y in zip(pos, labels))
    p, q = p / max(len(pos), 1), q / max(len(pos), 1)
    return torch.tensor(p, dtype=torch.float64).exp(), torch.tensor(q, dtype=torch.float64).exp()


def _alphas(t, hp, state):
    rows = t["mask"].shape[0]
    if not hp["adaptive_alpha"]:
        return [hp["alpha"]] * rows, [hp["alpha"]] * rows, dict(state)
    new = dict(state)
    alphas = []
    for prefix, key, sign in (("", "gap_teacher", 1.0), ("rejected_", "gap_student", -1.0)):
        gaps = []
        for b in range(rows):
            p, q = _mean_label_probs(t, prefix, b)
            gaps.append(sign * float(p - q))
        mean_gap = sum(gaps) / rows
        anchor = state[key] if state["anchor_batches"] > 0 else mean_gap
        alphas.append(
            [min(max(1 - (1 - hp["alpha"]) * anchor / (g + 1e-5), 0.01), hp["alpha"]) for g in gaps]
        )
        count = state["anchor_batches"]
        new[key] = (state[key] * count + mean_gap) / (count + 1) if count < hp["anchor_steps"] else state[key]
    new["anchor_batches"] = min(state["anchor_batches"] + 1, hp["anchor_steps"])
    return alphas[0], alphas[1], new


def _distillm2(t, state, **hp):
    assert hp["beta_start"] == hp["beta_end"], "the conformance cases carry no training progress"
    beta = hp["beta_start"]
    a_t, a_s, new_state = _alphas(t, hp, state)
    out = []
    for b in range(t["mask"].shape[0]):
        skl = srkl = torch.zeros((), dtype=torch.float64)
        pos_t, pos_s = _positions(t["mask"], b), _positions(t["rejected_mask"], b)
        for j in pos_t:  # in log space, so 0·log 0 terms (probabilities that underflow) stay 0
            lp, lq = lsm(t["teacher_logits"][b, j].detach(), -1), lsm(t["student_logits"][b, j], -1)
            mix = torch.logaddexp(lp + math.log(a_t[b]), lq + math.log(1 - a_t[b]))
            skl = skl + (lp.exp() * (lp - mix)).sum()
        for j in pos_s:
            lp = lsm(t["rejected_teacher_logits"][b, j].detach(), -1)
            lq = lsm(t["rejected_student_logits"][b, j], -1)
            mix = torch.logaddexp(lp + math.log(1 - a_s[b]), lq.detach() + math.log(a_s[b]))
            srkl = srkl + (lq.exp() * (lq - mix)).sum()
        out.append((2 - beta) * skl / max(len(pos_t), 1) + beta * srkl / max(len(pos_s), 1))
    return torch.stack(out), new_state


REFERENCES = {
    "distillm2": Reference(
        _distillm2,
        hparams=(
            {"beta_end": 1.0},
            {"adaptive_alpha": False, "alpha": 0.3, "beta_start": 1.5, "beta_end": 1.5},
        ),
        state={"gap_teacher": 0.02, "gap_student": -0.01, "anchor_batches": 1.0},
    )
}
