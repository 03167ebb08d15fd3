"""PAD listwise losses and the Plackett-Luce helper: normalisation, hand-worked values, invariances."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.losses import get_loss
from prefdistill.losses.listwise import plackett_luce_logprobs


def _listwise(name):
    def call(logps, lengths, teacher_scores, **hparams):
        return get_loss(name, **hparams)(logps=logps, lengths=lengths, teacher_scores=teacher_scores)

    return call


pad_pd, pad_rd = _listwise("pad_pd"), _listwise("pad_rd")

METHOD_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"


def _brute_pl(scores: list[float]) -> list[float]:
    """Plackett-Luce log-probs by the textbook product, one ranking at a time."""
    out = []
    for perm in itertools.permutations(range(len(scores))):
        lp = 0.0
        for k in range(len(perm)):
            rest = [scores[j] for j in perm[k:]]
            lp += scores[perm[k]] - math.log(sum(math.exp(r) for r in rest))
        out.append(lp)
    return out


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_pl_normalised_and_matches_brute_force(n):
    torch.manual_seed(n)
    scores = 3 * torch.randn(2, n)
    logp = plackett_luce_logprobs(scores)
    assert logp.shape == (2, math.factorial(n))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2))
    if n <= 4:
        brute = torch.tensor([_brute_pl(row) for row in scores.tolist()])
        torch.testing.assert_close(logp, brute, atol=1e-5, rtol=1e-5)


def test_pl_n2_is_logistic():
    """n = 2: P(identity) = e^{s1}/(e^{s1}+e^{s2}) = σ(s1 − s2); P(swap) = σ(s2 − s1)."""
    s = torch.tensor([[1.0, 0.0], [0.3, 2.0]])
    logp = plackett_luce_logprobs(s)
    d = s[:, 0] - s[:, 1]
    torch.testing.assert_close(logp[:, 0], torch.nn.functional.logsigmoid(d))
    torch.testing.assert_close(logp[:, 1], torch.nn.functional.logsigmoid(-d))
    assert logp[0, 0].exp().item() == pytest.approx(1 / (1 + math.exp(-1)))  # σ(1) = 0.731059


def test_pl_identity_most_likely_for_sorted_scores():
    s = torch.tensor([[4.0, 2.5, 1.0, 0.9, -3.0]])
    assert plackett_luce_logprobs(s).argmax(-1).item() == 0  # column 0 = identity ranking


def _inputs(n, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 20, (b, n), generator=g)
    logps = (-torch.rand(b, n, generator=g) * 2 * lengths).requires_grad_(True)
    teacher = -torch.rand(b, n, generator=g) * 3
    return logps, lengths, teacher


def test_pd_zero_when_scores_agree_up_to_constant_and_positive_otherwise():
    """Student A = teacher + c (c = 0.7) -> identical PL distributions -> JSD = 0."""
    _, lengths, teacher = _inputs(4)
    logps = lengths * (teacher + 0.7)
    out = pad_pd(logps, lengths, teacher, beta=10.0)
    torch.testing.assert_close(out.loss, torch.zeros(3), atol=1e-6, rtol=0)
    assert (out.metrics["listwise/teacher_top1_agreement"] == 1).all()
    logps, lengths, teacher = _inputs(4, seed=1)
    assert (pad_pd(logps, lengths, teacher).loss > 1e-4).all()


def test_pd_hand_worked_n2():
    """Student P = (0.5, 0.5) (equal A); teacher β·Δr = ln 3 -> P_T = (0.75, 0.25); M = (0.625, 0.375).

    KL(P_S‖M) = ½ln(16/15) = 0.0322693; KL(P_T‖M) = 0.75 ln1.2 + 0.25 ln(2/3) = 0.0353749;
    JSD = ½(0.0322693 + 0.0353749) = 0.0338221.
    """
    logps = torch.tensor([[-2.0, -4.0]])
    lengths = torch.tensor([[2, 4]])
    teacher = torch.tensor([[math.log(3) / 10, 0.0]])
    assert pad_pd(logps, lengths, teacher, beta=10.0).loss.item() == pytest.approx(0.0338221, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_pd_nonnegative_and_symmetric_in_scores(seed):
    logps, lengths, teacher = _inputs(5, seed=seed)
    out = pad_pd(logps, lengths, teacher, beta=3.0)
    assert (out.loss >= -1e-6).all()
    # JSD is symmetric: swapping the roles of student and teacher scores gives the same value.
    a = (logps / lengths).detach()
    swapped = pad_pd(lengths * teacher, lengths, a, beta=3.0).loss
    torch.testing.assert_close(out.loss.detach(), swapped, atol=1e-5, rtol=1e-4)


def test_pd_n6_runs_and_n9_raises():
    logps, lengths, teacher = _inputs(6)
    out = pad_pd(logps, lengths, teacher)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()
    logps, lengths, teacher = _inputs(9)
    with pytest.raises(ValueError, match="pad_rd"):
        pad_pd(logps, lengths, teacher)


@pytest.mark.parametrize("fn", [pad_pd, pad_rd])
def test_gradient_flows_to_logps_only(fn):
    logps, lengths, teacher = _inputs(4)
    teacher.requires_grad_(True)
    out = fn(logps, lengths, teacher)
    out.loss.sum().backward()
    assert teacher.grad is None
    assert logps.grad is not None and torch.isfinite(logps.grad).all() and logps.grad.abs().sum() > 0
    assert all(not m.requires_grad and m.shape == (3,) for m in out.metrics.values())


def test_rd_equal_student_scores_is_log_n_factorial():
    """All student scores equal -> every ranking has P = 1/n! -> rd = ln n! (ln 24 = 3.178054)."""
    lengths = torch.tensor([[2, 4, 5, 1]])
    logps = -1.5 * lengths.float()
    teacher = torch.tensor([[0.1, -2.0, 0.5, 0.3]])
    assert pad_rd(logps, lengths, teacher).loss.item() == pytest.approx(math.log(24), abs=1e-5)


def test_rd_hand_worked_n3():
    """β = 1, student A = (0, 1, 2), teacher order τ* = (0, 2, 1) (teacher r = (3, 1, 2)).

    −log P = −[0 − ln(1 + e + e²)] − [2 − ln(e² + e)] − 0 = ln(1+e+e²) − 2 + ln(e²+e) = 2.720868
    """
    lengths = torch.ones(1, 3)
    logps = torch.tensor([[0.0, 1.0, 2.0]])
    teacher = torch.tensor([[3.0, 1.0, 2.0]])
    e = math.e
    want = math.log(1 + e + e * e) - 2 + math.log(e * e + e)
    assert want == pytest.approx(2.720868, abs=1e-6)
    assert pad_rd(logps, lengths, teacher, beta=1.0).loss.item() == pytest.approx(want, abs=1e-5)


def test_rd_invariances_and_positivity():
    """Invariant to a constant added to student A and to a monotone map of teacher scores; > 0."""
    logps, lengths, teacher = _inputs(5)
    base = pad_rd(logps, lengths, teacher).loss
    assert (base > 0).all()
    shifted = pad_rd(logps + 0.4 * lengths, lengths, teacher).loss  # A -> A + 0.4
    torch.testing.assert_close(base, shifted, atol=1e-4, rtol=1e-5)
    monotone = pad_rd(logps, lengths, torch.exp(3 * teacher) + 5).loss
    torch.testing.assert_close(base, monotone)
    # Not invariant to a permutation that breaks the student/teacher pairing: it must be able to fail.
    assert not torch.allclose(base, pad_rd(logps, lengths, teacher.flip(-1)).loss)


def test_rd_equals_minus_pl_logprob_of_teacher_ranking():
    logps, lengths, teacher = _inputs(4)
    student = 10.0 * logps.detach() / lengths
    all_lp = plackett_luce_logprobs(student)
    perms = list(itertools.permutations(range(4)))
    idx = [perms.index(tuple(torch.argsort(t, descending=True).tolist())) for t in teacher]
    want = -all_lp[torch.arange(3), torch.tensor(idx)]
    torch.testing.assert_close(pad_rd(logps, lengths, teacher).loss.detach(), want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["pad_pd", "pad_rd"])
def test_config_instantiates_and_runs(name):
    loss = instantiate(OmegaConf.load(METHOD_DIR / f"{name}.yaml"))
    assert loss.name == name and loss.kind == "listwise" and loss.needs == {"scores"}
    want = {"pad_pd": {"beta": 10.0, "divergence": "jsd"}, "pad_rd": {"beta": 10.0}}[name]
    assert loss.hparams == get_loss(name).hparams == want
    logps, lengths, teacher = _inputs(4)
    out = loss(logps=logps, lengths=lengths, teacher_scores=teacher)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()


def test_permutation_cache_built_in_inference_mode_still_trains():
    """Lightning validates under inference mode; the cached ranking index must still serve training."""
    from prefdistill.losses import get_loss

    loss = get_loss("pad_pd")
    with torch.inference_mode():
        loss(logps=torch.randn(2, 5), lengths=torch.ones(2, 5), teacher_scores=torch.randn(2, 5))
    logps = torch.randn(2, 5, requires_grad=True)
    loss(logps=logps, lengths=torch.ones(2, 5), teacher_scores=torch.randn(2, 5)).loss.sum().backward()
    assert logps.grad is not None


# ---------------------------------------------------------------- pad_pd divergence="released"
def _two(student: list[list[float]], teacher: list[list[float]], **hp):
    """n = 2 lists with unit lengths and beta = 1, so the scores are the given numbers."""
    logps = torch.tensor(student, dtype=torch.float32, requires_grad=True)
    out = pad_pd(logps, torch.ones_like(logps), torch.tensor(teacher), beta=1.0, **hp)
    return out, logps


def test_released_pd_by_hand_single_example():
    """s = (0, 0): P_S = (1/2, 1/2); t = (log 3, 0): P_T = (3/4, 1/4); M = (5/8, 3/8) (B = 1: a true mixture).
    released = 1/2 [KL(M||P_S) + KL(M||P_T)] (F.kl_div's order), jsd = 1/2 [KL(P_S||M) + KL(P_T||M)]."""
    released, _ = _two([[0.0, 0.0]], [[math.log(3.0), 0.0]], divergence="released")
    kl_m_s = 5 / 8 * math.log((5 / 8) / (1 / 2)) + 3 / 8 * math.log((3 / 8) / (1 / 2))
    kl_m_t = 5 / 8 * math.log((5 / 8) / (3 / 4)) + 3 / 8 * math.log((3 / 8) / (1 / 4))
    torch.testing.assert_close(released.loss, torch.tensor([0.5 * (kl_m_s + kl_m_t)]))
    jsd, _ = _two([[0.0, 0.0]], [[math.log(3.0), 0.0]])
    kl_s_m = 0.5 * math.log(0.5 / (5 / 8)) + 0.5 * math.log(0.5 / (3 / 8))
    kl_t_m = 0.75 * math.log(0.75 / (5 / 8)) + 0.25 * math.log(0.25 / (3 / 8))
    torch.testing.assert_close(jsd.loss, torch.tensor([0.5 * (kl_s_m + kl_t_m)]))
    assert not torch.allclose(released.loss, jsd.loss)  # the two forms differ


def test_released_pd_pools_m_over_the_micro_batch():
    """A second example with P_S = P_T = (1/2, 1/2) changes the first one's loss: M = 1/2 (P_S1 + P_T1 + P_S2
    + P_T2) = (9/8, 7/8), mass 2 (not normalised), as in the release's logsumexp over torch.cat(dim=0)."""
    alone, _ = _two([[0.0, 0.0]], [[math.log(3.0), 0.0]], divergence="released")
    pooled, _ = _two([[0.0, 0.0], [0.0, 0.0]], [[math.log(3.0), 0.0], [0.0, 0.0]], divergence="released")
    m = (9 / 8, 7 / 8)

    def kl_m(p):
        return sum(mi * math.log(mi / pi) for mi, pi in zip(m, p))

    first = 0.5 * (kl_m((0.5, 0.5)) + kl_m((0.75, 0.25)))
    second = 0.5 * (kl_m((0.5, 0.5)) + kl_m((0.5, 0.5)))
    torch.testing.assert_close(pooled.loss, torch.tensor([first, second]))
    assert not torch.allclose(pooled.loss[:1], alone.loss)  # depends on batch-mates: not separable


def test_at_beta_10_the_jsd_saturates_and_the_released_form_keeps_its_gradient():
    """PAD's beta = 10 with a student whose order disagrees with the teacher's: the JSD sits at log 2 and its
    gradient all but vanishes, the released form's does not (why the PAD experiment uses the released form
    with PAD's learning rate). With M pooled over the batch, the released form is not 0 when each student
    matches its teacher."""
    lengths = torch.tensor([[40.0, 120.0, 75.0, 200.0], [60.0, 90.0, 150.0, 30.0]])
    teacher = torch.tensor([[-0.1, -0.8, -1.5, -2.2], [-1.9, -0.3, -1.1, -0.7]])  # log MCQ probabilities
    student = torch.tensor([[-1.6, -1.2, -0.9, -0.6], [-0.5, -1.4, -0.8, -1.7]])  # mean token log-probs
    norms = {}
    for divergence in ("jsd", "released"):
        logps = (student * lengths).requires_grad_()
        out = get_loss("pad_pd", beta=10.0, divergence=divergence)(logps=logps, lengths=lengths, teacher_scores=teacher)
        out.loss.mean().backward()
        norms[divergence] = logps.grad.norm().item()
        if divergence == "jsd":
            assert (out.loss > 0.99 * math.log(2.0)).all(), out.loss
    assert norms["released"] > 100 * norms["jsd"], norms
    # each student matches its teacher, but M is pooled over two different examples: not 0 (the JSD is)
    rows = [[0.0, -1.0], [0.0, 2.0]]
    assert (_two(rows, rows, divergence="released")[0].loss > 0.1).all()
    torch.testing.assert_close(_two(rows, rows)[0].loss, torch.zeros(2), atol=1e-6, rtol=0)
