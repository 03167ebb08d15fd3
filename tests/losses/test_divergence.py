"""Token-level KD divergences: hand-worked 2-token values, invariants, top-k path, masking, configs."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from bound import bound
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.losses import divergence, get_loss

# the registered losses, called with tensors and hyper-parameters in one keyword list
D = SimpleNamespace(**{n: bound(n) for n in ("kd_fkl", "kd_rkl", "kd_tvd", "kd_jsd", "kd_skl", "kd_srkl")})
D._fkl = divergence._fkl

METHOD_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"
ALL = {
    "kd_fkl": D.kd_fkl,
    "kd_rkl": D.kd_rkl,
    "kd_tvd": D.kd_tvd,
    "kd_jsd": D.kd_jsd,
    "kd_skl": D.kd_skl,
    "kd_srkl": D.kd_srkl,
}

# Teacher p = (0.5, 0.5) (logits 0, 0); student q = (0.8, 0.2) (logits ln 4, 0). One token.
P_LOGITS = torch.tensor([[[0.0, 0.0]]])
Q_LOGITS = torch.tensor([[[math.log(4.0), 0.0]]])
ONE = torch.ones(1, 1, dtype=torch.bool)


def _rand(b=3, t=5, v=11, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(b, t, v, generator=g)).requires_grad_(True)
    te = scale * torch.randn(b, t, v, generator=g)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    labels = torch.randint(0, v, (b, t), generator=g).masked_fill(~mask, -100)
    return s, te, mask, labels


def _val(fn, s=Q_LOGITS, t=P_LOGITS, **hp):
    return fn(student_logits=s, teacher_logits=t, mask=ONE, **hp).loss.item()


def test_hand_worked_two_token_vocab():
    """p = (.5, .5), q = (.8, .2).

    FKL = ½ln(.5/.8) + ½ln(.5/.2) = ½ln(1.5625) = ln 1.25 = 0.2231436
    RKL = .8 ln 1.6 + .2 ln .4 = 0.3760029 − 0.1832581 = 0.1927448
    TVD = ½(.3 + .3) = 0.3
    JSD_.5: m = (.65, .35): ½[½ln(.5/.65) + ½ln(.5/.35)] + ½[.8 ln(.8/.65) + .2 ln(.2/.35)]
            = 0.0235776 + 0.0270942 = 0.0506718
    """
    assert _val(D.kd_fkl) == pytest.approx(math.log(1.25), abs=1e-6)
    assert _val(D.kd_rkl) == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), abs=1e-6)
    assert _val(D.kd_tvd) == pytest.approx(0.3, abs=1e-6)
    jsd = 0.5 * (0.5 * math.log(0.5 / 0.65) + 0.5 * math.log(0.5 / 0.35))
    jsd += 0.5 * (0.8 * math.log(0.8 / 0.65) + 0.2 * math.log(0.2 / 0.35))
    assert _val(D.kd_jsd) == pytest.approx(jsd, abs=1e-6)
    assert jsd == pytest.approx(0.0506718, abs=1e-6)


def test_temperature_squared_scaling():
    """Student logits (2 ln 4, 0) at τ = 2 give q = (.8, .2) again: FKL = τ²·ln 1.25 = 0.8925742."""
    val = _val(D.kd_fkl, s=2 * Q_LOGITS, t=2 * P_LOGITS, temperature=2.0)
    assert val == pytest.approx(4 * math.log(1.25), abs=1e-6)


def test_kd_ratio_mixing_exact():
    """label = token 1: CE = −ln .2 = ln 5; r = .25 -> .75·ln 5 + .25·ln 1.25 = 1.2628725."""
    labels = torch.tensor([[1]])
    out = D.kd_fkl(student_logits=Q_LOGITS, teacher_logits=P_LOGITS, mask=ONE, labels=labels, kd_ratio=0.25)
    assert out.loss.item() == pytest.approx(0.75 * math.log(5) + 0.25 * math.log(1.25), abs=1e-6)
    assert out.metrics["kd/ce"].item() == pytest.approx(math.log(5), abs=1e-6)
    s, t, mask, labels = _rand()
    out = D.kd_rkl(
        student_logits=s, teacher_logits=t, mask=mask, labels=labels, kd_ratio=0.3, temperature=1.7
    )
    want = 0.7 * out.metrics["kd/ce"] + 0.3 * out.metrics["kd/divergence"]
    torch.testing.assert_close(out.loss.detach(), want)
    with pytest.raises(ValueError, match="labels"):
        D.kd_fkl(student_logits=s, teacher_logits=t, mask=mask, kd_ratio=0.5)


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("seed", range(3))
def test_nonnegative_and_zero_for_identical(name, seed):
    s, t, mask, labels = _rand(seed=seed)
    out = ALL[name](student_logits=s, teacher_logits=t, mask=mask, labels=labels)
    assert out.loss.shape == (3,) and (out.loss > 1e-3).all()
    same = ALL[name](student_logits=t + 1.3, teacher_logits=t, mask=mask)  # softmax is shift-invariant
    torch.testing.assert_close(same.loss, torch.zeros(3), atol=1e-6, rtol=0)
    out.loss.sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad[~mask].abs().sum() == 0


def test_jsd_endpoints_are_forward_and_reverse_kl_exactly():
    s, t, mask, _ = _rand(scale=1.0)
    kw = {"student_logits": s, "teacher_logits": t, "mask": mask}
    assert torch.equal(D.kd_jsd(**kw, beta=0.0).loss, D.kd_fkl(**kw).loss)
    assert torch.equal(D.kd_jsd(**kw, beta=1.0).loss, D.kd_rkl(**kw).loss)
    # Interior values vanish towards the ends like β·FKL and (1 − β)·RKL: the endpoints are special cases.
    eps = 1e-3
    near0 = D.kd_jsd(**kw, beta=eps).loss / eps
    near1 = D.kd_jsd(**kw, beta=1 - eps).loss / eps
    torch.testing.assert_close(near0, D.kd_fkl(**kw).loss, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(near1, D.kd_rkl(**kw).loss, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("beta", [0.5, 0.2, 0.9])
def test_jsd_swap_symmetry(beta):
    """JSD_β(p‖q) = JSD_{1−β}(q‖p); at β = ½ swapping teacher and student changes nothing."""
    s, t, mask, _ = _rand()
    s = s.detach()
    a = D.kd_jsd(student_logits=s, teacher_logits=t, mask=mask, beta=beta).loss
    b = D.kd_jsd(student_logits=t, teacher_logits=s, mask=mask, beta=1 - beta).loss
    torch.testing.assert_close(a, b)
    if beta != 0.5:
        c = D.kd_jsd(student_logits=t, teacher_logits=s, mask=mask, beta=beta).loss
        assert not torch.allclose(a, c)


def test_skew_alpha_zero_is_plain_kl():
    s, t, mask, _ = _rand()
    kw = {"student_logits": s, "teacher_logits": t, "mask": mask}
    torch.testing.assert_close(D.kd_skl(**kw, alpha=0.0).loss, D.kd_fkl(**kw).loss, rtol=0, atol=0)
    torch.testing.assert_close(D.kd_srkl(**kw, alpha=0.0).loss, D.kd_rkl(**kw).loss, rtol=0, atol=0)
    # and skewing shrinks the divergence (the mixture is closer to the first argument)
    assert (D.kd_skl(**kw).loss < D.kd_fkl(**kw).loss).all()
    assert (D.kd_srkl(**kw).loss < D.kd_rkl(**kw).loss).all()


def test_per_example_token_mean_over_mask():
    """Example 0 distils tokens 0 and 2 only; example 1 none (loss 0, no NaN)."""
    s, t, _, _ = _rand(b=2, t=3)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    per_tok = D._fkl(torch.log_softmax(t, -1), torch.log_softmax(s.detach(), -1))
    out = D.kd_fkl(student_logits=s, teacher_logits=t, mask=mask)
    assert out.loss[0].item() == pytest.approx(((per_tok[0, 0] + per_tok[0, 2]) / 2).item(), abs=1e-6)
    assert out.loss[1].item() == 0.0


@pytest.mark.parametrize("name", list(ALL))
def test_topk_with_k_equal_vocab_matches_full(name):
    s, t, mask, labels = _rand(v=7)
    ids = torch.argsort(t, dim=-1, descending=True)
    topk = torch.log_softmax(t, -1).gather(-1, ids)
    hp = {"temperature": 1.5, "kd_ratio": 0.6}
    full = ALL[name](student_logits=s, teacher_logits=t, mask=mask, labels=labels, **hp)
    sparse = ALL[name](
        student_logits=s, teacher_topk_logps=topk, teacher_topk_ids=ids, mask=mask, labels=labels, **hp
    )
    torch.testing.assert_close(sparse.loss, full.loss, atol=1e-5, rtol=1e-5)


def test_topk_renormalises_both_sides_on_the_support():
    """k = 2 of V = 3: only the relative probabilities on the support matter."""
    t_logits = torch.tensor([[[2.0, 1.0, -5.0]]])
    ids = torch.tensor([[[0, 1]]])
    topk = torch.log_softmax(t_logits, -1).gather(-1, ids)
    s_logits = torch.tensor([[[3.0, 2.0, 9.0]]])  # same ratio on {0, 1}, huge mass on token 2
    out = D.kd_fkl(student_logits=s_logits, teacher_topk_logps=topk, teacher_topk_ids=ids, mask=ONE)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        D.kd_fkl(student_logits=s_logits, teacher_logits=t_logits, teacher_topk_logps=topk, mask=ONE)


@pytest.mark.parametrize("name", list(ALL))
def test_zero_probabilities_give_finite_values(name):
    """-inf logits (p or q exactly 0) and extreme logits: finite loss and gradients."""
    s, t, mask, _ = _rand(v=6, scale=60.0)
    t = t.clone()
    t[..., 0] = float("-inf")
    s = s.detach().clone()
    s[..., 1] = float("-inf")
    s[..., 2] = float("-inf")
    t[..., 2] = float("-inf")
    s.requires_grad_(True)
    out = ALL[name](student_logits=s, teacher_logits=t, mask=mask)
    assert torch.isfinite(out.loss).all(), out.loss  # neither NaN nor +-inf
    out.loss.sum().backward()
    assert torch.isfinite(s.grad).all()
    # the bounded divergences stay within their bounds: TVD <= 1, JSD <= ln 2 (disjoint supports reach them)
    limit = {"kd_tvd": 1.0, "kd_jsd": math.log(2)}.get(name)
    if limit is not None:
        assert (out.loss <= limit + 1e-6).all(), out.loss


@pytest.mark.parametrize("name", list(ALL))
def test_teacher_detached_and_metrics_shape(name):
    s, t, mask, labels = _rand()
    t.requires_grad_(True)
    out = ALL[name](student_logits=s, teacher_logits=t, mask=mask, labels=labels)
    out.loss.sum().backward()
    assert t.grad is None and s.grad is not None
    assert set(out.metrics) == {"kd/divergence", "kd/ce"}
    assert all(not m.requires_grad and m.shape == (3,) for m in out.metrics.values())


@pytest.mark.parametrize("name", list(ALL))
def test_config_instantiates_and_runs(name):
    loss = instantiate(OmegaConf.load(METHOD_DIR / f"{name}.yaml"))
    assert loss.name == name and loss.kind == "token" and loss.needs == {"teacher", "token_logps"}
    assert loss.hparams == get_loss(name).hparams
    s, t, mask, labels = _rand()
    out = loss(student_logits=s, teacher_logits=t, mask=mask, labels=labels)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()
