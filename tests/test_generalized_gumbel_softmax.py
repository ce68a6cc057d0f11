"""Law, truncation and gradient tests of ``generalized_gumbel_softmax`` (Joo et al. 2020)."""

import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_core.distributions import gumbel_like
from relaxit_plugins.generalized_gumbel_softmax import (
    GeneralizedGumbelSoftmax,
    StraightThroughGeneralizedGumbelSoftmax,
    truncate,
)

P_MIN = 1e-6


def chi_square(x, values, probs):
    counts = (x.reshape(-1, 1) == values).to(torch.float64).sum(0)
    assert counts.sum().item() == x.numel(), "a sample is not one of the values"
    expected = probs.to(torch.float64) * x.numel()
    stat = float(((counts - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(stat, len(values) - 1))


@pytest.mark.parametrize("method", ["sample", "rsample"])
@pytest.mark.parametrize("param", ["logits", "probs"])
def test_hard_samples_follow_the_pmf(method, param):
    torch.manual_seed(0)
    values = torch.tensor([-2.0, 0.0, 3.0, 7.0], dtype=torch.float64)
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    arg = {"probs": probs} if param == "probs" else {"logits": probs.log() + 1.7}
    d = relaxit.get("generalized_gumbel_softmax", hard=True, tau=0.3).distribution(values=values, **arg)
    x = getattr(d, method)((30000,)).detach()
    assert chi_square(x, values, probs) > P_MIN
    assert torch.allclose(d.log_prob(values).exp(), probs, rtol=1e-12, atol=0)


def test_sample_shape_and_batched_values():
    values = torch.tensor([[0.0, 1.0, 2.0], [0.0, 5.0, 9.0]])
    d = StraightThroughGeneralizedGumbelSoftmax(logits=torch.zeros(4, 2, 3), values=values, temperature=0.5)
    assert d.batch_shape == (4, 2) and d.event_shape == ()
    x = d.rsample((2, 3))
    assert x.shape == (2, 3, 4, 2)
    assert bool(d.support.check(x).all())
    assert bool(((x[..., 1] == 0) | (x[..., 1] == 5) | (x[..., 1] == 9)).all())
    s = d.enumerate_support(expand=False)
    assert s.shape == (3, 1, 2)


def test_soft_relaxation_tends_to_the_hard_value_and_stays_in_range():
    logits = torch.randn(1000, 5, dtype=torch.float64)
    values = torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    torch.manual_seed(1)
    soft = GeneralizedGumbelSoftmax(logits=logits, values=values, temperature=1e-3).rsample()
    torch.manual_seed(1)
    hard = StraightThroughGeneralizedGumbelSoftmax(logits=logits, values=values, temperature=1e-3).rsample()
    torch.manual_seed(1)
    scores = logits + gumbel_like(logits.shape, logits)  # the same noise
    top2 = scores.topk(2).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05  # away from ties at this temperature: weights e^{-50}
    assert clear.sum() > 900
    assert (soft - hard)[clear].abs().max().item() < 1e-12
    y = GeneralizedGumbelSoftmax(logits=logits, values=values, temperature=2.0).rsample((3,))
    assert bool(((y >= 0) & (y <= 8)).all())


def test_soft_law_claims_no_log_prob():
    est = relaxit.get("generalized_gumbel_softmax")
    assert {str(c) for c in est.capabilities} == {"rsample"}
    with pytest.raises(NotImplementedError):
        est.distribution(logits=torch.zeros(3), values=torch.arange(3.0)).log_prob(torch.tensor(1.0))


def test_gradient_wrt_values_is_unbiased():
    """``X = v_I`` with ``I ~ π``, so ``E[dX/dv_k] = π_k`` exactly."""
    torch.manual_seed(2)
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    values = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    n = 20000
    d = StraightThroughGeneralizedGumbelSoftmax(probs=probs.expand(n, 3), values=values, temperature=0.5)
    (g,) = torch.autograd.grad(d.rsample().sum(), values)
    mean = g / n
    se = (probs * (1 - probs) / n).sqrt()
    assert bool(((mean - probs).abs() <= 5 * se).all())


def test_straight_through_logit_gradient_is_the_soft_one():
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    values = torch.tensor([0.0, 1.0, 3.0, 6.0], dtype=torch.float64)
    torch.manual_seed(3)
    x = StraightThroughGeneralizedGumbelSoftmax(logits=logits, values=values, temperature=0.7).rsample((5,))
    (g_hard,) = torch.autograd.grad(x.sum(), logits)
    torch.manual_seed(3)
    y = GeneralizedGumbelSoftmax(logits=logits, values=values, temperature=0.7).rsample((5,))
    (g_soft,) = torch.autograd.grad(y.sum(), logits)
    assert torch.allclose(g_hard, g_soft, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "dist, scipy_dist",
    [
        (torch.distributions.Poisson(torch.tensor([0.5, 4.0, 30.0], dtype=torch.float64)),
         stats.poisson(mu=[[0.5], [4.0], [30.0]])),
        (torch.distributions.Geometric(probs=torch.tensor([0.2, 0.7], dtype=torch.float64)),
         stats.geom(p=[[0.2], [0.7]], loc=-1)),
        (torch.distributions.Binomial(40, probs=torch.tensor([0.1, 0.5], dtype=torch.float64)),
         stats.binom(n=40, p=[[0.1], [0.5]])),
        (torch.distributions.NegativeBinomial(3.0, probs=torch.tensor([0.4], dtype=torch.float64)),
         stats.nbinom(n=3.0, p=[[0.6]])),
    ],
    ids=["poisson", "geometric", "binomial", "negative_binomial"],
)
@pytest.mark.parametrize("tol", [1e-3, 1e-8])
def test_truncate_bounds_the_dropped_mass(dist, scipy_dist, tol):
    t = truncate(dist, tol=tol)
    values = t.values
    assert bool((values.diff() == 1).all()) and values[0] >= 0
    lo, hi = int(values[0]), int(values[-1])
    kept = scipy_dist.cdf(hi) - (scipy_dist.cdf(lo - 1) if lo > 0 else 0.0)
    dropped_exact = torch.tensor(1 - kept, dtype=torch.float64).reshape(t.dropped.shape)
    assert bool((dropped_exact <= tol).all())
    assert torch.allclose(t.dropped, dropped_exact, atol=1e-12, rtol=0)
    assert torch.allclose(t.logits, dist.log_prob(values.unsqueeze(-1)).T, atol=1e-12)


def test_truncated_poisson_samples_follow_the_poisson_law():
    torch.manual_seed(4)
    rate = torch.tensor(3.5, dtype=torch.float64)
    t = truncate(torch.distributions.Poisson(rate), tol=1e-9)
    est = relaxit.get("generalized_gumbel_softmax", hard=True, tau=0.5)
    x = est.distribution(logits=t.logits, values=t.values).rsample((30000,)).detach()
    # compare with the Poisson PMF, pooling the tail beyond 9 into one cell
    cells = torch.arange(10, dtype=torch.float64)
    pmf = torch.distributions.Poisson(rate).log_prob(cells).exp()
    counts = torch.stack([(x == c).sum() for c in cells]).to(torch.float64)
    counts = torch.cat([counts, (x >= 10).sum().reshape(1).to(torch.float64)])
    expected = torch.cat([pmf, (1 - pmf.sum()).reshape(1)]) * x.numel()
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(stat, len(counts) - 1) > P_MIN


def test_truncate_rejects_laws_off_the_non_negative_integers():
    with pytest.raises(ValueError):
        truncate(torch.distributions.Normal(0.0, 1.0))


def test_values_must_be_increasing_integers_under_validation():
    est = relaxit.get("generalized_gumbel_softmax")
    with pytest.raises(ValueError):
        est.distribution(logits=torch.zeros(3), values=torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError):
        est.distribution(logits=torch.zeros(3), values=torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError):
        est.distribution(logits=torch.zeros(3), values=torch.tensor([0.0, 1.0]))


def test_estimate_on_a_truncated_poisson():
    torch.manual_seed(5)
    t = truncate(torch.distributions.Poisson(torch.tensor([2.0, 6.0])), tol=1e-6)
    logits = t.logits.clone().requires_grad_(True)
    est = relaxit.get("generalized_gumbel_softmax", tau=0.5)
    out = est.estimate(lambda x: (x - 4.0) ** 2, num_samples=8, logits=logits, values=t.values)
    out.surrogate.sum().backward()
    assert out.value.shape == (2,) and bool(torch.isfinite(logits.grad).all())
    assert math.isfinite(out.value.sum().item())
