"""Shared pieces of the loss conformance test (``test_conformance.py``): the ``Reference`` record, the input
cases of each loss kind, and the tolerance.

A reference is written from the source formula (paper equation or reference repository), in plain torch,
in float64, with explicit per-row loops where that is clearer; it never imports ``prefdistill``'s loss code
or TRL. The cases are float32 tensors (what the losses receive); the reference sees the same values cast
to float64, so the only differences left are the loss's own float32 arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

CASES = ("random", "equal", "length1", "large", "masked_nan")
UNEQUAL = "unequal"  # pairwise only: chosen and rejected lengths differ in every row (length-normalised losses)
RTOL = 1e-5  # relative tolerance, per element
ATOL_SCALE = 1e-6  # plus this times the largest |reference| of the tensor (values that cancel to ~0)
ATOL_FLOOR = 2e-7  # plus float32's rounding of O(1) terms that cancel (epsilon 1.2e-7; e.g. q − p at p = q)


@dataclass(frozen=True)
class Reference:
    """The reference of one registered loss.

    fn:      ``fn(t, **hparams) -> (B,) loss`` on float64 tensors ``t`` (the loss's inputs by field name, the
             float ones with ``requires_grad`` where the loss differentiates them); ``hparams`` are the
             loss's full hyper-parameters (defaults updated by the setting). A stateful loss's ``fn`` also
             takes ``state=`` (dict of floats) and returns ``(loss, new_state)``.
    hparams: the settings to check (each a dict of overrides; ``{}`` = the defaults).
    state:   the running state to start from (stateful losses), or None.
    cases:   the input cases (``CASES``) to check; all by default.
    """

    fn: Callable
    hparams: tuple[dict, ...] = ({},)
    state: dict | None = None
    cases: tuple[str, ...] = CASES


@dataclass
class Case:
    """One set of loss inputs: float32/long tensors by field name, and which of them are differentiated."""

    tensors: dict[str, torch.Tensor]
    grad: tuple[str, ...]
    extra: dict = field(default_factory=dict)  # non-tensor fields (e.g. token sample_mix)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _token_rows(b: int, t: int, lengths: torch.Tensor, scale: float, g, nan: bool):
    """(B, T) negative per-token log-probs, valid on the first ``lengths[b]`` columns; NaN (or -inf-like
    junk) elsewhere when ``nan``, else 0."""
    values = -torch.rand(b, t, generator=g) * scale
    mask = torch.arange(t)[None, :] < lengths[:, None]
    fill = float("nan") if nan else 0.0
    return torch.where(mask, values, torch.full_like(values, fill)), mask


def pairwise_case(case: str, b: int = 5, t: int = 6, seed: int = 0) -> Case:
    """Pair inputs with (B,) sums consistent with their per-token log-probs and masks.

    random: lengths 1..T, per-token log-probs in (-3, 0); equal: rejected = chosen (policy and reference);
    length1: every response one token; large: sums near -1e4 for policy and reference alike (log-ratios
    stay moderate, as in practice); masked_nan: NaN at every masked position of the per-token tensors (the
    sums ignore them); unequal: chosen and rejected lengths differ in every row, by up to 6x either way
    (where a length-normalised loss with an f-divergence keeps f-DPO's constants: TRL divides the scores).
    """
    g = _gen(seed)
    if case == "length1":
        t = 1
    lengths_c = torch.randint(1, t + 1, (b,), generator=g)
    lengths_r = torch.randint(1, t + 1, (b,), generator=g)
    if case == "length1":
        lengths_c = lengths_r = torch.ones(b, dtype=torch.long)
    if case == "unequal":  # rows alternate long-chosen/short-rejected and short-chosen/long-rejected
        long, short = torch.full((b,), t), 1 + torch.arange(b) % 2
        lengths_c = torch.where(torch.arange(b) % 2 == 0, long, short)
        lengths_r = torch.where(torch.arange(b) % 2 == 0, short, long)
    nan = case == "masked_nan"
    tok = {}
    for who in ("", "ref_"):
        for side, lengths in (("chosen", lengths_c), ("rejected", lengths_r)):
            values, mask = _token_rows(b, t, lengths, 3.0, g, nan)
            if case == "large":  # sums near -1e4; multiples of 1/8, so float32 sums are exact (range, not rounding)
                eighths = torch.randint(0, 24, (b, t), generator=g).float() / 8
                values = torch.where(mask, -torch.round(1e4 / lengths[:, None].float()) - eighths, 0.0)
            tok[f"{who}{side}_token_logps"] = values
            tok[f"{side}_mask"] = mask
    sq = {f"{s}_log_sq_probs": torch.where(tok[f"{s}_mask"], -torch.rand(b, t, generator=g) * 2, float("nan") if nan else 0.0)
          for s in ("chosen", "rejected")}  # fmt: skip
    if case == "equal":
        lengths_r = lengths_c
        for who in ("", "ref_"):
            tok[f"{who}rejected_token_logps"] = tok[f"{who}chosen_token_logps"].clone()
        tok["rejected_mask"] = tok["chosen_mask"].clone()
        sq["rejected_log_sq_probs"] = sq["chosen_log_sq_probs"].clone()

    def total(values, mask):
        return torch.where(mask, values, 0.0).sum(-1)

    tensors = {
        "chosen_logps": total(tok["chosen_token_logps"], tok["chosen_mask"]),
        "rejected_logps": total(tok["rejected_token_logps"], tok["rejected_mask"]),
        "chosen_lengths": lengths_c,
        "rejected_lengths": lengths_r,
        "ref_chosen_logps": total(tok["ref_chosen_token_logps"], tok["chosen_mask"]),
        "ref_rejected_logps": total(tok["ref_rejected_token_logps"], tok["rejected_mask"]),
        "chosen_scores": torch.rand(b, generator=g),
        "rejected_scores": torch.rand(b, generator=g),
        **tok,
        **sq,
    }
    grad = ("chosen_logps", "rejected_logps", "chosen_token_logps", "rejected_token_logps")
    return Case(tensors, grad)


def listwise_case(case: str, b: int = 3, n: int = 4, seed: int = 0) -> Case:
    """(B, n) lists: random log-probs and lengths; equal responses; length-1 responses; log-probs near -1e4.
    Lists have no masked positions, so masked_nan is the random case."""
    g = _gen(seed)
    lengths = torch.randint(1, 30, (b, n), generator=g)
    logps = -torch.rand(b, n, generator=g) * 2.0 * lengths
    teacher = -torch.rand(b, n, generator=g) * 3.0
    if case == "equal":
        logps, lengths, teacher = logps[:, :1].expand(b, n), lengths[:, :1].expand(b, n), teacher[:, :1].expand(b, n)
    elif case == "length1":
        lengths = torch.ones(b, n, dtype=torch.long)
        logps = -torch.rand(b, n, generator=g) * 3.0
    elif case == "large":
        logps = -1e4 + torch.rand(b, n, generator=g) * 50.0
    return Case({"logps": logps.contiguous(), "lengths": lengths.contiguous(), "teacher_scores": teacher.contiguous()}, ("logps",))


def token_case(case: str, b: int = 3, t: int = 5, v: int = 7, seed: int = 0, second: bool = True) -> Case:
    """Token-level inputs: logits (B, T, V), a mask of contiguous response positions after a prompt, labels.

    equal: teacher = student; length1: one response position per row; large: logits spread over ~1e4
    (log-probs near -1e4); masked_nan: NaN in every logit and label-side tensor at masked positions.
    """
    g = _gen(seed)
    spread = 1e4 if case == "large" else 3.0
    student = torch.randn(b, t, v, generator=g) * spread / 3.0
    teacher = student.clone() if case == "equal" else torch.randn(b, t, v, generator=g) * spread / 3.0
    start = torch.randint(0, 2, (b,), generator=g)
    length = torch.ones(b, dtype=torch.long) if case == "length1" else torch.randint(1, t - 1, (b,), generator=g)
    pos = torch.arange(t)[None, :]
    mask = (pos >= start[:, None]) & (pos < (start + length)[:, None])
    labels = torch.randint(0, v, (b, t), generator=g)
    sample_logps = -torch.rand(b, t, generator=g) * 3.0
    if case == "masked_nan":
        junk = ~mask[..., None].expand_as(student)
        student = torch.where(junk, float("nan"), student)
        teacher = torch.where(junk, float("nan"), teacher)
        sample_logps = torch.where(mask, sample_logps, float("nan"))
        labels = torch.where(mask, labels, -100)
    tensors = {"student_logits": student, "teacher_logits": teacher, "mask": mask, "labels": labels,
               "sample_logps": sample_logps}  # fmt: skip
    if not second:
        return Case(tensors, ("student_logits",))
    # a second response per row, for losses that need "rejected" (DistiLLM-2's student responses)
    other = token_case(case, b, t, v, seed + 1, second=False).tensors
    tensors |= {f"rejected_{k}": other[k] for k in ("student_logits", "teacher_logits", "mask", "labels")}
    return Case(tensors, ("student_logits", "rejected_student_logits"))


CASE_BUILDERS = {"pairwise": pairwise_case, "listwise": listwise_case, "token": token_case}


def assert_conforms(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """``|ours − ref| <= RTOL·|ref| + ATOL_SCALE·max|ref| + ATOL_FLOOR`` elementwise (no NaN anywhere)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(ref).all(), f"{what}: the reference itself is not finite: {ref}"
    assert torch.isfinite(ours).all(), f"{what}: not finite: {ours}"
    scale = ref.abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL_SCALE * scale + ATOL_FLOOR, msg=lambda m: f"{what}: {m}")
