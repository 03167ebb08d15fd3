"""PAD listwise preference distillation (Gu et al., ACL Findings 2025, arXiv 2502.14272).

Each prompt comes with ``n`` responses. The student's score of response i is
``s_S,i = β·A_θ(y_i|x) = β·S_θ(y_i|x)/|y_i|`` (length-averaged log-prob, gradient flows); the
teacher's is ``s_T,i = β·r_T(y_i)`` where ``r_T`` (the mixed teacher reward, in PAD's released
config the log MCQ-calibrated selection probability) is computed upstream. Scores define
Plackett-Luce (PL) distributions over the n! rankings τ::

    log P(τ) = Σ_k [ s_{τ_k} − logsumexp_{m≥k} s_{τ_m} ]

* ``pad_pd`` ("probabilistic preference distillation", PAD's ``loss_type=pd``, the one used):
  ``JSD(P_S ‖ P_T) = ½KL(P_S‖M) + ½KL(P_T‖M)``, ``M = ½(P_S + P_T)``, over all n! rankings,
  in log space. Enumerates n! rankings, so n ≤ 8 (n = 4 in PAD; 6 → 720 rankings is fine).
* ``pad_rd`` (``loss_type=rd``): PL negative log-likelihood of the teacher's ranking
  ``τ* = argsort(s_T, descending)``: ``−log P_S(τ*)``, O(n log n). Only the teacher's
  *order* matters (ties broken by response index).

Both are invariant to adding a constant to all student scores (PL is shift-invariant);
``pad_pd`` is 0 iff ``s_S = s_T + c``. Teacher scores are detached. Lists are assumed full
(no masking). Source of defaults: EganGu/PAD ``scripts/simpo_trainer.py`` and
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
        "listwise/student_score_mean": s.mean(-1),
    }


def _kl_to_mixture(log_p: torch.Tensor, log_m: torch.Tensor) -> torch.Tensor:
    """Σ_τ P(τ)·(log P(τ) − log M(τ)), (B, R) -> (B,)."""
    return (log_p.exp() * (log_p - log_m)).sum(-1)


_SOURCE = "Gu et al., ACL Findings 2025 (arXiv 2502.14272); EganGu/PAD scripts/simpo_trainer.py loss_type={}"


def _scores(x: ListwiseInputs, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student ``β·A_θ`` and detached teacher ``β·r_T``, float32 (B, n)."""
    logps, lengths, teacher = x.checked()
    return beta * logps / lengths, beta * teacher


@register("pad_pd", kind="listwise", needs={"scores"}, hparams={"beta": 10.0}, source=_SOURCE.format("pd"))
def pad_pd(x: ListwiseInputs, *, beta: float) -> LossOutput:
    """PAD probabilistic preference distillation: JSD between student and teacher PL, (B,).

    ``logps`` (B, n) are the student's summed response log-probs, ``lengths`` (B, n) the
    response token counts, ``teacher_scores`` (B, n) the teacher rewards r_T (detached).
    Raises ``ValueError`` for n > 8: use ``pad_rd`` or decompose the list.
    """
    n = x.logps.shape[-1]
    if n > MAX_PD_LIST_SIZE:
        raise ValueError(
            f"pad_pd enumerates all n! rankings; n={n} gives {math.factorial(n):,} rankings per "
            f"example (limit n={MAX_PD_LIST_SIZE}). Use 'pad_rd' (O(n log n)) or decompose the "
            "list into sub-lists of at most 8 responses."
        )
    student, teacher = _scores(x, beta)
    log_ps = plackett_luce_logprobs(student)
    log_pt = plackett_luce_logprobs(teacher)
    log_m = torch.logaddexp(log_ps, log_pt) - math.log(2.0)
    jsd = 0.5 * _kl_to_mixture(log_ps, log_m) + 0.5 * _kl_to_mixture(log_pt, log_m)
    return LossOutput(jsd, _metrics(student, teacher))


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
    return LossOutput(nll, _metrics(student, teacher))
