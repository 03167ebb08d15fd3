"""TAID: temporally adaptive interpolated distillation (Shing et al., ICLR 2025, arXiv 2501.16937).

The student is distilled towards an intermediate distribution that moves from its own towards the teacher's::

    p_t = softmax((1 − t)·logit(q'_θ) + t·logit(p))          q'_θ: the student, detached
    J_t = KL(p_t ‖ q_θ)                                        token mean per example

(logits or log-probs: the same ``p_t``). The interpolation parameter ``t`` is the loss's running state, kept by
the training module, saved in checkpoints and restored on resume (``register(state=...)``). After each training
batch it is updated from the relative change of the batch's objective J (token mean over the batch), as in
the released code (SakanaAI/TAID ``src/distil_losses/taid.py``, ``TAID.update_t``)::

    δ  = (J_prev − J) / (J_prev + 1e-15)                  no update on the first batch (J_prev = inf): J_prev = J
    m  ← β·m + (1 − β)·δ                                  momentum (beta 0.99)
    t_target = t_start + (t_end − t_start)·progress      progress = step / total steps (0 when unknown)
    t  ← min(t_end, max(t_target, t + α·sigmoid(m)·(1 − t)))   (adaptive = false: t ← t_target)

The loss of a batch uses the ``t`` from before its update. Defaults are the released code's (t_start 0.4,
t_end 1, α 5e-4, β 0.99; its Phi-3 and Llama-2 scripts use t_start 0.4 and 0.2).

**Paper vs released code.** The paper's objective is the KL divergence J_KL(p_t ‖ q_θ); the code computes the
cross-entropy ``−Σ_v p_t·log q_θ`` (DistiLLM's ``forward_kl``, the entropy of ``p_t`` dropped). Both give the same
gradient, but the entropy term changes J and so the relative change that drives ``t``. ``objective: kl``
(default) is the paper's, ``objective: cross_entropy`` the code's. The code also updates ``t`` on validation
batches (its loss module runs the update on every call); here only training batches update it, so held-out
evaluation does not move the schedule. The code's J is the batch's token mean; so is ours (then, with several
ranks, the updated state is averaged over them).

Mixed with cross-entropy on the labels through ``kd_ratio`` (the code's ``distil_ratio``) by
:func:`~prefdistill.losses.divergence.token_kd` (a top-k teacher cache works too: ``p_t`` on the teacher's top-k).
Metrics (B,): ``kd/divergence`` (J per example), ``taid/t`` (the t this batch used).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from prefdistill.losses.divergence import token_kd
from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice, check_range

_LOG_FLOOR = -1e30


def taid_divergence(
    lp: torch.Tensor, lq: torch.Tensor, *, t: torch.Tensor | float, objective: str
) -> torch.Tensor:
    """KL(p_t ‖ q) (or the cross-entropy −Σ p_t log q) with p_t = softmax((1−t)·log q.detach() + t·log p)."""
    lpt = torch.log_softmax((1.0 - t) * lq.detach() + t * lp, -1).clamp_min(_LOG_FLOOR)
    pt = lpt.exp()
    cross_entropy = -(pt * lq).sum(-1)
    return cross_entropy if objective == "cross_entropy" else (pt * lpt).sum(-1) + cross_entropy


def next_state(
    state: dict[str, torch.Tensor], objective: torch.Tensor, progress: float | None, *, t_start: float,
    t_end: float, alpha: float, beta: float, adaptive: bool,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The schedule state after a batch whose objective (token mean over the batch) was ``objective``."""
    t, prev, momentum = (state[k].detach().float() for k in ("t", "prev_loss", "momentum"))
    objective = objective.detach().float().to(t.device)
    if torch.isinf(prev):  # first batch: remember J only
        return {"t": t, "prev_loss": objective, "momentum": momentum}
    momentum = beta * momentum + (1.0 - beta) * (prev - objective) / (prev + 1e-15)
    target = torch.tensor(t_start + (t_end - t_start) * (progress or 0.0), device=t.device)
    step = alpha * torch.sigmoid(momentum) * (1.0 - t)
    new_t = torch.clamp(torch.maximum(target, t + step), max=t_end) if adaptive else target
    return {"t": new_t, "prev_loss": objective, "momentum": momentum}


def _check(hp: dict) -> None:
    check_range("taid", "t_start", hp["t_start"], 0.0, 1.0, high_open=True)
    check_range("taid", "t_end", hp["t_end"], hp["t_start"], 1.0)
    if hp["t_end"] <= 0:
        raise ValueError(f"loss 'taid': t_end must be > 0, got {hp['t_end']}")
    check_range("taid", "alpha", hp["alpha"], 0.0, 1.0)
    check_range("taid", "beta", hp["beta"], 0.0, 1.0, high_open=True)
    check_range("taid", "kd_ratio", hp["kd_ratio"], 0.0, 1.0)
    check_choice("taid", "objective", hp["objective"], ("kl", "cross_entropy"))
    if not hp["adaptive"] and (hp["alpha"], hp["beta"]) != (_HPARAMS["alpha"], _HPARAMS["beta"]):
        raise ValueError("loss 'taid': alpha and beta drive the adaptive update, which adaptive=false turns off: "
                         "remove them or set adaptive=true")  # fmt: skip


def _initial_state(hp: dict) -> dict[str, float]:
    return {"t": hp["t_start"], "prev_loss": math.inf, "momentum": 0.0}


_HPARAMS = {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "adaptive": True, "objective": "kl",
            "kd_ratio": 1.0}  # fmt: skip


@register(
    "taid", kind="token", needs={"teacher", "token_logps"}, validate=_check, state=_initial_state, hparams=_HPARAMS,
    summary="KL(p_t ‖ q_S) to the interpolation p_t = softmax((1−t)·z_S + t·z_T), t adapted during training "
            "(state, checkpointed)",
    source="TAID, Shing et al., ICLR 2025 (arXiv 2501.16937); SakanaAI/TAID src/distil_losses/taid.py",
)  # fmt: skip
def taid(
    x: TokenInputs, *, state: dict[str, torch.Tensor], t_start: float, t_end: float, alpha: float, beta: float,
    adaptive: bool, objective: str, kd_ratio: float,
) -> LossOutput:  # fmt: skip
    """Distillation towards the interpolated target at the state's ``t``, then the schedule update."""
    schedule = {"t_start": t_start, "t_end": t_end, "alpha": alpha, "beta": beta, "adaptive": adaptive}
    _check({**schedule, "objective": objective, "kd_ratio": kd_ratio})
    t = state["t"].detach().float().to(x.student_logits.device)
    out = token_kd(partial(taid_divergence, t=t, objective=objective), x, temperature=1.0, kd_ratio=kd_ratio)
    tokens = x.mask.bool().sum(-1).float()
    batch_objective = (out.metrics["kd/divergence"] * tokens).sum() / tokens.sum().clamp_min(1.0)
    new = next_state(state, batch_objective, x.progress, **schedule)
    return LossOutput(out.loss, {**out.metrics, "taid/t": t.expand_as(tokens)}, new)
