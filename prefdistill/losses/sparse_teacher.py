"""Divergences against a teacher known on a sparse support: top-k with a tail bucket, and sampled tokens.

The teacher tables of ``prefdistill/modules/teacher_formats.py`` reach the token losses through
:class:`~prefdistill.losses.inputs.TokenInputs`: ``teacher_topk_logps`` / ``teacher_topk_ids`` (B, T, k) as
for a plain top-k teacher, plus

* ``teacher_tail_logps`` (B, T): log of the teacher's mass outside its top-k. :func:`tail_bucket_logprobs`
  returns both distributions on the k + 1 categories {the k tokens, everything else}: the teacher's values
  as stored (not renormalised on the top-k), the student's full-softmax log-probs at the k ids and its own
  mass outside them, ``log Σ_{v ∉ S} exp z_v − log Σ_v exp z_v`` (from the logits: no cancellation when the
  student puts almost all of its mass on S). Any divergence then applies to these (k + 1)-category
  distributions: a coarse-graining of the full ones, so D is a lower bound of the full-vocabulary D
  (data-processing inequality), exact when the teacher's tail is 0 and the student's tail is too.
* ``teacher_sample_weights`` (B, T, n): Random-Sampling KD (Anshumann et al., ACL 2025, arXiv
  2503.16870). ``teacher_topk_ids`` hold the n distinct tokens drawn from the teacher (weight 0: unused
  slot) and ``teacher_topk_logps`` the teacher's log-probs at them. A divergence that is an expectation
  under the teacher, ``D(p, q) = Σ_v p_v f(p_v, q_v)``, is estimated by ``Σ_j w_j f(p_{v_j}, q_{v_j})``
  with the student's *full-vocabulary* log-probs at the drawn ids (not renormalised on them):
  ``E[w_v] = p_v`` makes the estimate, and its gradient, unbiased. :data:`POINTWISE` holds ``f`` for
  forward KL (``f = log p − log q``; its gradient in the student's logits is ``(Σ_j w_j) q − w``, whose
  expectation is ``q − p``, the full forward KL's) and skew KL (``f = log p − log(αp + (1−α)q)``).
  Reverse KL, JSD and TVD are not expectations under the teacher (they need ``p`` wherever the student
  puts mass) and refuse sampled teachers.

Both read the teacher at temperature 1 (the stored values); another temperature is refused, since the
tail mass or the draws of ``p^(1/τ)`` cannot be recovered from those of ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_LOG_FLOOR = -1e30


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w·a + (1−w)·b) elementwise."""
    if w == 0.0:
        return log_b
    return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w)) if w < 1.0 else log_a


# f(log p_v, log q_v) of divergences that are teacher expectations: D(p, q) = Σ_v p_v f(log p_v, log q_v)
POINTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": lambda lp, lq: lp - lq,
    "skew_kl": lambda lp, lq, alpha: lp - _log_mix(lp, lq, alpha).clamp_min(_LOG_FLOOR),
}


def _at_temperature_one(loss: str, temperature: float, what: str) -> None:
    if temperature != 1.0:
        raise ValueError(
            f"loss {loss!r}: a {what} teacher is stored at temperature 1 and cannot be re-tempered; "
            f"got temperature={temperature} (use the plain top-k format or an online teacher)"
        )


def tail_bucket_logprobs(
    student_rows: torch.Tensor, topk_logps: torch.Tensor, topk_ids: torch.Tensor, tail_logps: torch.Tensor,
    *, loss: str = "loss", temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Teacher and student log-probs (N, k + 1) on {top-k ids, tail}: ``student_rows`` (N, V) logits,
    ``topk_logps`` / ``topk_ids`` (N, k) and ``tail_logps`` (N,) of the teacher, at N positions."""
    _at_temperature_one(loss, temperature, "top-k + tail")
    ids = topk_ids.long()
    lp = torch.cat([topk_logps.detach().float(), tail_logps.detach().float()[:, None]], -1)
    lp = torch.log_softmax(lp.clamp_min(_LOG_FLOOR), -1)  # stored rounding: the k + 1 values sum to 1 again
    total = torch.logsumexp(student_rows, -1, keepdim=True)
    outside = torch.logsumexp(student_rows.scatter(-1, ids, float("-inf")), -1, keepdim=True)
    lq = torch.cat([student_rows.gather(-1, ids), outside], -1) - total
    return lp, lq.clamp_min(_LOG_FLOOR)


def sampled_divergence(
    f: Callable[..., torch.Tensor], student_rows: torch.Tensor, logps: torch.Tensor, ids: torch.Tensor,
    weights: torch.Tensor, *, loss: str = "loss", temperature: float = 1.0, **f_kw,
) -> torch.Tensor:  # fmt: skip
    """(N,) unbiased estimates ``Σ_j w_j f(log p_j, log q_j)`` at N positions from the drawn ``ids``, the
    teacher's ``logps`` and the importance ``weights`` (N, n), with the student's full log-softmax of
    ``student_rows`` (N, V) at those ids."""
    _at_temperature_one(loss, temperature, "sampled")
    lq = torch.log_softmax(student_rows, -1).gather(-1, ids.long()).clamp_min(_LOG_FLOOR)
    w = weights.detach().float()
    terms = f(logps.detach().float().clamp_min(_LOG_FLOOR), lq, **f_kw)
    return (w * torch.where(w > 0, terms, 0.0)).sum(-1)
