"""The rest of TRL 1.x's DPO ``loss_type`` family: EXO, NCA, BCO, SPPO, AOT, APO, DiscoPOP, normalised DPO.

Each reads :class:`~prefdistill.losses.inputs.PairwiseInputs` ((B,) summed log-probs of the pair under
the policy and the reference) and is registered under its TRL ``loss_type`` name, so a TRL user finds it
as ``method=<loss_type>``. Formulas follow TRL's ``trl/trainer/dpo_trainer.py`` (``_compute_loss``,
TRL 1.16) and the paper equation TRL cites; where they differ the docstring says so. Notation::

    u_w = S_θ(y_w) − S_ref(y_w),  u_l = S_θ(y_l) − S_ref(y_l)   (log-ratios; reward/* reports β·u)
    h   = u_w − u_l                                           (f-DPO: f'(e^u_w) − f'(e^u_l))

Every loss also takes TRL's family-wide ``ld_alpha`` (LD-DPO) and, except the batch-sorting AOT losses
(TRL refuses it there), ``use_weighting`` (WPO); those built on h take ``f_divergence_type`` /
``f_alpha_divergence_coef`` (see :mod:`prefdistill.losses.log_ratio`).

Two losses couple the examples of a batch: ``aot`` and ``aot_unpaired`` sort the batch's margins, so
their per-example loss depends on batch-mates (gradient accumulation is not the same as a larger batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prefdistill.losses.inputs import PairwiseInputs
from prefdistill.losses.log_ratio import (
    F_KNOBS,
    LD_KNOB,
    WPO_KNOB,
    check_knobs,
    f_scores,
    length_desensitized,
    weighted,
)
from prefdistill.losses.pairwise import reference_needs
from prefdistill.losses.registry import LossOutput, register
from prefdistill.losses.terms import reward_metrics, smoothed_sigmoid_loss

_TRL = "TRL loss_type='{}' (trl/trainer/dpo_trainer.py)"


def _validate(name: str, extra=None):
    def check(hp: dict) -> None:
        check_knobs(name, hp)
        if extra is not None:
            extra(hp)

    return check


def _ratios(x: PairwiseInputs, ld_alpha: float | None) -> tuple[PairwiseInputs, torch.Tensor, torch.Tensor]:
    """``(x, u_w, u_l)`` after LD-DPO's length desensitisation (a no-op when ``ld_alpha`` is None)."""
    x = length_desensitized(x, ld_alpha, reference=True)
    u_w, u_l = x.ratios()
    return x, u_w, u_l


def _out(loss, beta, u_w, u_l, x, use_weighting=False, extra=None) -> LossOutput:
    metrics = reward_metrics(beta * u_w, beta * u_l) | (extra or {})
    return LossOutput(*weighted(loss, metrics, x, use_weighting))


def _check_exo(hp):
    eps = hp["label_smoothing"]
    if not 0.0 < eps < 1.0:
        raise ValueError(f"loss 'exo_pair': label_smoothing (ε) must be in (0, 1) (the paper suggests 1e-3), got {eps}")


@register(
    "exo_pair", kind="pairwise", needs=reference_needs, validate=_validate("exo_pair", _check_exo),
    hparams={"beta": 0.1, "label_smoothing": 1e-3, **F_KNOBS, **LD_KNOB, **WPO_KNOB},
    source="Ji et al. 2024 (arXiv 2402.00856) Eq. 16, EXO-pref with K = 2; " + _TRL.format("exo_pair"),
)  # fmt: skip
def exo_pair(
    x: PairwiseInputs, *, beta: float, label_smoothing: float, f_divergence_type: str,
    f_alpha_divergence_coef: float, ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """EXO: ``KL(q ‖ p)`` with ``q = (σ(βh), σ(−βh))`` the policy's pair distribution, ``p = (1−ε, ε)``.

    ``σ(βh)[log σ(βh) − log(1−ε)] + σ(−βh)[log σ(−βh) − log ε]``; ε = ``label_smoothing`` must be in
    (0, 1) (TRL refuses 0; the paper suggests 1e-3, our default). Minimised (zero) at σ(βh) = 1 − ε.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    s_w, s_l = f_scores(u_w, u_l, f_divergence_type, f_alpha_divergence_coef)
    z, eps = beta * (s_w - s_l), label_smoothing
    loss = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(eps)
    )
    return _out(loss, beta, u_w, u_l, x, use_weighting)


@register(
    "nca_pair", kind="pairwise", needs=reference_needs, validate=_validate("nca_pair"),
    hparams={"beta": 0.1, **LD_KNOB, **WPO_KNOB},
    source="Chen et al. 2024 (arXiv 2402.05369), NCA for pairwise data (K = 2); " + _TRL.format("nca_pair"),
)  # fmt: skip
def nca_pair(x: PairwiseInputs, *, beta: float, ld_alpha: float | None, use_weighting: bool) -> LossOutput:
    """NCA: ``−log σ(βu_w) − ½ log σ(−βu_w) − ½ log σ(−βu_l)``.

    Noise-contrastive alignment: each response's absolute reward ``βu`` is classified against the
    reference, which (unlike DPO's relative margin) keeps the chosen likelihood from falling.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    r_w, r_l = beta * u_w, beta * u_l
    loss = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return _out(loss, beta, u_w, u_l, x, use_weighting)


def _bco_state(hp) -> dict[str, float]:
    return {"reward_mean": 0.0, "reward_count": 0.0}


@register(
    "bco_pair", kind="pairwise", needs=reference_needs, validate=_validate("bco_pair"),
    hparams={"beta": 0.1, "running_mean": False, **LD_KNOB, **WPO_KNOB},
    state=_bco_state(None),
    source="Jung et al. 2024 (arXiv 2404.04656), BCO on pairs; " + _TRL.format("bco_pair")
    + "; running mean: TRL <= 0.2x",
)  # fmt: skip
def bco_pair(
    x: PairwiseInputs, *, beta: float, running_mean: bool, ld_alpha: float | None, use_weighting: bool,
    state: dict[str, torch.Tensor],
) -> LossOutput:  # fmt: skip
    """BCO on pairs: ``−log σ(βu_w − δ) − log σ(−(βu_l − δ))``, δ the reward shift.

    * ``running_mean=False`` (default, **TRL 1.x**): δ = 0.
    * ``running_mean=True`` (the **BCO paper** and TRL ≤ 0.2x): δ is the running mean, over training
      steps, of each batch's mean reward ``mean(βu_w ∪ βu_l)`` (detached), updated with the current
      batch *before* it is used (TRL's ``RunningMoments``: δ_k = (Σ_{j≤k} m_j)/k). The mean and the step
      count are the loss's running state: the training module keeps them, checkpoints them and passes
      them back (``state``; validation reads them without updating). With several ranks the module
      averages the updated state over ranks after each step, so every rank continues from the mean over
      all ranks' batches (TRL 0.x also used the global mean for the current step; ours uses the local
      batch for that one step).

    Logs ``bco/delta``.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    r_w, r_l = beta * u_w, beta * u_l
    mean, count = state["reward_mean"].to(r_w), state["reward_count"].to(r_w)
    if running_mean:
        batch_mean = torch.cat([r_w, r_l]).mean().detach()
        count = count + 1.0
        mean = mean + (batch_mean - mean) / count
        delta = mean
    else:
        delta = torch.zeros_like(mean)
    loss = -F.logsigmoid(r_w - delta) - F.logsigmoid(-(r_l - delta))
    metrics = {"bco/delta": delta.detach().expand_as(loss).clone()}
    loss, metrics = weighted(loss, reward_metrics(r_w, r_l) | metrics, x, use_weighting)
    return LossOutput(loss, metrics, {"reward_mean": mean.detach(), "reward_count": count.detach()})


@register(
    "sppo_hard", kind="pairwise", needs=reference_needs, validate=_validate("sppo_hard"),
    hparams={"beta": 0.1, **LD_KNOB, **WPO_KNOB},
    source="Wu et al. 2024 (arXiv 2405.00675) Eq. 4.7 with hard probabilities; " + _TRL.format("sppo_hard"),
)  # fmt: skip
def sppo_hard(x: PairwiseInputs, *, beta: float, ld_alpha: float | None, use_weighting: bool) -> LossOutput:
    """SPPO (hard): ``(u_w − 1/(2β))² + (u_l + 1/(2β))²``.

    The paper's square loss with the win probability P set to 1 for the chosen and 0 for the rejected
    response (the paper estimates a soft P with PairRM; that happens outside the loss).
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    loss = (u_w - 0.5 / beta) ** 2 + (u_l + 0.5 / beta) ** 2
    return _out(loss, beta, u_w, u_l, x, use_weighting)


def _aot(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return smoothed_sigmoid_loss(beta * delta, label_smoothing)


@register(
    "aot", kind="pairwise", needs=reference_needs, validate=_validate("aot"),
    hparams={"beta": 0.1, "label_smoothing": 0.0, **LD_KNOB},
    source="Melnyk et al. 2024 (arXiv 2406.05882), AOT paired; " + _TRL.format("aot"),
)  # fmt: skip
def aot(x: PairwiseInputs, *, beta: float, label_smoothing: float, ld_alpha: float | None) -> LossOutput:
    """AOT (paired): the cDPO form on ``sort(S_θ(y_w) − S_θ(y_l)) − sort(S_ref(y_w) − S_ref(y_l))``.

    Distributional alignment by optimal transport in one dimension: the batch's policy margins and
    reference margins are each sorted (ascending) and matched by rank. **Batch-coupled**: entry i of the
    (B,) loss is the i-th smallest matched pair, not example i, so only the mean is meaningful and the
    loss changes with the batch composition. ``reward/*`` are per example, as in DPO.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    (p_w, p_l), (r_w, r_l) = x.logps(), x.reference()
    delta = torch.sort(p_w - p_l).values - torch.sort(r_w - r_l).values
    return _out(_aot(delta, beta, label_smoothing), beta, u_w, u_l, x)


@register(
    "aot_unpaired", kind="pairwise", needs=reference_needs, validate=_validate("aot_unpaired"),
    hparams={"beta": 0.1, "label_smoothing": 0.0, **LD_KNOB},
    source="Melnyk et al. 2024 (arXiv 2406.05882), AOT unpaired; " + _TRL.format("aot_unpaired"),
)  # fmt: skip
def aot_unpaired(x: PairwiseInputs, *, beta: float, label_smoothing: float, ld_alpha: float | None) -> LossOutput:
    """AOT (unpaired): the cDPO form on ``sort(u_w) − sort(u_l)`` over the batch.

    The chosen log-ratios' distribution should dominate the rejected ones' (first-order stochastic
    dominance, matched by rank). **Batch-coupled** like :func:`aot`.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    delta = torch.sort(u_w).values - torch.sort(u_l).values
    return _out(_aot(delta, beta, label_smoothing), beta, u_w, u_l, x)


@register(
    "apo_zero", kind="pairwise", needs=reference_needs, validate=_validate("apo_zero"),
    hparams={"beta": 0.1, **LD_KNOB, **WPO_KNOB},
    source="D'Oosterlinck et al. 2024 (arXiv 2408.06266) Eq. 7, APO-zero; " + _TRL.format("apo_zero"),
)  # fmt: skip
def apo_zero(x: PairwiseInputs, *, beta: float, ld_alpha: float | None, use_weighting: bool) -> LossOutput:
    """APO-zero: ``(1 − σ(βu_w)) + σ(βu_l)``: raise the chosen likelihood, lower the rejected one.

    For data whose chosen answers are better than the model's own (anchored at the reference).
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    loss = (1.0 - torch.sigmoid(beta * u_w)) + torch.sigmoid(beta * u_l)
    return _out(loss, beta, u_w, u_l, x, use_weighting)


@register(
    "apo_down", kind="pairwise", needs=reference_needs, validate=_validate("apo_down"),
    hparams={"beta": 0.1, **LD_KNOB, **WPO_KNOB},
    source="D'Oosterlinck et al. 2024 (arXiv 2408.06266) Eq. 8, APO-down; " + _TRL.format("apo_down"),
)  # fmt: skip
def apo_down(x: PairwiseInputs, *, beta: float, ld_alpha: float | None, use_weighting: bool) -> LossOutput:
    """APO-down: ``σ(βu_w) + (1 − σ(β(u_w − u_l)))``: lower both likelihoods, the rejected one more.

    For data whose chosen answers are worse than the model's own.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    loss = torch.sigmoid(beta * u_w) + (1.0 - torch.sigmoid(beta * (u_w - u_l)))
    return _out(loss, beta, u_w, u_l, x, use_weighting)


def _check_discopop(hp):
    if hp["discopop_tau"] <= 0:
        raise ValueError(f"loss 'discopop': discopop_tau must be > 0, got {hp['discopop_tau']}")


@register(
    "discopop", kind="pairwise", needs=reference_needs, validate=_validate("discopop", _check_discopop),
    hparams={"beta": 0.1, "discopop_tau": 0.05, **F_KNOBS, **LD_KNOB, **WPO_KNOB},
    source="Chris Lu et al. 2024 (arXiv 2406.08414) Eq. 5, log-ratio modulated loss; " + _TRL.format("discopop"),
)  # fmt: skip
def discopop(
    x: PairwiseInputs, *, beta: float, discopop_tau: float, f_divergence_type: str, f_alpha_divergence_coef: float,
    ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """DiscoPOP: ``(1 − m)·(−log σ(z)) + m·e^{−z}``, ``z = βh``, ``m = σ(z/τ)`` (τ = ``discopop_tau``, 0.05).

    A blend of the logistic (DPO) and exponential losses, mixed by the sign and size of the margin.
    ``m·e^{−z}`` is computed as ``exp(log σ(z/τ) − z)``: the same numbers where TRL's product is finite,
    and no ``∞·0`` (NaN) for large negative z.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    s_w, s_l = f_scores(u_w, u_l, f_divergence_type, f_alpha_divergence_coef)
    z = beta * (s_w - s_l)
    modulation = torch.sigmoid(z / discopop_tau)
    loss = -F.logsigmoid(z) * (1.0 - modulation) + torch.exp(F.logsigmoid(z / discopop_tau) - z)
    return _out(loss, beta, u_w, u_l, x, use_weighting)


@register(
    "sigmoid_norm", kind="pairwise", needs=reference_needs, validate=_validate("sigmoid_norm"),
    hparams={"beta": 0.1, **F_KNOBS, **LD_KNOB, **WPO_KNOB},
    source="Length-normalised DPO; " + _TRL.format("sigmoid_norm"),
)  # fmt: skip
def sigmoid_norm(
    x: PairwiseInputs, *, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float,
    ld_alpha: float | None, use_weighting: bool,
) -> LossOutput:  # fmt: skip
    """Length-normalised DPO: ``−log σ(β (u_w/|y_w| − u_l/|y_l|))`` (f-scores divided by the lengths).

    ``reward/*`` stays ``βu`` on the summed log-ratios, as TRL logs it.
    """
    x, u_w, u_l = _ratios(x, ld_alpha)
    s_w, s_l = f_scores(u_w, u_l, f_divergence_type, f_alpha_divergence_coef)
    l_w, l_l = x.lengths()
    loss = -F.logsigmoid(beta * (s_w / l_w - s_l / l_l))
    return _out(loss, beta, u_w, u_l, x, use_weighting)
