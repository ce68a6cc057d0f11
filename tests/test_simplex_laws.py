"""Density, KL and Laplace-bridge tests of ``invertible_gaussian`` and ``logistic_normal``."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import relaxit
from relaxit_plugins.invertible_gaussian import InvertibleGaussian, softmax_pp, softmax_pp_inverse
from relaxit_plugins.logistic_normal import LogisticNormal, dirichlet_from_logistic_normal, laplace_bridge

P_MIN = 1e-6
Z = 5.0


def simplex_integral(log_density, n):
    """∫ over the 2-simplex of exp(log_density(x)) w.r.t. Lebesgue on (x1, x2), by Gauss-Legendre
    on the square through x1 = u, x2 = (1 - u) v (Jacobian 1 - u)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    t = torch.tensor((nodes + 1) / 2, dtype=torch.float64)
    w = torch.tensor(weights / 2, dtype=torch.float64)
    u, v = torch.meshgrid(t, t, indexing="ij")
    x1, x2 = u, (1 - u) * v
    x = torch.stack([x1, x2, 1 - x1 - x2], -1)
    dens = log_density(x).exp() * (1 - u)
    return float((w[:, None] * w[None, :] * dens).sum())


def check_normalised(log_density):
    coarse, fine = simplex_integral(log_density, 200), simplex_integral(log_density, 400)
    err = abs(fine - coarse)  # quadrature error estimate
    assert abs(fine - 1) <= 10 * err + 1e-9, (fine, err)


# ------------------------------------------------------------------------------ IGR
@pytest.mark.parametrize("tau, delta", [(1.0, 1.0), (0.7, 2.0), (1.5, 0.3)])
def test_igr_density_integrates_to_one(tau, delta):
    d = InvertibleGaussian(torch.tensor([0.3, -0.4], dtype=torch.float64), torch.tensor([0.8, 1.1], dtype=torch.float64),
                           temperature=tau, delta=delta, validate_args=False)
    check_normalised(d.log_prob)


def test_igr_log_prob_is_the_change_of_variables_density():
    torch.manual_seed(0)
    loc, scale = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    tau, delta = 0.6, 1.7
    d = InvertibleGaussian(loc, scale, temperature=tau, delta=delta)
    for y in torch.randn(5, 3, dtype=torch.float64):
        x = softmax_pp(y, tau, delta)
        jac = torch.autograd.functional.jacobian(lambda t: softmax_pp(t, tau, delta)[:-1], y)
        want = torch.distributions.Normal(loc, scale).log_prob(y).sum() - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(d.log_prob(x), want, rtol=1e-10, atol=1e-10)
        assert torch.allclose(softmax_pp_inverse(x, tau, delta), y, atol=1e-10)


def test_igr_samples_map_back_to_the_gaussian():
    torch.manual_seed(1)
    loc, scale = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.7, 1.3], dtype=torch.float64)
    x = InvertibleGaussian(loc, scale, temperature=0.4, delta=0.5).rsample((5000,))
    y = softmax_pp_inverse(x, 0.4, 0.5)
    for j in range(2):
        assert stats.kstest(y[:, j].numpy(), "norm", args=(loc[j].item(), scale[j].item())).pvalue > P_MIN


def _mc_kl(p, q, n=20000):
    x = p.rsample((n,))
    diff = p.log_prob(x) - q.log_prob(x)
    return diff.mean(0), diff.std(0) / math.sqrt(n)


def test_igr_kl_same_temperature_is_the_gaussians_kl():
    torch.manual_seed(2)
    lp, sp = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.5
    lq, sq = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.5
    p = InvertibleGaussian(lp, sp, temperature=0.5, delta=2.0)
    q = InvertibleGaussian(lq, sq, temperature=0.5, delta=2.0)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(lp, sp), torch.distributions.Normal(lq, sq)).sum(-1)
    assert torch.allclose(torch.distributions.kl_divergence(p, q), want, rtol=1e-12)


@pytest.mark.parametrize("tp, dp, tq, dq", [(0.5, 1.0, 1.0, 1.0), (1.0, 0.5, 1.0, 2.0), (0.3, 2.0, 0.8, 0.7)])
def test_igr_kl_across_temperatures_matches_monte_carlo(tp, dp, tq, dq):
    torch.manual_seed(3)
    p = InvertibleGaussian(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64) + 0.5,
                           temperature=tp, delta=dp)
    q = InvertibleGaussian(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64) + 0.5,
                           temperature=tq, delta=dq)
    kl = torch.distributions.kl_divergence(p, q)
    mc, se = _mc_kl(p, q)
    assert bool(((mc - kl).abs() <= Z * se).all()), (kl, mc, se)
    # the Gaussians' KL (upstream's answer for any two temperatures) is not the KL here
    gauss = torch.distributions.kl_divergence(torch.distributions.Normal(p.loc, p.scale),
                                              torch.distributions.Normal(q.loc, q.scale)).sum(-1)
    assert bool(((mc - gauss).abs() > Z * se).any())


def test_igr_kl_keeps_gradients():
    loc = torch.zeros(2, requires_grad=True)
    p = InvertibleGaussian(loc, torch.ones(2), temperature=0.5, delta=1.0)
    q = InvertibleGaussian(torch.ones(2), torch.ones(2), temperature=1.0, delta=1.0)
    torch.distributions.kl_divergence(p, q).backward()
    assert loc.grad is not None and bool((loc.grad != 0).all())


# -------------------------------------------------------------------- logistic normal
@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_normal_density_integrates_to_one(seed):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(3, generator=g, dtype=torch.float64) * 0.5
    scale = torch.rand(3, generator=g, dtype=torch.float64) * 0.6 + 0.6
    check_normalised(LogisticNormal(loc, scale, validate_args=False).log_prob)


def test_logistic_normal_log_prob_against_a_dense_gaussian():
    torch.manual_seed(4)
    loc, scale = torch.randn(2, 5, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64) + 0.3
    d = LogisticNormal(loc, scale)
    x = d.rsample((7,))
    a = torch.cat([torch.eye(4), -torch.ones(4, 1)], 1).to(torch.float64)
    mvn = torch.distributions.MultivariateNormal(loc @ a.T, a @ torch.diag_embed(scale**2) @ a.T)
    u = x[..., :-1].log() - x[..., -1:].log()
    want = mvn.log_prob(u) - x.log().sum(-1)
    assert torch.allclose(d.log_prob(x), want, rtol=1e-10, atol=1e-10)


def test_logistic_normal_kl_closed_form():
    torch.manual_seed(5)
    p = LogisticNormal(torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64) + 0.4)
    q = LogisticNormal(torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64) + 0.4)
    kl = torch.distributions.kl_divergence(p, q)
    dense = torch.distributions.kl_divergence(p.alr_gaussian(), q.alr_gaussian())
    assert torch.allclose(kl, dense, rtol=1e-10)
    mc, se = _mc_kl(p, q)
    assert bool(((mc - kl).abs() <= Z * se).all())


def test_logistic_normal_samples_have_gaussian_log_ratios():
    torch.manual_seed(6)
    loc, scale = torch.tensor([0.2, -0.5, 1.0], dtype=torch.float64), torch.tensor([0.5, 1.0, 0.8], dtype=torch.float64)
    x = relaxit.get("logistic_normal").distribution(loc=loc, scale=scale).rsample((5000,))
    u = (x[:, 0] / x[:, 2]).log()
    sd = math.sqrt(0.5**2 + 0.8**2)
    assert stats.kstest(u.numpy(), "norm", args=(0.2 - 1.0, sd)).pvalue > P_MIN


# ---------------------------------------------------------------------- Laplace bridge
def test_laplace_bridge_round_trip():
    torch.manual_seed(7)
    alpha = torch.rand(5, 6, dtype=torch.float64) * 20 + 0.1
    loc, scale = laplace_bridge(alpha)
    assert torch.allclose(dirichlet_from_logistic_normal(loc, scale), alpha, rtol=1e-10)
    loc2, scale2 = laplace_bridge(dirichlet_from_logistic_normal(loc, scale))
    assert torch.allclose(loc2, loc, atol=1e-10) and torch.allclose(scale2, scale, rtol=1e-10)
    # invariant to a common shift of loc
    assert torch.allclose(dirichlet_from_logistic_normal(loc + 3.0, scale), alpha, rtol=1e-10)


def test_laplace_bridge_is_the_laplace_approximation():
    """Mode ``softmax(loc) = α/Σα``; ``scale²`` is the diagonal of the covariance ``P diag(1/α) P``
    (``P = I - 11ᵀ/K``), a generalised inverse of the Hessian ``diag(α) - ααᵀ/Σα`` of the
    Dirichlet's negative log density in the softmax basis: variances, not standard deviations."""
    alpha = torch.tensor([0.7, 2.0, 5.0, 11.0], dtype=torch.float64)
    k = alpha.shape[0]
    loc, scale = laplace_bridge(alpha)
    assert torch.allclose(loc.softmax(-1), alpha / alpha.sum())
    p = torch.eye(k, dtype=torch.float64) - 1 / k
    cov = p @ torch.diag(1 / alpha) @ p
    hess = torch.diag(alpha) - torch.outer(alpha, alpha) / alpha.sum()
    assert torch.allclose(hess @ cov @ hess, hess, atol=1e-10)
    assert torch.allclose(scale**2, torch.diagonal(cov), rtol=1e-12)

