"""MiniLLM (Gu et al., ICLR 2024): reverse KL(q_θ ‖ p) minimised by policy gradient.

On responses ``y`` sampled during training (the module draws them from the teacher-mixed
proposal ``p̃ = α·p + (1−α)·q_old``, α = 0.2), the per-token reward is
``r_t = log p(y_t|y_<t) − log q_old(y_t|y_<t)`` (teacher vs. the policy that sampled). The
gradient of the sequence-level reverse KL is split as in the paper (single-step decomposition)::

    L_b = mean_{t ∈ response} [ L_long,t + L_single,t ]
    L_single,t = KL(q_θ(·|y_<t) ‖ p(·|y_<t))                       exact, over the vocabulary
    L_long,t   = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1−ε, 1+ε))            PPO-style clipped policy gradient
    ρ_t        = exp(log q_θ(y_t) − log q_old(y_t)) · w_t,   w_t = q_old(y_t) / p̃(y_t)
    A_t        = reward_scale · Σ_{t'>t} γ^{t'−t−1} r_{t'} / #{t' > t}   (length-normalised future return)

``A_t`` uses only the *future* rewards (R_{t+1} in the paper): the current step's term is covered
exactly by ``L_single``. ``w_t`` is the token-level importance weight of teacher-mixed sampling;
without a proposal (plain on-policy samples) it is 1. The proposal's log-probs come as
``proposal_logps`` or are formed here from the teacher's and the sampling policy's log-probs and
the batch's ``sample_mix`` α (``log(α·p(y_t) + (1−α)·q_old(y_t))``). Without ``sample_logps`` the
samples are taken to come from the current policy (``q_old = q_θ`` detached, so ρ = w).

Differences from the released code (microsoft/LMOps ``minillm/losses.py``), stated so results can
be read against it: the code's return includes the current reward and divides by the remaining
length including t, and it whitens advantages over the batch; we keep the paper's R_{t+1} and do
not whiten, so each example's loss is independent of its batch (gradient accumulation equals a
larger batch). The pre-training LM term ``lm_coef·L_PT`` on a separate corpus is not part of this
loss; combine with a data-mixing run if wanted.

Inputs are aligned like every token loss: ``student_logits[b, t]`` predicts ``labels[b, t]``
(the sampled token), ``mask`` marks response tokens. ``teacher_logits`` must be the full
vocabulary (the single-step KL and the reward need p at every sampled token).
Metrics (B,): ``minillm/reverse_kl`` (L_single token mean), ``minillm/pg`` (L_long),
``minillm/reward`` (mean r_t, the per-token log-ratio), ``minillm/ratio`` (mean ρ).
``length_norm="mean"`` divides each future return by the number of future tokens (the paper's
length normalisation), ``"sum"`` keeps the discounted sum.
"""

from __future__ import annotations

import math

import torch

from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import check_choice

_LOG_FLOOR = -1e30


def future_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float, length_norm: bool
) -> torch.Tensor:
    """(B, T): Σ_{t'>t} γ^{t'−t−1}·r_{t'} over masked t' (÷ #masked t' > t when ``length_norm``)."""
    rewards = torch.where(mask.bool(), rewards, 0.0)
    returns = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 2, -1, -1):
        running = rewards[:, t + 1] + gamma * running
        returns[:, t] = running
    if length_norm:
        future = mask.flip(-1).cumsum(-1).flip(-1) - mask  # masked positions strictly after t
        returns = returns / future.clamp_min(1)
    return returns


def _check(hp: dict) -> None:
    check_choice("minillm", "length_norm", hp["length_norm"], ("mean", "sum"))
    if hp["temperature"] <= 0:
        raise ValueError(f"loss 'minillm': temperature must be > 0, got {hp['temperature']}")
    if hp["clip"] < 0:
        raise ValueError(f"loss 'minillm': clip must be >= 0, got {hp['clip']}")


def proposal_logps(teacher_token_logps: torch.Tensor, sample_logps: torch.Tensor, mix: float) -> torch.Tensor:
    """log p̃(y_t) of the teacher-mixed proposal ``p̃ = α·p + (1−α)·q_old`` at the sampled tokens."""
    if mix >= 1.0:
        return teacher_token_logps
    return torch.logaddexp(teacher_token_logps + math.log(mix), sample_logps + math.log1p(-mix))


@register(
    "minillm", kind="token", needs={"teacher", "token_logps", "policy_samples"}, validate=_check,
    hparams={"clip": 0.2, "gamma": 0.95, "reward_scale": 0.5, "length_norm": "mean", "single_step": True,
             "temperature": 1.0},
    source="Gu et al., ICLR 2024 (arXiv 2306.08543); microsoft/LMOps minillm/losses.py",
)  # fmt: skip
def minillm(
    x: TokenInputs, *, clip: float, gamma: float, reward_scale: float, length_norm: str, single_step: bool,
    temperature: float,
) -> LossOutput:  # fmt: skip
    """Single-step decomposed policy gradient of KL(q_θ ‖ p) on policy samples; see the module docstring."""
    _check({"length_norm": length_norm, "temperature": temperature, "clip": clip})
    if x.labels is None or x.teacher_logits is None:
        raise ValueError("loss 'minillm' needs labels (the sampled tokens) and full teacher_logits")
    mask = x.mask.bool()
    maskf = mask.float()
    safe_labels = x.labels.masked_fill(~mask, 0).long().unsqueeze(-1)
    keep = mask[..., None]  # masked positions may hold NaN logits: select them away before any arithmetic,
    student = torch.where(keep, x.student_logits.float(), 0.0)  # or NaN reaches the gradient (0 * NaN)
    lq = torch.log_softmax(student / temperature, -1).clamp_min(_LOG_FLOOR)
    with torch.no_grad():
        teacher = torch.where(keep, x.teacher_logits.detach().float(), 0.0)
        lp = torch.log_softmax(teacher / temperature, -1).clamp_min(_LOG_FLOOR)
    token_q = lq.gather(-1, safe_labels).squeeze(-1)  # (B, T) log q_θ(y_t), with grad
    token_p = lp.gather(-1, safe_labels).squeeze(-1)
    old = token_q.detach() if x.sample_logps is None else x.sample_logps.detach().float()
    with torch.no_grad():
        # masked positions may hold anything (even NaN) in the inputs: select, never multiply
        rewards = torch.where(mask, token_p - old, 0.0)
        advantages = reward_scale * future_returns(rewards, maskf, gamma, length_norm == "mean")
        proposal = x.proposal_logps
        if proposal is None and x.sample_mix > 0:
            proposal = proposal_logps(token_p, old, x.sample_mix)
        weights = torch.ones_like(old) if proposal is None else torch.where(mask, old - proposal.float(), 0.0).exp()
    ratio = torch.where(mask, token_q - old, 0.0).exp() * weights
    pg = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip))
    count = maskf.sum(-1).clamp_min(1)

    def token_mean(t: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, t, 0.0).sum(-1) / count

    reverse_kl = (lq.exp() * (lq - lp)).sum(-1)  # (B, T) KL(q_t ‖ p_t)
    loss = token_mean(pg)
    if single_step:
        loss = loss + token_mean(reverse_kl)
    metrics = {
        "minillm/reverse_kl": token_mean(reverse_kl).detach(),
        "minillm/pg": token_mean(pg).detach(),
        "minillm/reward": token_mean(rewards).detach(),
        "minillm/ratio": token_mean(ratio).detach(),
    }
    return LossOutput(loss, metrics)
