"""Law tests of ``correlated_relaxed_bernoulli`` (Gaussian copula + binary Concrete, Wang & Yin 2020)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import relaxit
from relaxit_plugins.correlated_relaxed_bernoulli import (
    CorrelatedRelaxedBernoulli,
    StraightThroughCorrelatedRelaxedBernoulli,
    _latent_from_logistic,
)

P_MIN = 1e-6
Z = 5.0
F64 = torch.float64
CORR3 = torch.tensor([[1.0, 0.6, -0.4], [0.6, 1.0, -0.2], [-0.4, -0.2, 1.0]], dtype=F64)
PROBS3 = torch.tensor([0.2, 0.55, 0.85], dtype=F64)


def test_hard_samples_have_exact_marginals_and_copula_joint():
    d = StraightThroughCorrelatedRelaxedBernoulli(probs=PROBS3, corr=CORR3, temperature=0.5)
    n = 40_000
    for z in (d.sample((n,)), d.rsample((n,)).detach()):
        assert set(z.unique().tolist()) <= {0.0, 1.0}
        for i in range(3):
            assert stats.binomtest(int(z[:, i].sum()), n, PROBS3[i].item()).pvalue > P_MIN
        a = stats.norm.ppf(PROBS3.numpy())
        for i, j in ((0, 1), (0, 2), (1, 2)):
            rho = CORR3[i, j].item()
            want = stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([a[i], a[j]])
            got = int((z[:, i] * z[:, j]).sum())
            assert stats.binomtest(got, n, want).pvalue > P_MIN, (i, j, got / n, want)


def test_soft_samples_latent_correlation_and_marginals():
    tau = 0.5
    logits = torch.logit(PROBS3)
    d = CorrelatedRelaxedBernoulli(logits=logits, corr=CORR3, temperature=tau)
    n = 20_000
    z = d.rsample((n,))
    # marginals: binary Concrete CDF F(z) = sigmoid(tau logit(z) - logits) (Maddison et al. 2017)
    for i in range(3):
        li = logits[i].item()
        cdf = lambda x: 1 / (1 + np.exp(-(tau * np.log(x / (1 - x)) - li)))  # noqa: E731
        assert stats.kstest(z[:, i].numpy(), cdf).pvalue > P_MIN
    # the latent Gaussian recovered from z has correlation corr (Fisher z, SE 1/sqrt(n-3))
    x = _latent_from_logistic(tau * torch.logit(z) - logits)
    r = torch.corrcoef(x.T)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        gap = abs(math.atanh(r[i, j].item()) - math.atanh(CORR3[i, j].item()))
        assert gap < Z / math.sqrt(n - 3)
    # Spearman's rho of the soft values is the Gaussian copula's (6/pi) asin(rho/2)
    rs = stats.spearmanr(z.numpy()).statistic
    for i, j in ((0, 1), (0, 2), (1, 2)):
        want = 6 / math.pi * math.asin(CORR3[i, j].item() / 2)
        assert abs(rs[i, j] - want) < Z / math.sqrt(n - 3)


def _grid_density(d, lim=36.0, h=0.2):
    """exp(log_prob) on a midpoint grid in t = logit(z) space, times the Jacobian dz/dt."""
    t = torch.arange(-lim + h / 2, lim, h, dtype=F64)
    t1, t2 = torch.meshgrid(t, t, indexing="ij")
    tt = torch.stack([t1, t2], -1)
    z = torch.sigmoid(tt)
    log_jac = (torch.nn.functional.logsigmoid(tt) + torch.nn.functional.logsigmoid(-tt)).sum(-1)
    return t, (d.log_prob(z) + log_jac).exp() * h * h


@pytest.mark.parametrize("tau,rho", [(1.0, 0.7), (0.5, -0.5), (2.0, 0.95)])
def test_density_integrates_to_one(tau, rho):
    corr = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)
    d = CorrelatedRelaxedBernoulli(logits=torch.tensor([0.3, -0.8], dtype=F64), corr=corr, temperature=tau)
    # midpoint rule in t = logit(z): spectrally accurate for this smooth integrand; the tails
    # beyond |t| = 36 hold about exp(-36 tau) of the mass
    _, w = _grid_density(d, lim=36.0, h=0.2)
    assert abs(w.sum().item() - 1) < 1e-5


def test_sample_law_matches_density_chi_square():
    corr = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    d = CorrelatedRelaxedBernoulli(logits=torch.tensor([0.5, -1.0], dtype=F64), corr=corr, temperature=1.0)
    t, w = _grid_density(d, h=0.1)
    edges = torch.tensor([-1e9, -3.0, -1.5, -0.5, 0.5, 1.5, 3.0, 1e9], dtype=F64)
    cell = torch.bucketize(t, edges) - 1
    k = len(edges) - 1
    expected = torch.zeros(k, k, dtype=F64)
    expected.index_put_((cell[:, None].expand_as(w), cell[None, :].expand_as(w)), w, accumulate=True)
    n = 20_000
    z = d.sample((n,))
    tz = torch.logit(z)
    b = torch.bucketize(tz, edges) - 1
    counts = torch.zeros(k, k, dtype=F64)
    counts.index_put_((b[:, 0], b[:, 1]), torch.ones(n, dtype=F64), accumulate=True)
    exp_counts = expected * n / expected.sum()
    keep = exp_counts > 5
    chi2 = ((counts - exp_counts) ** 2 / exp_counts)[keep].sum().item()
    assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > P_MIN


def test_three_variables_density_by_importance_sampling():
    # E_g[p(z) / g(z)] = 1 for the independent binary Concrete law g (torch's RelaxedBernoulli)
    tau = 0.7
    logits = torch.tensor([0.4, -0.3, 1.1], dtype=F64)
    corr = torch.tensor([[1.0, 0.3, 0.2], [0.3, 1.0, -0.25], [0.2, -0.25, 1.0]], dtype=F64)
    d = CorrelatedRelaxedBernoulli(logits=logits, corr=corr, temperature=tau)
    g = torch.distributions.RelaxedBernoulli(torch.tensor(tau, dtype=F64), logits=logits)
    n = 50_000
    z = g.sample((n,)).clamp(1e-12, 1 - 1e-12)
    w = (d.log_prob(z) - g.log_prob(z).sum(-1)).exp()
    assert abs(w.mean().item() - 1) < Z * w.std().item() / math.sqrt(n)


def test_identity_corr_is_the_product_of_binary_concretes():
    logits = torch.tensor([[0.4, -0.3, 1.1], [2.0, 0.0, -1.0]], dtype=F64)
    d = CorrelatedRelaxedBernoulli(logits=logits, corr=torch.eye(3, dtype=F64), temperature=0.6)
    z = d.rsample((50,))
    ref = torch.distributions.RelaxedBernoulli(torch.tensor(0.6, dtype=F64), logits=logits).log_prob(z).sum(-1)
    assert torch.allclose(d.log_prob(z), ref, rtol=1e-9, atol=1e-9)


def test_batched_corr_matches_per_element_laws():
    corr = torch.stack([CORR3, torch.eye(3, dtype=F64)])
    logits = torch.randn(2, 3, dtype=F64)
    d = CorrelatedRelaxedBernoulli(logits=logits, corr=corr, temperature=0.5)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    z = d.rsample((4,))
    for b in range(2):
        db = CorrelatedRelaxedBernoulli(logits=logits[b], corr=corr[b], temperature=0.5)
        assert torch.allclose(d.log_prob(z)[:, b], db.log_prob(z[:, b]))
    e = CorrelatedRelaxedBernoulli(logits=torch.randn(5, 3, dtype=F64), corr=CORR3, temperature=0.5)
    assert e.rsample((2,)).shape == (2, 5, 3) and e.expand((4, 5)).log_prob(e.sample()).shape == (4, 5)


@pytest.mark.parametrize(
    "corr,msg",
    [
        ([[1.0, 0.5], [0.4, 1.0]], "symmetric"),
        ([[2.0, 0.5], [0.5, 1.0]], "unit diagonal"),
        ([[1.0, 1.5], [1.5, 1.0]], "positive definite"),
        ([[1.0, float("nan")], [float("nan"), 1.0]], "finite"),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], r"\[\.\.\., 2, 2\]"),
    ],
)
def test_invalid_corr_raises_a_clear_error(corr, msg):
    est = relaxit.get("correlated_relaxed_bernoulli")
    with pytest.raises(ValueError, match=msg):
        est.distribution(logits=torch.zeros(2), corr=torch.tensor(corr))


def test_missing_corr_is_a_parameter_error():
    with pytest.raises(relaxit.ParameterError, match="corr"):
        relaxit.get("correlated_relaxed_bernoulli").distribution(logits=torch.zeros(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard", [False, True])
def test_finite_at_extreme_params(dtype, hard):
    est = relaxit.get("correlated_relaxed_bernoulli", tau=0.05, hard=hard)
    logits = torch.tensor([30.0, -30.0, 0.0], dtype=dtype, requires_grad=True)
    corr = torch.tensor([[1.0, 0.99, -0.99], [0.99, 1.0, -0.98], [-0.99, -0.98, 1.0]], dtype=dtype)
    corr = 0.995 * corr + 0.005 * torch.eye(3, dtype=dtype)
    corr.requires_grad_(True)
    d = est.distribution(logits=logits, corr=corr)
    z = d.rsample((64,))
    loss = (z * torch.linspace(-1, 1, 3, dtype=dtype)).sum()
    if not hard:
        lp = d.log_prob(z)
        assert torch.isfinite(lp).all()
        loss = loss + lp.sum()
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(corr.grad).all()


def test_log_prob_finite_in_the_far_tails():
    # |L| beyond the range where sigmoid(-|L|) is representable: the asymptotic quantile takes over
    d = CorrelatedRelaxedBernoulli(logits=torch.zeros(2, dtype=F64), corr=torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64), temperature=100.0)
    lp = d.log_prob(torch.tensor([[1e-12, 0.5], [1 - 1e-12, 1e-300]], dtype=F64))
    assert torch.isfinite(lp).all()
    x = _latent_from_logistic(torch.tensor([-800.0, -30.0, 0.0, 30.0, 800.0], dtype=F64))
    # x = Phi^{-1}(sigmoid(L)), odd in L
    ref = -stats.norm.ppf(1 / (1 + math.exp(30.0)))  # accurate form of ppf(sigmoid(30))
    assert abs(x[3].item() - ref) < 1e-9 and abs(x[1].item() + ref) < 1e-9 and x[2].item() == 0.0
    # at L = -800 (sigmoid underflows): log Phi(x) = log sigmoid(-800) = -800 to double precision
    assert abs(stats.norm.logcdf(x[0].item()) + 800.0) < 1e-9 * 800
    assert x[4].item() == -x[0].item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    logits = torch.tensor([-30.0, 0.0, 1.0, 30.0], dtype=dtype, requires_grad=True)
    corr = torch.full((4, 4), 0.3, dtype=dtype) + 0.7 * torch.eye(4, dtype=dtype)
    for hard in (False, True):
        d = relaxit.get("correlated_relaxed_bernoulli", tau=0.5, hard=hard).distribution(logits=logits, corr=corr)
        z = d.rsample((64,))
        assert z.dtype == dtype and torch.isfinite(z).all()
        loss = z.float().sum()
        if not hard:
            lp = d.log_prob(z)
            assert lp.dtype == dtype and torch.isfinite(lp).all()
            loss = loss + lp.float().sum()
        loss.backward()
        assert torch.isfinite(logits.grad).all()
