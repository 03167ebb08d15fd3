"""Reference formulas of the pairwise losses, written from their sources (float64, plain torch).

Sources: TRL 1.16 ``trl/trainer/dpo_trainer.py`` ``_compute_loss`` (every DPO ``loss_type`` and the
family-wide ``f_divergence_type``, ``ld_alpha``, ``use_weighting``) and the papers it cites; TRL
``trl/experimental/{orpo,cpo}``; princeton-nlp/SimPO ``simpo_trainer.py``; tengxiao1/SimPER; the PLaD
calibration losses (SLiC-HF form). Each formula is written out here, not imported.
"""

from __future__ import annotations

import math

import torch
from conformance import CASES, UNEQUAL, Reference

from prefdistill.losses import REGISTRY  # the mixture reads its parts' default hyper-parameters only

logsig = torch.nn.functional.logsigmoid
sig = torch.sigmoid


# ---------------------------------------------------------------- TRL's family-wide options
def f_prime(u: torch.Tensor, kind: str, a: float) -> torch.Tensor:
    """f'(e^u) of f-DPO (Wang et al. 2023, Table 1) in TRL's form."""
    if kind == "reverse_kl" or (kind == "alpha_divergence" and abs(a - 1.0) < 1e-6):
        return u
    if kind == "forward_kl":
        return 1.0 - torch.exp(-u)
    if kind == "js_divergence":
        return math.log(2.0) + u - torch.nn.functional.softplus(u)  # log(2t/(1+t)), t = e^u
    return (torch.exp(torch.clamp((a - 1.0) * u, max=80.0)) - 1.0) / (a - 1.0)


def _valid(row: torch.Tensor, mask_row: torch.Tensor) -> list[torch.Tensor]:
    return [row[j] for j in range(row.shape[0]) if bool(mask_row[j])]


def ld_sum(t: dict, key: str, side: str, alpha: float) -> torch.Tensor:
    """LD-DPO (Liu et al. 2024, Eq. 9-10): the first min(|y_w|, |y_l|) tokens + alpha * the others, per row."""
    out = []
    for b in range(t[key].shape[0]):
        shared = min(int(t["chosen_mask"][b].sum()), int(t["rejected_mask"][b].sum()))
        toks = _valid(t[key][b], t[f"{side}_mask"][b])
        head = sum(toks[:shared], torch.zeros((), dtype=torch.float64))
        tail = sum(toks[shared:], torch.zeros((), dtype=torch.float64))
        out.append(head + alpha * tail)
    return torch.stack(out)


def sequence_logps(t: dict, hp: dict, reference: bool = True):
    """(S_w, S_l, R_w, R_l): summed log-probs, LD-desensitised from the per-token ones when ld_alpha is set."""
    a = hp.get("ld_alpha")
    if a is None:
        return t["chosen_logps"], t["rejected_logps"], t["ref_chosen_logps"], t["ref_rejected_logps"]
    s_w, s_l = ld_sum(t, "chosen_token_logps", "chosen", a), ld_sum(t, "rejected_token_logps", "rejected", a)
    if not reference:
        return s_w, s_l, None, None
    return s_w, s_l, ld_sum(t, "ref_chosen_token_logps", "chosen", a), ld_sum(t, "ref_rejected_token_logps", "rejected", a)


def wpo(t: dict) -> torch.Tensor:
    """WPO (Zhou et al. 2024, Eq. 2 as TRL): w(y_w) w(y_l), w = exp(mean_t [log p_t - log sum_v p_v^2]), detached."""
    weights = []
    for b in range(t["chosen_mask"].shape[0]):
        w = 1.0
        for side in ("chosen", "rejected"):
            lp = _valid(t[f"{side}_token_logps"][b].detach(), t[f"{side}_mask"][b])
            sq = _valid(t[f"{side}_log_sq_probs"][b], t[f"{side}_mask"][b])
            w = w * math.exp(sum(float(x - y) for x, y in zip(lp, sq)) / max(len(lp), 1))
        weights.append(w)
    return torch.tensor(weights, dtype=torch.float64)


def with_options(body):
    """Wrap a TRL loss body(u_w, u_l, s_w, s_l, t, hp) with LD-DPO, f-DPO scores and WPO, as TRL orders them."""

    def fn(t, **hp):
        s_w, s_l, r_w, r_l = sequence_logps(t, hp)
        u_w, u_l = s_w - r_w, s_l - r_l
        kind, a = hp.get("f_divergence_type", "reverse_kl"), hp.get("f_alpha_divergence_coef", 0.5)
        loss = body(u_w, u_l, f_prime(u_w, kind, a), f_prime(u_l, kind, a), t, hp, (s_w, s_l, r_w, r_l))
        return loss * wpo(t) if hp.get("use_weighting") else loss

    return fn


def cdpo(z, eps):
    return -(1 - eps) * logsig(z) - eps * logsig(-z)


def lengths(t):
    return t["chosen_lengths"].double().clamp_min(1), t["rejected_lengths"].double().clamp_min(1)


# ---------------------------------------------------------------- TRL loss_type bodies
def _dpo(t, **hp):
    if hp["reference_free"]:
        s_w, s_l, _, _ = sequence_logps(t, hp, reference=False)
        u_w, u_l = s_w, s_l
    else:
        s_w, s_l, r_w, r_l = sequence_logps(t, hp)
        u_w, u_l = s_w - r_w, s_l - r_l
    kind, a = hp["f_divergence_type"], hp["f_alpha_divergence_coef"]
    loss = cdpo(hp["beta"] * (f_prime(u_w, kind, a) - f_prime(u_l, kind, a)), hp["label_smoothing"])
    return loss * wpo(t) if hp["use_weighting"] else loss


_robust = with_options(
    lambda u_w, u_l, c, r, t, hp, _: (
        -(1 - hp["label_smoothing"]) * logsig(hp["beta"] * (c - r)) + hp["label_smoothing"] * logsig(-hp["beta"] * (c - r))
    ) / (1 - 2 * hp["label_smoothing"])
)


def _ipo_body(u_w, u_l, c, r, t, hp, _):
    if hp["length_norm"] == "mean":
        l_w, l_l = lengths(t)
        h = c / l_w - r / l_l
    else:
        h = c - r
    return (h - 1 / (2 * hp["beta"])) ** 2


def _exo_body(u_w, u_l, c, r, t, hp, _):
    z, eps = hp["beta"] * (c - r), hp["label_smoothing"]  # KL((q_w, q_l) || (1 - eps, eps)), Ji et al. Eq. 16
    q_w, q_l = sig(z), sig(-z)
    return q_w * (torch.log(q_w) - math.log(1 - eps)) + q_l * (torch.log(q_l) - math.log(eps))


def _discopop_body(u_w, u_l, c, r, t, hp, _):
    z = hp["beta"] * (c - r)  # Lu et al. Eq. 5
    m = sig(z / hp["discopop_tau"])
    return -logsig(z) * (1 - m) + torch.exp(-z) * m


def _sigmoid_norm_body(u_w, u_l, c, r, t, hp, _):
    l_w, l_l = lengths(t)
    return -logsig(hp["beta"] * (c / l_w - r / l_l))


def _bco(t, *, state, **hp):
    s_w, s_l, r_w, r_l = sequence_logps(t, hp)
    rw, rl = hp["beta"] * (s_w - r_w), hp["beta"] * (s_l - r_l)
    mean, count = state["reward_mean"], state["reward_count"]
    if hp["running_mean"]:  # TRL <= 0.2x RunningMoments: update with the batch mean, then use it
        count = count + 1
        mean = mean + (float(torch.cat([rw, rl]).detach().mean()) - mean) / count
        delta = mean
    else:
        delta = 0.0
    loss = -logsig(rw - delta) - logsig(-(rl - delta))
    loss = loss * wpo(t) if hp["use_weighting"] else loss
    return loss, {"reward_mean": mean, "reward_count": count}


def _aot(t, **hp):
    s_w, s_l, r_w, r_l = sequence_logps(t, hp)
    delta = torch.sort(s_w - s_l).values - torch.sort(r_w - r_l).values  # Melnyk et al., paired
    return cdpo(hp["beta"] * delta, hp["label_smoothing"])


def _aot_unpaired(t, **hp):
    s_w, s_l, r_w, r_l = sequence_logps(t, hp)
    delta = torch.sort(s_w - r_w).values - torch.sort(s_l - r_l).values
    return cdpo(hp["beta"] * delta, hp["label_smoothing"])


def _sft(t, **hp):
    n = t["chosen_logps"].shape[0]
    if hp["token_mean"] == "batch":  # TRL: one mean over every chosen token of the batch, given to each example
        loss = (-t["chosen_logps"].sum() / t["chosen_lengths"].double().sum()).expand(n)
    else:
        loss = -t["chosen_logps"] / t["chosen_lengths"].double().clamp_min(1)
    return loss * wpo(t) if hp["use_weighting"] else loss


def _rpo(t, **hp):
    h = (t["chosen_logps"] - t["ref_chosen_logps"]) - (t["rejected_logps"] - t["ref_rejected_logps"])
    return -logsig(hp["beta"] * h) - hp["nll_weight"] * t["chosen_logps"] / lengths(t)[0]


def _simpo(t, **hp):  # princeton-nlp/SimPO simpo_loss
    l_w, l_l = lengths(t)
    a_w, a_l = t["chosen_logps"] / l_w, t["rejected_logps"] / l_l
    z = hp["beta"] * (a_w - a_l - hp["gamma_beta_ratio"])
    loss = cdpo(z, hp["label_smoothing"]) if hp["loss_type"] == "sigmoid" else torch.relu(1 - z)
    return loss - hp["nll_weight"] * a_w


def _simper(t, **hp):  # tengxiao1/SimPER loss_type "SimPER"
    l_w, l_l = lengths(t)
    a_w, a_l = t["chosen_logps"] / l_w, t["rejected_logps"] / l_l
    return -torch.exp(a_w) + torch.exp(a_l) - hp["nll_weight"] * a_w


def _log_odds(a):
    a = torch.clamp(a, max=-1e-6)
    return a - torch.log(1 - torch.exp(a))  # log P/(1 - P), ORPO Eq. 4 with P = exp(mean log-prob)


def _orpo(t, **hp):  # Hong et al. Eq. 6-7: L_SFT + lambda L_OR
    l_w, l_l = lengths(t)
    a_w, a_l = t["chosen_logps"] / l_w, t["rejected_logps"] / l_l
    return -a_w - hp["beta"] * logsig(_log_odds(a_w) - _log_odds(a_l))


def _cpo(t, **hp):  # TRL CPOTrainer.cpo_loss + cpo_alpha * NLL; AlphaPO reward (1 - P^-alpha)/alpha
    l_w, l_l = lengths(t)
    avg = hp["loss_type"] in ("ipo", "simpo")
    p_w, p_l = (t["chosen_logps"] / l_w, t["rejected_logps"] / l_l) if avg else (t["chosen_logps"], t["rejected_logps"])
    if hp["alpha"]:
        p_w, p_l = (1 - torch.exp(p_w) ** -hp["alpha"]) / hp["alpha"], (1 - torch.exp(p_l) ** -hp["alpha"]) / hp["alpha"]
    d, beta = p_w - p_l, hp["beta"]
    if hp["loss_type"] == "simpo":
        loss = cdpo(beta * (d - hp["simpo_gamma"] / beta), hp["label_smoothing"])
    elif hp["loss_type"] == "sigmoid":
        loss = cdpo(beta * d, hp["label_smoothing"])
    elif hp["loss_type"] == "hinge":
        loss = torch.relu(1 - beta * d)
    else:
        loss = (d - 1 / (2 * beta)) ** 2
    return loss - hp["nll_weight"] * t["chosen_logps"] / l_w


def _plad(target):
    def fn(t, **hp):
        l_w, l_l = lengths(t)
        norm = hp["length_norm"] == "mean"
        c, r = (t["chosen_logps"] / l_w, t["rejected_logps"] / l_l) if norm else (t["chosen_logps"], t["rejected_logps"])
        return torch.relu(target(t, hp) - c + r) - hp["nll_weight"] * c

    return fn


REFS = {}  # filled below; the mixture composes them


def _mixture(t, **hp):
    total = 0.0
    for name, w in zip(hp["losses"], hp["weights"]):
        shared = {k: v for k, v in hp.items() if k not in ("losses", "weights")}
        part = {**REGISTRY[name].hparams, **{k: v for k, v in shared.items() if k in REGISTRY[name].hparams}}
        total = total + w * REFS[name].fn(t, **part)
    return total


FDIV = [{"f_divergence_type": k} for k in ("forward_kl", "js_divergence", "alpha_divergence")] + [
    {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}
]
LD = [{"ld_alpha": 0.5}, {"ld_alpha": 0.0}]
WPO = [{"use_weighting": True}, {"use_weighting": True, "ld_alpha": 0.5}]
NO_TOKENS = ("random", "equal", "length1", "large")  # losses that never read per-token tensors skip masked_nan

REFS.update(
    {
        "dpo": Reference(_dpo, ({}, {"label_smoothing": 0.2}, {"reference_free": True}, {"beta": 0.5},
                                *FDIV, *LD, *WPO, {"reference_free": True, "ld_alpha": 0.3})),
        "robust": Reference(_robust, ({}, {"label_smoothing": 0.3}, *FDIV[:2], LD[0], WPO[0])),
        "ipo": Reference(with_options(_ipo_body), ({}, {"length_norm": "sum"}, *FDIV, LD[0], WPO[0]),
                         cases=(*CASES, UNEQUAL)),
        "hinge": Reference(with_options(lambda u_w, u_l, c, r, t, hp, _: torch.relu(1 - hp["beta"] * (c - r))),
                           ({}, {"beta": 2.0}, FDIV[1], LD[0], WPO[0])),
        "exo_pair": Reference(with_options(_exo_body), ({}, {"label_smoothing": 0.1}, FDIV[0], LD[0], WPO[0])),
        "nca_pair": Reference(with_options(
            lambda u_w, u_l, c, r, t, hp, _: -logsig(hp["beta"] * u_w) - 0.5 * logsig(-hp["beta"] * u_w)
            - 0.5 * logsig(-hp["beta"] * u_l)), ({}, {"beta": 1.0}, LD[0], WPO[0])),
        "bco_pair": Reference(_bco, ({}, {"running_mean": True}, {"running_mean": True, "ld_alpha": 0.5},
                                     {"use_weighting": True}), state={"reward_mean": 0.25, "reward_count": 3.0}),
        "sppo_hard": Reference(with_options(
            lambda u_w, u_l, c, r, t, hp, _: (u_w - 0.5 / hp["beta"]) ** 2 + (u_l + 0.5 / hp["beta"]) ** 2),
            ({}, LD[0], WPO[0])),
        "aot": Reference(_aot, ({}, {"label_smoothing": 0.1}, LD[0])),
        "aot_unpaired": Reference(_aot_unpaired, ({}, {"label_smoothing": 0.1}, LD[0])),
        "apo_zero": Reference(with_options(
            lambda u_w, u_l, c, r, t, hp, _: 1 - sig(hp["beta"] * u_w) + sig(hp["beta"] * u_l)), ({}, LD[0], WPO[0])),
        "apo_down": Reference(with_options(
            lambda u_w, u_l, c, r, t, hp, _: sig(hp["beta"] * u_w) + 1 - sig(hp["beta"] * (u_w - u_l))),
            ({}, LD[0], WPO[0])),
        "discopop": Reference(with_options(_discopop_body), ({}, {"discopop_tau": 1.0}, FDIV[1], LD[0], WPO[0])),
        "sigmoid_norm": Reference(with_options(_sigmoid_norm_body), ({}, *FDIV, LD[0], WPO[0]),
                                  cases=(*CASES, UNEQUAL)),
        "sft": Reference(_sft, ({}, {"token_mean": "batch"}, {"use_weighting": True})),
        "rpo": Reference(_rpo, ({}, {"nll_weight": 0.3}), cases=NO_TOKENS),
        "simpo": Reference(_simpo, ({}, {"label_smoothing": 0.2, "nll_weight": 0.5}, {"loss_type": "hinge"}),
                           cases=NO_TOKENS),
        "simper": Reference(_simper, ({}, {"nll_weight": 0.5}), cases=NO_TOKENS),
        "orpo": Reference(_orpo, ({}, {"beta": 1.0}), cases=NO_TOKENS),
        "cpo": Reference(_cpo, ({}, {"loss_type": "hinge"}, {"loss_type": "ipo"},
                                {"loss_type": "simpo", "label_smoothing": 0.1}, {"loss_type": "simpo", "alpha": 0.25,
                                                                                 "nll_weight": 0.0},
                                {"loss_type": "sigmoid", "alpha": -0.01}), cases=("random", "equal", "length1")),
        "plad_rank": Reference(_plad(lambda t, hp: hp["margin"]),
                               ({}, {"length_norm": "sum", "nll_weight": 0.5}), cases=NO_TOKENS),
        "plad_margin": Reference(
            _plad(lambda t, hp: hp["margin"] * (t["chosen_scores"] - t["rejected_scores"])),
            ({}, {"length_norm": "sum", "margin": 3.0}), cases=NO_TOKENS),
        "mixture": Reference(_mixture, ({}, {"losses": ["dpo", "sft"], "weights": [1.0, 0.3], "beta": 0.5},
                                        {"losses": ["ipo", "simpo", "sft"], "weights": [0.5, 1.0, 2.0], "beta": 0.2},
                                        {"losses": ["dpo", "sft"], "weights": [1.0, 1.0], "use_weighting": True,
                                         "ld_alpha": 0.5})),
    }
)  # fmt: skip
REFERENCES = REFS
