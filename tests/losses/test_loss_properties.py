"""Property-based tests (hypothesis) over every registered loss, by kind.

The losses come from the registry, so a newly registered loss is covered without editing this
file; hyper-parameters named in the tables below are drawn from sane ranges, any other keeps
its default.

* pairwise: (B,) loss, finite with finite gradients for inputs in a sane range, (B,) detached
  metrics, per-example separability (a batch's loss is the concatenation of its parts' losses,
  so gradient accumulation is exact), ``reward/accuracy`` in {0, 1};
* listwise: Plackett-Luce probabilities sum to 1, ``pad_pd`` in [0, log 2] and 0 when the
  student's scores equal the teacher's up to a constant, ``pad_rd`` >= 0, plus the pairwise
  shape/detached/separable checks;
* token: >= 0, exactly 0 for identical student and teacher logits, separable per example.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdistill.losses import INPUTS_BY_KIND, REGISTRY, get_loss
from prefdistill.losses.listwise import plackett_luce_logprobs

torch.set_num_threads(1)


def _names(kind: str) -> list[str]:
    return sorted(n for n, e in REGISTRY.items() if e.kind == kind)


PAIRWISE, LISTWISE, TOKEN = _names("pairwise"), _names("listwise"), _names("token")
# Policy-gradient surrogates (MiniLLM) are not divergences: they can be negative. Own test below.
ON_POLICY = [n for n in TOKEN if "policy_samples" in get_loss(n).needs]
# Losses over two responses per row (needs "rejected": DistiLLM-2's teacher and student responses)
# take a second side these draws do not make; tests/losses/test_distillm2.py checks the same properties.
TWO_RESPONSES = [n for n in TOKEN if "rejected" in get_loss(n).needs]
TOKEN = [n for n in TOKEN if n not in ON_POLICY and n not in TWO_RESPONSES]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)

_unit = st.floats(0.0, 1.0)
HPARAMS = {
    "pairwise": {
        "beta": st.floats(0.01, 2.5),
        "label_smoothing": st.floats(0.0, 0.45),
        "reference_free": st.booleans(),
        "length_norm": st.sampled_from(["mean", "sum"]),
        "gamma_beta_ratio": st.floats(0.0, 1.0),
        "loss_type": st.sampled_from(["sigmoid", "hinge"]),
        "margin": st.floats(0.0, 3.0),
        "nll_weight": _unit,
    },
    "listwise": {"beta": st.floats(0.1, 20.0)},
    "token": {
        "temperature": st.floats(0.5, 3.0),
        "kd_ratio": _unit,
        "beta": st.one_of(st.sampled_from([0.0, 1.0]), _unit),  # JSD endpoints are special-cased
        "alpha": st.one_of(st.just(0.0), _unit),
    },
}


# Losses whose ranges differ from the shared table above.
PER_LOSS = {
    "exo_pair": {"label_smoothing": st.floats(1e-3, 0.45)},  # EXO needs ε > 0
    "cpo": {"loss_type": st.sampled_from(["sigmoid", "simpo"])},  # label smoothing is refused with hinge/ipo
    "abkd": {p: st.one_of(st.just(0.0), st.floats(1e-3, 2.0)) for p in ("alpha", "beta")},  # 0 or >= 1e-3
    "taid": {"beta": st.floats(0.0, 0.999)},  # momentum: beta = 1 would never move
    "opd": {
        "iw_gamma": st.one_of(st.none(), st.floats(0.0, 2.0)),
        "estimator": st.sampled_from(["full", "sampled"]),
    },
    "minillm": {"gamma": _unit, "clip": st.floats(0.0, 0.5)},
}
# Batch-coupled by design (checked for everything but separability): AOT sorts the batch's margins. The
# batch-coupled settings of other losses (pad_pd divergence="released", sft token_mean="batch") are not
# drawn here: the defaults are separable.
BATCH_COUPLED = {"aot", "aot_unpaired"}


def _hparams(data, name: str) -> dict:
    entry = REGISTRY[name]
    table = {**HPARAMS[entry.kind], **PER_LOSS.get(name, {})}
    return {k: data.draw(table[k], label=k) for k in entry.defaults if k in table}


def _vec(data, elements, b: int, dtype=torch.float32, label: str = "") -> torch.Tensor:
    return torch.tensor(data.draw(st.lists(elements, min_size=b, max_size=b), label=label), dtype=dtype)


def _tensor_args(name: str, pool: dict) -> list[str]:
    """The tensors of ``pool`` that the loss's inputs (its kind's dataclass) take; every required one must be there."""
    fields = dataclasses.fields(INPUTS_BY_KIND[REGISTRY[name].kind])
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    assert required <= set(pool), (
        f"loss {name!r} requires tensors this test does not know: {required - set(pool)}"
    )
    return [f.name for f in fields if f.name in pool]


def _split(tensors: dict, k: int) -> tuple[dict, dict]:
    return {n: t[:k] for n, t in tensors.items()}, {n: t[k:] for n, t in tensors.items()}


def _check_metrics(out, b: int) -> None:
    for key, value in out.metrics.items():
        assert value.shape == (b,), key
        assert not value.requires_grad, key
        assert torch.isfinite(value).all(), key
    if "reward/accuracy" in out.metrics:
        assert set(out.metrics["reward/accuracy"].tolist()) <= {0.0, 1.0}


def _check_separable(loss, tensors: dict, k: int) -> None:
    full = loss(**tensors)
    parts = [loss(**half) for half in _split(tensors, k)]
    torch.testing.assert_close(full.loss, torch.cat([p.loss for p in parts]), rtol=1e-5, atol=1e-5)
    for key in full.metrics:
        torch.testing.assert_close(
            full.metrics[key], torch.cat([p.metrics[key] for p in parts]), rtol=1e-5, atol=1e-5
        )


# ------------------------------------------------------------------------------ pairwise
@pytest.mark.parametrize("name", PAIRWISE)
@SETTINGS
@given(data=st.data())
def test_pairwise_properties(name, data):
    b = data.draw(st.integers(2, 8), label="B")
    logp = st.floats(-200.0, 0.0, width=32)  # summed response log-probs
    pool = {
        "chosen_logps": _vec(data, logp, b, label="chosen_logps").requires_grad_(),
        "rejected_logps": _vec(data, logp, b, label="rejected_logps").requires_grad_(),
        "chosen_lengths": _vec(data, st.integers(1, 64), b, torch.long, "chosen_lengths"),
        "rejected_lengths": _vec(data, st.integers(1, 64), b, torch.long, "rejected_lengths"),
        "ref_chosen_logps": _vec(data, logp, b, label="ref_chosen_logps"),
        "ref_rejected_logps": _vec(data, logp, b, label="ref_rejected_logps"),
        "chosen_scores": _vec(data, _unit, b, label="chosen_scores"),
        "rejected_scores": _vec(data, _unit, b, label="rejected_scores"),
    }
    args = _tensor_args(name, pool)
    tensors = {k: pool[k] for k in args}
    loss = get_loss(name, **_hparams(data, name))

    out = loss(**tensors)
    assert out.loss.shape == (b,)
    assert torch.isfinite(out.loss).all()
    out.loss.sum().backward()
    for k in ("chosen_logps", "rejected_logps"):
        if k in tensors and tensors[k].grad is not None:
            assert torch.isfinite(tensors[k].grad).all(), k
    _check_metrics(out, b)
    if name not in BATCH_COUPLED:
        _check_separable(loss, tensors, data.draw(st.integers(1, b - 1), label="split"))


# ------------------------------------------------------------------------------ listwise
@SETTINGS
@given(data=st.data())
def test_plackett_luce_probabilities_sum_to_one(data):
    b, n = data.draw(st.integers(1, 4), label="B"), data.draw(st.integers(1, 5), label="n")
    scores = torch.tensor(
        data.draw(st.lists(st.lists(st.floats(-30.0, 30.0), min_size=n, max_size=n), min_size=b, max_size=b))
    )
    logprobs = plackett_luce_logprobs(scores)
    assert logprobs.shape == (b, math.factorial(n))
    assert (logprobs <= 1e-6).all()
    torch.testing.assert_close(
        logprobs.double().exp().sum(-1), torch.ones(b, dtype=torch.double), atol=1e-4, rtol=0
    )


def _list_batch(data, b: int, n: int) -> dict:
    row = st.lists(st.floats(-100.0, 0.0, width=32), min_size=n, max_size=n)
    lengths = st.lists(st.integers(1, 40), min_size=n, max_size=n)
    return {
        "logps": torch.tensor(
            data.draw(st.lists(row, min_size=b, max_size=b), label="logps"), requires_grad=True
        ),
        "lengths": torch.tensor(data.draw(st.lists(lengths, min_size=b, max_size=b), label="lengths")),
        "teacher_scores": torch.tensor(
            data.draw(
                st.lists(st.lists(st.floats(-5.0, 0.0), min_size=n, max_size=n), min_size=b, max_size=b)
            ),
            dtype=torch.float32,
        ),
    }


@pytest.mark.parametrize("name", LISTWISE)
@SETTINGS
@given(data=st.data())
def test_listwise_properties(name, data):
    b, n = data.draw(st.integers(2, 5), label="B"), data.draw(st.integers(2, 5), label="n")
    tensors = _list_batch(data, b, n)
    loss = get_loss(name, **_hparams(data, name))
    out = loss(**tensors)
    assert out.loss.shape == (b,)
    assert torch.isfinite(out.loss).all()
    assert (out.loss >= -1e-5).all()  # a JSD and a negative log-likelihood
    if name == "pad_pd":
        assert (out.loss <= math.log(2.0) + 1e-5).all()
    out.loss.sum().backward()
    assert torch.isfinite(tensors["logps"].grad).all()
    _check_metrics(out, b)
    _check_separable(loss, tensors, data.draw(st.integers(1, b - 1), label="split"))


@SETTINGS
@given(data=st.data())
def test_pad_pd_is_zero_when_student_matches_teacher_up_to_a_constant(data):
    b, n = data.draw(st.integers(1, 4), label="B"), data.draw(st.integers(2, 5), label="n")
    teacher = torch.tensor(
        data.draw(st.lists(st.lists(st.floats(-5.0, 0.0), min_size=n, max_size=n), min_size=b, max_size=b))
    )
    shift = data.draw(st.floats(-20.0, 20.0), label="shift")
    lengths = torch.tensor(
        data.draw(st.lists(st.lists(st.integers(1, 30), min_size=n, max_size=n), min_size=b, max_size=b))
    )
    logps = (teacher + shift) * lengths  # β·logps/lengths = β·(teacher + shift)
    out = get_loss("pad_pd", beta=data.draw(st.floats(0.1, 10.0), label="beta"))(
        logps=logps, lengths=lengths, teacher_scores=teacher
    )
    torch.testing.assert_close(out.loss, torch.zeros(b), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ token
def _token_inputs(data) -> tuple[int, dict]:
    """A drawn batch size B and token-loss inputs of a drawn shape (B, T, V)."""
    b, t, v = (
        data.draw(st.integers(lo, hi), label=lbl) for lo, hi, lbl in ((2, 4, "B"), (1, 5, "T"), (2, 8, "V"))
    )
    return b, _token_batch(data, b, t, v)


def _token_batch(data, b: int, t: int, v: int) -> dict:
    logits = st.lists(
        st.lists(st.lists(st.floats(-10.0, 10.0, width=32), min_size=v, max_size=v), min_size=t, max_size=t),
        min_size=b,
        max_size=b,
    )
    mask = st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b)
    labels = st.lists(st.lists(st.integers(0, v - 1), min_size=t, max_size=t), min_size=b, max_size=b)
    return {
        "student_logits": torch.tensor(data.draw(logits, label="student"), requires_grad=True),
        "teacher_logits": torch.tensor(data.draw(logits, label="teacher")),
        "mask": torch.tensor(data.draw(mask, label="mask")),
        "labels": torch.tensor(data.draw(labels, label="labels")),
    }


@pytest.mark.parametrize("name", TOKEN)
@SETTINGS
@given(data=st.data())
def test_token_losses_nonnegative_separable_and_zero_for_identical_logits(name, data):
    b, tensors = _token_inputs(data)
    hp = _hparams(data, name)
    loss = get_loss(name, **hp)
    out = loss(**tensors)
    assert out.loss.shape == (b,)
    assert torch.isfinite(out.loss).all()
    assert (out.loss >= -1e-5).all(), out.loss
    _check_metrics(out, b)
    _check_separable(loss, tensors, data.draw(st.integers(1, b - 1), label="split"))

    pure_kd = get_loss(name, **{**hp, "kd_ratio": 1.0})
    same = pure_kd(**{**tensors, "teacher_logits": tensors["student_logits"].detach().clone()})
    torch.testing.assert_close(same.loss, torch.zeros(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ON_POLICY)
@SETTINGS
@given(data=st.data())
def test_policy_gradient_losses_finite_separable_and_zero_for_identical_logits(name, data):
    b, tensors = _token_inputs(data)
    hp = _hparams(data, name)
    loss = get_loss(name, **hp)
    out = loss(**tensors)
    assert out.loss.shape == (b,)
    assert torch.isfinite(out.loss).all()
    _check_metrics(out, b)
    _check_separable(loss, tensors, data.draw(st.integers(1, b - 1), label="split"))
    pure = get_loss(
        name, **{**hp, **({"kd_ratio": 1.0} if "kd_ratio" in hp else {})}
    )  # no cross-entropy part
    same = pure(**{**tensors, "teacher_logits": tensors["student_logits"].detach().clone()})
    torch.testing.assert_close(same.loss, torch.zeros(b), atol=1e-5, rtol=0)
