"""Reference-based pairwise preference losses: DPO / cDPO, robust DPO, IPO, hinge, RPO.

Every function takes (B,) tensors of **summed** response log-probs ``S(y|x)`` and
response token counts ``|y|``::

    fn(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
       ref_chosen_logps, ref_rejected_logps, *, <hyper-parameters>) -> LossOutput

and returns a (B,) per-example loss plus (B,) detached metrics. All arithmetic is done in
float32 whatever the input dtype. Notation (methods spec, section 0)::

    h = [S_θ(y_w) − S_ref(y_w)] − [S_θ(y_l) − S_ref(y_l)]        (log-ratio margin)

β is the KL coefficient of the RLHF objective the losses are derived from; it scales the
implicit reward ``r(y) = β (S_θ(y) − S_ref(y))`` (reported as ``reward/*``). Larger β makes
departures from π_ref more costly. Equation numbers refer to arXiv v1 of each paper; where we
could not check the number we name the objective instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefdistill.losses.registry import LossOutput, register

_REF_NEEDS = frozenset({"reference", "rejected"})


# --------------------------------------------------------------------------- helpers
def _f32(name: str, x: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Cast a required (B,) input to float32; fail with the loss name if it is missing."""
    if x is None:
        raise ValueError(f"loss {loss!r} needs {name!r} but it was None")
    if x.dim() != 1:
        raise ValueError(f"loss {loss!r}: {name!r} must be a (B,) tensor, got shape {tuple(x.shape)}")
    return x.float()


def _lengths(name: str, x: torch.Tensor | None, loss: str) -> torch.Tensor:
    """(B,) token counts as float32, clamped to >= 1 so an empty response gives A = 0, not NaN."""
    return _f32(name, x, loss).clamp_min(1.0)


def _reference(ref_chosen_logps, ref_rejected_logps, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [
        n
        for n, t in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps))
        if t is None
    ]
    if missing:
        raise ValueError(
            f"loss {loss!r} needs reference log-probs but {missing} is None; "
            "provide the reference model's log-probs (or use a reference-free loss)"
        )
    return _f32("ref_chosen_logps", ref_chosen_logps, loss), _f32(
        "ref_rejected_logps", ref_rejected_logps, loss
    )


def reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """The shared reward metrics, all (B,) and detached."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "reward/chosen": chosen,
        "reward/rejected": rejected,
        "reward/margin": chosen - rejected,
        "reward/accuracy": (chosen > rejected).float(),
    }


def smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """cDPO form ``−(1−ε) log σ(z) − ε log σ(−z)``; ε = 0 is plain ``−log σ(z)``. (B,) -> (B,)."""
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def _ratios(loss, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free=False):
    """Policy/reference log-ratios (B,) of chosen and rejected, float32."""
    pc = _f32("chosen_logps", chosen_logps, loss)
    pr = _f32("rejected_logps", rejected_logps, loss)
    if reference_free:
        return pc, pr
    rc, rr = _reference(ref_chosen_logps, ref_rejected_logps, loss)
    return pc - rc, pr - rr


# --------------------------------------------------------------------------- DPO / cDPO
def _dpo_needs(hp):
    return {"rejected"} if hp.get("reference_free") else _REF_NEEDS


@register("dpo", needs=_dpo_needs, kind="pairwise")
def dpo(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
) -> LossOutput:
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290), Eq. 7: ``L = −log σ(β h)``.

    With ``label_smoothing = ε > 0`` this is conservative DPO (cDPO):
    ``L = −(1−ε) log σ(βh) − ε log σ(−βh)`` (eric-mitchell/direct-preference-optimization
    ``trainers.py::preference_loss``, ``loss.label_smoothing``; TRL ≤ 0.2x ``sigmoid`` +
    ``label_smoothing`` — TRL 1.x dropped it). ``reference_free=True`` sets ``S_ref ≡ 0`` (eric-mitchell
    ``loss.reference_free``, TRL ≤ 0.2x ``reference_free``) and then needs no reference.

    Inputs are (B,) summed response log-probs (lengths unused). β (TRL default 0.1; the paper
    used 0.1 on HH and 0.5 on TL;DR) is the KL-penalty coefficient: the implicit reward is
    ``β (S_θ − S_ref)``, which is what ``reward/*`` reports.
    """
    cr, rr = _ratios(
        "dpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, reference_free
    )
    h = cr - rr  # (B,)
    loss = smoothed_sigmoid_loss(beta * h, label_smoothing)  # (B,)
    return LossOutput(loss, reward_metrics(beta * cr, beta * rr))


# --------------------------------------------------------------------------- robust DPO
def _robust_needs(hp):
    _check_eps(hp.get("label_smoothing", 0.1))  # fail at get_loss time, not at the first step
    return _REF_NEEDS


def _check_eps(eps: float) -> None:
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"loss 'robust' needs label_smoothing (ε) in [0, 0.5), got {eps}")


@register("robust", needs=_robust_needs, kind="pairwise")
def robust(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> LossOutput:
    """Robust DPO (rDPO), Chowdhury et al. 2024 (arXiv 2403.00409), the rDPO loss — TRL ``loss_type="robust"``::

        L = [ −(1−ε) log σ(βh) + ε log σ(−βh) ] / (1 − 2ε)

    an unbiased estimate of the clean-label DPO loss when labels flip with probability ε
    (``label_smoothing``, must be in [0, 0.5); ε = 0 is DPO). Note the ``+ε`` sign: unlike cDPO
    this is *not* a convex combination. Inputs (B,) summed log-probs; β and ``reward/*`` as in DPO.
    """
    _check_eps(label_smoothing)
    cr, rr = _ratios("robust", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (cr - rr)  # (B,)
    eps = label_smoothing
    loss = (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return LossOutput(loss, reward_metrics(beta * cr, beta * rr))


# --------------------------------------------------------------------------- IPO
def _ipo_needs(hp):
    if hp.get("length_norm", "mean") not in ("mean", "sum"):
        raise ValueError(f"loss 'ipo': length_norm must be 'mean' or 'sum', got {hp['length_norm']!r}")
    return _REF_NEEDS


@register("ipo", needs=_ipo_needs, kind="pairwise")
def ipo(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    length_norm: str = "mean",
) -> LossOutput:
    """IPO, Azar et al. 2023 (arXiv 2310.12036), the sampled IPO loss: ``L = (h̄ − 1/(2β))²`` (β plays τ).

    ``length_norm`` picks how h̄ is formed:

    * ``"mean"`` (default, **TRL convention**, ``loss_type="ipo"``; "confirmed with IPO authors"):
      every log-prob — policy *and* reference — is divided by its response length first,
      ``h̄ = (S_θ(y_w) − S_ref(y_w))/|y_w| − (S_θ(y_l) − S_ref(y_l))/|y_l|``. Needs the lengths.
    * ``"sum"`` (**eric-mitchell/direct-preference-optimization** ``preference_loss(ipo=True)``):
      h̄ = h on summed log-probs.

    Small β pushes the target margin 1/(2β) far out (weaker regularisation to π_ref).
    ``reward/*`` is ``β (S_θ − S_ref)`` on summed log-probs under both conventions, so it is
    comparable with the other losses.
    """
    if length_norm not in ("mean", "sum"):
        raise ValueError(f"loss 'ipo': length_norm must be 'mean' or 'sum', got {length_norm!r}")
    cr, rr = _ratios("ipo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if length_norm == "mean":
        h = cr / _lengths("chosen_lengths", chosen_lengths, "ipo") - rr / _lengths(
            "rejected_lengths", rejected_lengths, "ipo"
        )
    else:
        h = cr - rr
    loss = (h - 1.0 / (2.0 * beta)) ** 2  # (B,)
    return LossOutput(loss, reward_metrics(beta * cr, beta * rr))


# --------------------------------------------------------------------------- hinge
@register("hinge", needs=_REF_NEEDS, kind="pairwise")
def hinge(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """Hinge loss on the DPO log-ratio margin, ``L = max(0, 1 − β h)`` — TRL ``loss_type="hinge"``
    (SLiC-HF, Zhao et al. 2023, arXiv 2305.10425, calibration loss, in the reference-ratio form used by RSO,
    Liu et al. 2023, arXiv 2309.06657).

    β = 1/margin: the loss (and its gradient) is exactly zero once h ≥ 1/β. The original SLiC-HF is
    reference-free with an extra NLL regulariser; this is the TRL/RSO variant. (B,) summed log-probs;
    ``reward/*`` as in DPO.
    """
    cr, rr = _ratios("hinge", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    loss = torch.relu(1.0 - beta * (cr - rr))  # (B,)
    return LossOutput(loss, reward_metrics(beta * cr, beta * rr))


# --------------------------------------------------------------------------- RPO
@register("rpo", needs=_REF_NEEDS, kind="pairwise")
def rpo(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> LossOutput:
    """RPO, Pang et al. 2024 (arXiv 2404.19733), the L_DPO+NLL objective: ``L = L_DPO + α · NLL(y_w)``.

    ``NLL(y_w) = −S_θ(y_w)/|y_w|`` per example (token mean within each chosen response).
    TRL ≤ 0.2x (``rpo_alpha``) instead used one *batch-level* token mean over all chosen tokens,
    added to every pair; we keep it per example so the loss stays separable per example — the batch
    mean of per-example losses is then the same however the batch is split into micro-batches, so
    gradient accumulation is exact. (TRL 1.x: ``loss_type=["sigmoid","sft"]``, ``loss_weights=[1, α]``.)
    α = 1.0 is the paper's recommendation; β as in DPO. Logs ``nll/chosen`` besides ``reward/*``.
    """
    cr, rr = _ratios("rpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    nll = -_f32("chosen_logps", chosen_logps, "rpo") / _lengths("chosen_lengths", chosen_lengths, "rpo")
    loss = -F.logsigmoid(beta * (cr - rr)) + alpha * nll  # (B,)
    metrics = reward_metrics(beta * cr, beta * rr)
    metrics["nll/chosen"] = nll.detach()
    return LossOutput(loss, metrics)
