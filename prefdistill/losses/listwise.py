"""PAD listwise preference distillation (Gu et al., ACL Findings 2025, arXiv 2502.14272).

Each prompt comes with ``n`` responses. The student's score of response i is
``s_S,i = β·A_θ(y_i|x) = β·S_θ(y_i|x)/|y_i|`` (length-averaged log-prob, gradient flows); the
teacher's is ``s_T,i = β·r_T(y_i)`` where ``r_T`` (the mixed teacher reward, in PAD's released
config the log MCQ-calibrated selection probability) is computed upstream. Scores define
Plackett-Luce (PL) distributions over the n! rankings τ::

    log P(τ) = Σ_k [ s_{τ_k} − logsumexp_{m≥k} s_{τ_m} ]

* ``pad_pd`` ("probabilistic preference distillation", PAD's ``loss_type=pd``, the one used): a
  divergence between ``P_S`` and ``P_T`` over all n! rankings, in log space, in one of two forms
  (``divergence``; see :func:`pad_pd` for both side by side). Enumerates n! rankings, so n ≤ 8
  (n = 4 in PAD; 6 → 720 rankings is fine).
* ``pad_rd`` (``loss_type=rd``): PL negative log-likelihood of the teacher's ranking
  ``τ* = argsort(s_T, descending)``: ``−log P_S(τ*)``, O(n log n). Only the teacher's
  *order* matters (ties broken by response index).

Both are invariant to adding a constant to all student scores (PL is shift-invariant);
``pad_pd`` with ``divergence="jsd"`` is 0 iff ``s_S = s_T + c``. Teacher scores are detached. Lists
are assumed full (no masking). The Plackett-Luce log-probabilities and the divergences are computed
in float64 (at most 8! × 8 entries): at β = 10 float32's ``logcumsumexp`` backward loses up to 0.5 %
of the gradient norm. Source of defaults: EganGu/PAD ``scripts/simpo_trainer.py`` and
``training_configs/gemma-2-2b-it-pd.yaml`` (β = 10).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from prefdistill.losses.inputs import ListwiseInputs
from prefdistill.losses.registry import LossOutput, register

MAX_PD_LIST_SIZE = 8  # 8! = 40,320 rankings; 9! would be 362,880 per example.


@functools.cache
def _permutations(n: int, device: torch.device) -> torch.Tensor:
    """All n! rankings as a (n!, n) long index tensor, identity first (itertools order).

    Built outside inference mode: the cached tensor is shared by validation (inference mode)
    and training steps, and an inference tensor cannot take part in autograd.
    """
    with torch.inference_mode(False):
        return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long, device=device)


def _ranking_logprob(ordered: torch.Tensor) -> torch.Tensor:
    """PL log-prob of scores already arranged in ranking order (..., n) -> (...).

    ``Σ_k [x_k − logsumexp_{m≥k} x_m]`` via a reversed cumulative logsumexp, O(n).
    """
    tail_lse = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    return (ordered - tail_lse).sum(-1)


def plackett_luce_logprobs(scores: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of every ranking under PL(scores): (B, n) -> (B, n!).

    Column j is the ranking ``itertools.permutations(range(n))[j]`` (column 0 = identity).
    The largest intermediate is the (B, n!, n) gathered score tensor.
    """
    perms = _permutations(scores.shape[-1], scores.device)
    return _ranking_logprob(scores[:, perms])


def _metrics(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
    s, t = student.detach(), teacher.detach()
    return {
        "listwise/teacher_top1_agreement": (s.argmax(-1) == t.argmax(-1)).float(),
        "listwise/student_score_mean": s.mean(-1).float(),
    }


def _kl_to_mixture(log_p: torch.Tensor, log_m: torch.Tensor) -> torch.Tensor:
    """Σ_τ P(τ)·(log P(τ) − log M(τ)), (B, R) -> (B,)."""
    return (log_p.exp() * (log_p - log_m)).sum(-1)


_SOURCE = "Gu et al., ACL Findings 2025 (arXiv 2502.14272); EganGu/PAD scripts/simpo_trainer.py loss_type={}"


def _scores(x: ListwiseInputs, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student ``β·A_θ`` and detached teacher ``β·r_T``, float64 (B, n)."""
    logps, lengths, teacher = x.checked()
    return beta * logps.double() / lengths.double(), beta * teacher.double()


def jensen_shannon(log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
    """``½KL(P_S‖M) + ½KL(P_T‖M)``, ``M = ½(P_S + P_T)`` per example: (B, R) log-probs -> (B,), in [0, log 2]."""
    log_m = torch.logaddexp(log_ps, log_pt) - math.log(2.0)
    return 0.5 * _kl_to_mixture(log_ps, log_m) + 0.5 * _kl_to_mixture(log_pt, log_m)


def released_pd(log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
    """EganGu/PAD ``jenson_shannon_divergence(log P_S, log P_T, log=True)``: (B, R) -> (B,).

    ``log M = logsumexp over the 2B rows of [log P_S; log P_T] + log ½`` (one M for the micro-batch), then
    ``F.kl_div(log P, log M, log_target=True).sum(-1) = Σ_τ M(τ)(log M(τ) − log P(τ)) = KL(M‖P)`` for
    P = P_S and P = P_T, halved and summed.
    """
    log_m = torch.logsumexp(torch.cat([log_ps, log_pt], 0), 0, keepdim=True) - math.log(2.0)  # (1, R)
    m = log_m.exp()
    return 0.5 * ((m * (log_m - log_ps)).sum(-1) + (m * (log_m - log_pt)).sum(-1))


PD_DIVERGENCES = {"jsd": jensen_shannon, "released": released_pd}


def _check_pd(hp: dict) -> None:
    if hp["divergence"] not in PD_DIVERGENCES:
        raise ValueError(f"loss 'pad_pd': divergence must be one of {list(PD_DIVERGENCES)}, got {hp['divergence']!r}")


@register(
    "pad_pd", kind="listwise", needs={"scores"}, hparams={"beta": 10.0, "divergence": "jsd"}, validate=_check_pd,
    source=_SOURCE.format("pd") + " (pd_loss, jenson_shannon_divergence)",
)  # fmt: skip
def pad_pd(x: ListwiseInputs, *, beta: float, divergence: str) -> LossOutput:
    """PAD probabilistic preference distillation: a divergence between student and teacher PL, (B,).

    ``logps`` (B, n) are the student's summed response log-probs, ``lengths`` (B, n) the
    response token counts, ``teacher_scores`` (B, n) the teacher rewards r_T (detached).
    Raises ``ValueError`` for n > 8: use ``pad_rd`` or decompose the list. The two forms:

    * ``divergence="jsd"`` (the paper's stated objective, the default): the Jensen-Shannon divergence
      ``½KL(P_S‖M) + ½KL(P_T‖M)``, ``M = ½(P_S + P_T)`` of each example. Bounded by log 2, 0 iff the
      student's scores equal the teacher's up to a constant; separable over the batch.
    * ``divergence="released"``: exactly what EganGu/PAD's released ``pd_loss`` computes
      (``scripts/simpo_trainer.py``): ``½[Σ_τ M(log M − log P_S) + Σ_τ M(log M − log P_T)]``, i.e.
      ``½[KL(M‖P_S) + KL(M‖P_T)]`` (``F.kl_div``'s argument order: its first argument is the log of the
      *second* distribution), with **M pooled over the micro-batch**: ``M = ½ Σ_{b'} (P_S,b' + P_T,b')``,
      a logsumexp over ``torch.cat(dim=0)`` of every example's student and teacher distributions (mass B,
      not 1, for B > 1). The per-example loss therefore depends on its batch-mates (the micro-batch is what
      the module passes: ``data.batch_size`` per device), it is unbounded, and it is not 0 when the student
      matches the teacher. Same β scaling of both scores, same log-space computation.

    Consequence for the learning rate: at PAD's β = 10 the PL distributions are nearly one-hot, the JSD
    saturates near log 2 and its gradient is about 10² times smaller than the released form's (same
    direction up to cosine ≈ 0.9). PAD's lr 8e-7 was tuned on the released form, so reproducing PAD's
    numbers needs ``divergence=released`` (``experiment=pad_gemma2_ultrafeedback`` sets it); with ``jsd``
    at β = 10 expect to need a learning rate around two orders of magnitude larger, or a smaller β.
    The released trainer also rescales the loss by the micro-batch's share of the accumulated batch's
    response tokens; that is a trainer-level weighting, not part of ``pd_loss``, and is not reproduced.
    """
    _check_pd({"divergence": divergence})
    n = x.logps.shape[-1]
    if n > MAX_PD_LIST_SIZE:
        raise ValueError(
            f"pad_pd enumerates all n! rankings; n={n} gives {math.factorial(n):,} rankings per "
            f"example (limit n={MAX_PD_LIST_SIZE}). Use 'pad_rd' (O(n log n)) or decompose the "
            "list into sub-lists of at most 8 responses."
        )
    student, teacher = _scores(x, beta)
    loss = PD_DIVERGENCES[divergence](plackett_luce_logprobs(student), plackett_luce_logprobs(teacher))
    return LossOutput(loss.float(), _metrics(student, teacher))


@register("pad_rd", kind="listwise", needs={"scores"}, hparams={"beta": 10.0}, source=_SOURCE.format("rd"))
def pad_rd(x: ListwiseInputs, *, beta: float) -> LossOutput:
    """PAD ranking distillation: ``−log P_S(τ*)``, τ* the teacher's descending order, (B,).

    Same inputs as :func:`pad_pd`. Not zero when student and teacher agree: the minimum
    over student scores is approached only as the student's score gaps grow. Invariant to
    adding a constant to the student scores and to any strictly increasing map of the
    teacher scores; with all student scores equal it is ``log n!``.
    """
    student, teacher = _scores(x, beta)
    order = torch.argsort(teacher, dim=-1, descending=True, stable=True)
    nll = -_ranking_logprob(student.gather(-1, order))
    return LossOutput(nll.float(), _metrics(student, teacher))
