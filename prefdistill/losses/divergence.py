"""Token-level knowledge distillation on a shared vocabulary (teacher forcing).

At every distilled position the teacher's next-token distribution ``p`` and the student's
``q_θ`` (both ``softmax(logits / τ)``) are compared with a divergence D; the result is mixed
with the student's cross-entropy on the labels::

    loss_b = (1 − kd_ratio)·CE_b + kd_ratio·τ²·KD_b
    KD_b   = Σ_{t: mask[b,t]} D(p_t, q_t) / #{t: mask[b,t]}     (token mean per example)
    CE_b   = Σ_{t: mask[b,t]} −log q_θ(labels[b,t]) / #{t: mask[b,t]}   (at τ = 1)

Examples without masked tokens get 0. The τ² factor (Hinton et al. 2015) keeps gradient
scale comparable across temperatures and is applied to every divergence (a no-op at the
default τ = 1; note TRL's GKD does not multiply by τ²).

Divergences (Hinton 2015; GKD, Agarwal et al. 2024; DistiLLM, Ko et al. 2024):

* ``kd_fkl``  forward KL(p ‖ q)                          (Hinton KD; DistiLLM/MiniLLM ``forward_kl``)
* ``kd_rkl``  reverse KL(q ‖ p)                          (MiniLLM's single-step term)
* ``kd_tvd``  ½ Σ_v |p − q|                              (f-distill)
* ``kd_jsd``  β·KL(p ‖ m) + (1−β)·KL(q ‖ m), m = βp + (1−β)q   (GKD / TRL ``generalized_jsd_loss``).
  β = 0 is special-cased to forward KL(p‖q) and β = 1 to reverse KL(q‖p), exactly as TRL
  does. The formula itself vanishes at both ends (≈ β·KL(p‖q) for small β, ≈ (1−β)·KL(q‖p)
  near 1), so the loss is discontinuous at the endpoints. JSD_β(p‖q) = JSD_{1−β}(q‖p).
* ``kd_skl``  skew KL(p ‖ αp + (1−α)q)                   (DistiLLM; α = 0 is forward KL)
* ``kd_srkl`` skew reverse KL(q ‖ (1−α)p + αq)           (DistiLLM; α = 0 is reverse KL)

All divergences are exact KLs (DistiLLM's code drops the constant teacher entropy in FKL/SKL;
same gradients, but ours is 0 when p = q). Everything is float32 and in log space; log-probs
are floored at -1e30 so zero probabilities (e.g. ``-inf`` logits) give no NaN values or
gradients. Teacher inputs are detached.

**Top-k teacher.** Instead of ``teacher_logits`` a caller may pass ``teacher_topk_logps`` and
``teacher_topk_ids`` (B, T, k). Convention (one for all divergences): *both* distributions are
restricted to the teacher's top-k support S and renormalised on it, ``p_S = softmax(logp_k/τ)``,
``q_S = softmax(z_S[ids]/τ)``, and D is computed on S. Consequence: the student's probability
mass outside S is never penalised by the KD term (only the CE term, kd_ratio < 1, sees it), and
D = 0 as soon as the student's *relative* probabilities on S match the teacher's. With k = V
this is the full-logits path (up to float rounding). ``teacher_topk_ids`` must be valid ids.
With ``teacher_tail_logps`` (top-k + tail bucket) or ``teacher_sample_weights`` (sampled tokens, RS-KD)
the teacher's support is read as :mod:`prefdistill.losses.sparse_teacher` states: the tail bucket for
every divergence, the unbiased sampled estimate for ``kd_fkl`` and ``kd_skl`` only.

Inputs are aligned: ``student_logits[b, t]`` predicts ``labels[b, t]`` (the caller shifts).
``labels`` must be a valid token id wherever ``mask`` is True (it may be -100 elsewhere); it
may be None when ``kd_ratio == 1``. Only the masked rows are gathered before the softmaxes, so
prompt/padding positions cost nothing. Metrics, (B,) detached: ``kd/divergence`` (= τ²·KD_b)
and ``kd/ce`` (CE_b, when labels are given).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import TokenInputs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.sparse_teacher import POINTWISE, sampled_divergence, tail_bucket_logprobs
from prefdistill.losses.terms import check_range

_NEEDS = frozenset({"teacher", "token_logps"})
_LOG_FLOOR = -1e30  # finite stand-in for log 0: exp() is exactly 0, differences stay finite


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) over the last dim from log-probs; 0·log 0 = 0. (..., V) -> (...)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·a + (1−w)·b), exact at w ∈ {0, 1}."""
    if w == 0.0:
        return log_b
    if w == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w)).clamp_min(_LOG_FLOOR)


def _fkl(lp, lq):
    return _kl(lp, lq)


def _rkl(lp, lq):
    return _kl(lq, lp)


def _tvd(lp, lq):
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def _jsd(lp, lq, beta):
    if beta == 0.0:
        return _kl(lp, lq)
    if beta == 1.0:
        return _kl(lq, lp)
    lm = _log_mix(lp, lq, beta)
    return beta * _kl(lp, lm) + (1.0 - beta) * _kl(lq, lm)


def _skl(lp, lq, alpha):
    return _kl(lp, _log_mix(lp, lq, alpha))


def _srkl(lp, lq, alpha):
    return _kl(lq, _log_mix(lp, lq, 1.0 - alpha))


def _selected_logprobs(student_rows, mask, teacher_logits, topk_logps, topk_ids, temperature):
    """Teacher / student log-probs (N, V or k) at the N masked positions, float32, floored.

    ``student_rows`` (N, V) are the student logits already selected with ``mask``.
    """
    use_topk = topk_logps is not None or topk_ids is not None
    if (teacher_logits is not None) == use_topk or (use_topk and (topk_logps is None or topk_ids is None)):
        raise ValueError("pass exactly one of teacher_logits or (teacher_topk_logps, teacher_topk_ids)")
    student = student_rows / temperature
    if teacher_logits is not None:
        teacher = teacher_logits.detach()[mask].float() / temperature
    else:
        teacher = topk_logps.detach()[mask].float() / temperature
        student = student.gather(-1, topk_ids[mask].long())
    lp = torch.log_softmax(teacher, -1).clamp_min(_LOG_FLOOR)
    lq = torch.log_softmax(student, -1).clamp_min(_LOG_FLOOR)
    return lp, lq


def _token_divergence(divergence, x: TokenInputs, mask, student_rows, temperature: float, div_kw: dict):
    """(N,) D(p, q) at the masked positions, for every teacher format (``sparse_teacher.py``)."""
    if x.teacher_sample_weights is not None:  # sampled tokens: unbiased estimate of a teacher expectation
        if divergence not in _POINTWISE_OF:
            raise ValueError(
                f"loss {x.loss_name!r} is not an expectation under the teacher; a sampled teacher estimates "
                f"only {sorted(n for n, _ in _POINTWISE_OF.values())}"
            )
        name, kw = _POINTWISE_OF[divergence]
        return sampled_divergence(
            POINTWISE[name], student_rows, x.teacher_topk_logps[mask], x.teacher_topk_ids[mask],
            x.teacher_sample_weights[mask], loss=x.loss_name, temperature=temperature,
            **{k: div_kw[v] for k, v in kw.items()},
        )  # fmt: skip
    if x.teacher_tail_logps is not None:  # top-k + the teacher's mass outside it
        lp, lq = tail_bucket_logprobs(
            student_rows, x.teacher_topk_logps[mask], x.teacher_topk_ids[mask], x.teacher_tail_logps[mask],
            loss=x.loss_name, temperature=temperature,
        )  # fmt: skip
    else:
        lp, lq = _selected_logprobs(
            student_rows, mask, x.teacher_logits, x.teacher_topk_logps, x.teacher_topk_ids, temperature
        )
    return divergence(lp, lq, **div_kw)


def token_kd(
    divergence: Callable[..., torch.Tensor], x: TokenInputs, *, temperature: float, kd_ratio: float, **div_kw
) -> LossOutput:
    """The one shared mask-and-normalise path: per-token D -> per-example token mean, CE mix."""
    if temperature <= 0:
        raise ValueError(f"loss {x.loss_name!r}: temperature must be > 0, got {temperature}")
    check_range(x.loss_name, "kd_ratio", kd_ratio, 0.0, 1.0)
    for name, value in div_kw.items():
        check_range(x.loss_name, name, value, 0.0, 1.0)
    mask = x.mask.bool()
    student_rows = x.student_logits[mask].float()  # (N, V): only distilled positions are computed
    rows = mask.nonzero(as_tuple=True)[0]  # example index of each selected position
    count = mask.sum(-1).clamp_min(1).float()

    def per_example(tok: torch.Tensor) -> torch.Tensor:
        return tok.new_zeros(mask.shape[0]).index_add(0, rows, tok) / count

    kd = temperature**2 * per_example(
        _token_divergence(divergence, x, mask, student_rows, temperature, div_kw)
    )
    metrics = {"kd/divergence": kd.detach()}
    loss = kd_ratio * kd
    if x.labels is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and kd_ratio < 1.0):
            ce = per_example(F.cross_entropy(student_rows, x.labels[mask].long(), reduction="none"))
        metrics["kd/ce"] = ce.detach()
        if kd_ratio < 1.0:
            loss = loss + (1.0 - kd_ratio) * ce
    elif kd_ratio < 1.0:
        raise ValueError(f"kd_ratio={kd_ratio} < 1 mixes in cross-entropy, which needs labels")
    return LossOutput(loss, metrics)


# divergences that are expectations under the teacher: their integrand in sparse_teacher.POINTWISE and
# which of their hyper-parameters it takes (sampled teachers estimate only these)
_POINTWISE_OF = {_fkl: ("forward_kl", {}), _skl: ("skew_kl", {"alpha": "alpha"})}

# ---------------------------------------------------------------- registered losses: one table
_KD = {"temperature": 1.0, "kd_ratio": 1.0}
# fmt: off
_FAMILY = [  # name, divergence D(p, q), its own hyper-parameters, summary, source
    ("kd_fkl", _fkl, {}, "Forward KL(p_T ‖ q_S), token mean per example",
     "Hinton et al. 2015; DistiLLM/MiniLLM forward_kl"),
    ("kd_rkl", _rkl, {}, "Reverse KL(q_S ‖ p_T), token mean per example",
     "MiniLLM's single-step term (Gu et al., ICLR 2024); f-distill RKL"),
    ("kd_tvd", _tvd, {}, "Total variation ½Σ|p_T − q_S|, token mean per example",
     "f-distill (Wen et al., ACL 2023)"),
    ("kd_jsd", _jsd, {"beta": 0.5}, "Generalized JSD_β (endpoints special-cased), token mean per example",
     "GKD (Agarwal et al., ICLR 2024); TRL generalized_jsd_loss"),
    ("kd_skl", _skl, {"alpha": 0.1}, "Skew KL(p_T ‖ αp_T + (1−α)q_S), token mean per example",
     "DistiLLM (Ko et al., ICML 2024) distillm/losses.py"),
    ("kd_srkl", _srkl, {"alpha": 0.1}, "Skew reverse KL(q_S ‖ (1−α)p_T + αq_S), token mean per example",
     "DistiLLM (Ko et al., ICML 2024) distillm/losses.py"),
]
# fmt: on


def _check_unit_interval(hp: dict) -> None:
    for key in ("kd_ratio", "beta", "alpha"):
        if key in hp:
            check_range("token KD", key, hp[key], 0.0, 1.0)


for _name, _divergence, _extra, _summary, _source in _FAMILY:
    register(
        _name, kind="token", needs=_NEEDS, hparams={**_extra, **_KD}, summary=_summary, source=_source,
        validate=_check_unit_interval,
        teacher_formats=("topk", "topk_tail", *(("sampled",) if _divergence in _POINTWISE_OF else ())),
    )(partial(token_kd, _divergence))  # fmt: skip
