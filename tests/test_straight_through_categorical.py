"""Law and gradient tests of the straight-through categorical family against the papers:
``st_categorical`` (Bengio et al. 2013), ``gumbel_rao`` (Paulus et al. 2021), ``reinmax``
(Liu et al. 2023, Algorithm 2) and ``decoupled_st_gumbel_softmax`` (Shah et al. 2024).

Statistical thresholds: chi-square / KS p-values above 1e-6, means within 5 standard errors,
all with fixed seeds; deterministic formulas to a tolerance from the dtype's epsilon.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_core.diagnostics import exact_gradient, gradient_samples, gradient_variance
from relaxit_core.distributions import gumbel_like
from relaxit_plugins.gumbel_rao import conditional_gumbel

Z = 5.0
P_MIN = 1e-6
DT = torch.float64
TOL = 64 * torch.finfo(DT).eps

NAMES = ["st_categorical", "gumbel_rao", "reinmax", "decoupled_st_gumbel_softmax"]


def jac(pi):
    """Softmax Jacobian ``diag(π) - π πᵀ`` (batched over leading dimensions)."""
    return torch.diag_embed(pi) - pi.unsqueeze(-1) * pi.unsqueeze(-2)


def quadratic(k, seed=0):
    """``f(z) = Σ w (z - c)² + (a·z)²`` on one categorical variable, and its gradient."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=DT) + 0.5
    c = torch.rand(k, generator=g, dtype=DT)
    a = torch.randn(k, generator=g, dtype=DT)

    def f(z):
        return (w * (z - c) ** 2).sum(-1) + (z * a).sum(-1) ** 2

    def grad_f(z):
        return 2 * w * (z - c) + 2 * (z * a).sum(-1, keepdim=True) * a

    return f, grad_f


def chi_square_p(samples, probs):
    """p-value of one-hot ``samples [N, K]`` against ``probs [K]``."""
    counts = samples.sum(0).to(DT)
    expected = probs.to(DT) * samples.shape[0]
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


def per_draw_grads(est, f, theta, n):
    """``n`` single-sample gradient estimates ``[n, K]`` and the samples ``[n, K]``."""
    leaves = theta.detach().unsqueeze(0).expand(n, *theta.shape).clone().requires_grad_(True)
    out = est.estimate(f, num_samples=1, logits=leaves)
    (g,) = torch.autograd.grad(out.surrogate.sum(), [leaves])
    return g, out.samples[0].detach()


# ----------------------------------------------------------------------------- forward law
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["sample", "rsample"])
def test_forward_law_is_categorical(name, method):
    torch.manual_seed(0)
    theta = torch.tensor([1.5, -0.5, 0.0, 0.7, -2.0], dtype=DT)
    d = relaxit.get(name).distribution(logits=theta.expand(40000, 5))
    x = getattr(d, method)().detach()
    assert torch.equal(x.sum(-1), torch.ones(40000, dtype=DT)) and bool(((x == 0) | (x == 1)).all())
    assert chi_square_p(x, theta.softmax(-1)) > P_MIN


@pytest.mark.parametrize("tau_f", [0.5, 2.0])
def test_decoupled_forward_temperature_tempers_the_law(tau_f):
    """τ_f takes effect: hard samples follow Categorical(softmax(θ/τ_f)), not Categorical(softmax(θ))."""
    torch.manual_seed(1)
    theta = torch.tensor([1.5, -0.5, 0.0, 0.7], dtype=DT)
    est = relaxit.get("decoupled_st_gumbel_softmax", tau_forward=tau_f, tau_backward=1.0)
    d = est.distribution(logits=theta.expand(40000, 4))
    x = d.rsample().detach()
    assert chi_square_p(x, (theta / tau_f).softmax(-1)) > P_MIN
    assert chi_square_p(x, theta.softmax(-1)) < P_MIN
    # log_prob, probs and KL describe that law
    assert torch.allclose(d.probs[0], (theta / tau_f).softmax(-1), atol=TOL)
    q = relaxit.get("decoupled_st_gumbel_softmax", tau_forward=tau_f).distribution(logits=theta.flip(0))
    p = est.distribution(logits=theta)
    want = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=theta / tau_f), torch.distributions.Categorical(logits=theta.flip(0) / tau_f)
    )
    assert torch.allclose(torch.distributions.kl_divergence(p, q), want, atol=TOL)


def test_decoupled_probs_and_logits_agree():
    theta = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    est = relaxit.get("decoupled_st_gumbel_softmax", tau_forward=0.7)
    a = est.distribution(logits=theta)
    b = est.distribution(probs=theta.softmax(-1))
    assert torch.allclose(a.probs, b.probs, atol=TOL)
    prev = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    try:
        with pytest.raises(ValueError):
            est.distribution(probs=torch.tensor([0.5, 0.7, -0.2], dtype=DT))
    finally:
        torch.distributions.Distribution.set_default_validate_args(prev)


# ---------------------------------------------------------------------- straight-through
def test_st_categorical_per_sample_gradient():
    """Bengio et al. (2013) ST: the estimate for sample D is (diag π - π πᵀ) ∇f(D), exactly."""
    torch.manual_seed(2)
    theta = torch.randn(6, dtype=DT)
    f, grad_f = quadratic(6)
    g, d = per_draw_grads(relaxit.get("st_categorical"), f, theta, 500)
    want = (jac(theta.softmax(-1)) @ grad_f(d).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(g, want, atol=TOL, rtol=0)


def test_st_categorical_expected_gradient_closed_form():
    """E[ST] = Σ_d π_d (diag π - π πᵀ) ∇f(e_d), within 5 standard errors."""
    torch.manual_seed(3)
    k = 5
    theta = torch.randn(k, dtype=DT)
    f, grad_f = quadratic(k, seed=1)
    pi = theta.softmax(-1)
    eye = torch.eye(k, dtype=DT)
    closed = (pi[:, None] * (jac(pi) @ grad_f(eye).T).T).sum(0)
    g = gradient_samples(relaxit.get("st_categorical"), f, {"logits": theta}, 20000)["logits"]
    se = g.std(0) / math.sqrt(g.shape[0])
    assert bool(((g.mean(0) - closed).abs() <= Z * se + TOL).all())
    # and ST is biased here (the objective is not linear): the exact gradient differs
    exact = exact_gradient(f, {"logits": theta}, "categorical")["logits"]
    assert ((closed - exact).abs() / (se + TOL)).max() > 10 * Z


# ------------------------------------------------------------------------------ ReinMax
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_reinmax_per_sample_gradient_is_algorithm_2(tau):
    """Liu et al. (2023), Algorithm 2: (2 J(π₁) - ½ J(π₀)) ∇f(D), π₁ = (D + softmax(θ/τ))/2."""
    torch.manual_seed(4)
    theta = torch.randn(6, dtype=DT)
    f, grad_f = quadratic(6)
    g, d = per_draw_grads(relaxit.get("reinmax", tau=tau), f, theta, 500)
    pi0 = theta.softmax(-1)
    pi1 = 0.5 * (d + (theta / tau).softmax(-1))
    m = 2 * jac(pi1) - 0.5 * jac(pi0)
    want = (m @ grad_f(d).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(g, want, atol=TOL, rtol=0)


def test_reinmax_tau_one_is_exact_for_quadratic_objectives():
    """ReinMax is Heun's method for f(e_i) - f(e_j): with τ = 1 its expectation is the exact
    gradient of a quadratic objective (two coupled variables here); with τ = 3 it is not."""
    torch.manual_seed(5)
    k = 4
    theta = torch.randn(2, k, dtype=DT)
    c = torch.rand(2, k, dtype=DT)
    a = torch.randn(k, k, dtype=DT)

    def f(z):
        return ((z - c) ** 2).sum((-1, -2)) + torch.einsum("...i,ij,...j->...", z[..., 0, :], a, z[..., 1, :])

    exact = exact_gradient(f, {"logits": theta}, "categorical")["logits"]
    for tau, unbiased in [(1.0, True), (3.0, False)]:
        s = gradient_variance(relaxit.get("reinmax", tau=tau), f, {"logits": theta}, 40000)["logits"]
        z = ((s.mean - exact).abs() / s.stderr).max().item()
        assert (z < Z) if unbiased else (z > 4 * Z), (tau, z)


# ---------------------------------------------------------------------------- Gumbel-Rao
def test_conditional_gumbel_law():
    """G | D (Paulus et al. 2021, Sec. 3.2) mixed over D ~ Categorical(π) is i.i.d. Gumbel(0, 1),
    and argmax(θ + G) = D for every draw."""
    torch.manual_seed(6)
    theta = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=DT)
    n = 50000
    d = relaxit.get("gumbel_rao").distribution(logits=theta.expand(n, 4))
    hard = d.sample()
    g = conditional_gumbel(theta.expand(n, 4), hard, 3)  # [3, n, 4]
    assert torch.equal((theta + g).argmax(-1), hard.argmax(-1).expand(3, n))
    for j in range(4):
        assert stats.kstest(g[0, :, j].numpy(), stats.gumbel_r.cdf).pvalue > P_MIN
    # the coordinates are independent: the maximum of θ + G is Gumbel(logsumexp θ)
    top = (theta + g[1]).max(-1).values - theta.logsumexp(-1)
    assert stats.kstest(top.numpy(), stats.gumbel_r.cdf).pvalue > P_MIN


def _objective_two_vars(seed=7):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(2, 5, generator=g, dtype=DT)
    a = torch.randn(5, 5, generator=g, dtype=DT)

    def f(z):
        return ((z - c) ** 2).sum((-1, -2)) + torch.einsum("...i,ij,...j->...", z[..., 0, :], a, z[..., 1, :])

    return f


def _total_variance_and_se(draws):
    """Trace of the covariance of ``draws [N, ...]`` and its standard error."""
    dev = (draws - draws.mean(0)).flatten(1).pow(2).sum(-1)
    return dev.mean().item(), dev.std().item() / math.sqrt(dev.shape[0])


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_gumbel_rao_same_mean_lower_variance_than_st_gs(tau):
    """Theorem 1 of Paulus et al. (2021): E[GR] = E[ST-GS] and Var[GR] <= Var[ST-GS] (same τ)."""
    torch.manual_seed(8)
    theta = torch.randn(2, 5, dtype=DT)
    f = _objective_two_vars()
    n = 10000
    gs = gradient_samples(relaxit.get("gumbel_softmax", tau=tau, hard=True), f, {"logits": theta}, n)["logits"]
    gr = gradient_samples(relaxit.get("gumbel_rao", tau=tau, num_conditional=10), f, {"logits": theta}, n)["logits"]
    se = (gs.var(0) / n + gr.var(0) / n).sqrt()
    assert bool(((gs.mean(0) - gr.mean(0)).abs() <= Z * se + TOL).all())
    v_gs, se_gs = _total_variance_and_se(gs)
    v_gr, se_gr = _total_variance_and_se(gr)
    assert v_gs - v_gr > Z * math.hypot(se_gs, se_gr), (v_gs, v_gr)
    # the diagnostics utility agrees; M = 1 is ST-GS in law; the variance falls with M
    stats_gr = gradient_variance(relaxit.get("gumbel_rao", tau=tau, num_conditional=10), f, {"logits": theta}, n)["logits"]
    assert abs(stats_gr.total_variance.item() - v_gr) < Z * math.sqrt(2) * se_gr
    g1 = gradient_samples(relaxit.get("gumbel_rao", tau=tau, num_conditional=1), f, {"logits": theta}, n)["logits"]
    v1, se1 = _total_variance_and_se(g1)
    assert abs(v1 - v_gs) < Z * math.hypot(se1, se_gs)  # M = 1 is ST-GS in law
    g100 = gradient_samples(relaxit.get("gumbel_rao", tau=tau, num_conditional=100), f, {"logits": theta}, 3000)["logits"]
    v100, se100 = _total_variance_and_se(g100)
    assert v1 - v100 > Z * math.hypot(se1, se100), (v1, v100)


# ------------------------------------------------------------------------ decoupled ST-GS
@pytest.mark.parametrize(("tau_f", "tau_b"), [(1.0, 0.5), (0.5, 2.0), (3.0, 0.3)])
def test_decoupled_per_sample_gradient(tau_f, tau_b):
    """Forward one_hot(argmax(θ/τ_f + g)); backward ∂/∂θ softmax((θ/τ_f + g)/τ_b) = J(y_b)/(τ_f τ_b)."""
    theta = torch.randn(300, 5, dtype=DT, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    w = torch.randn(5, dtype=DT)
    d = relaxit.get("decoupled_st_gumbel_softmax", tau_forward=tau_f, tau_backward=tau_b).distribution(logits=theta)
    torch.manual_seed(10)
    g = gumbel_like(torch.Size((300, 5)), theta)
    torch.manual_seed(10)
    z = d.rsample()
    ell = (theta.detach() / tau_f).log_softmax(-1)
    assert torch.equal(z.detach(), torch.nn.functional.one_hot((ell + g).argmax(-1), 5).to(DT))
    (grad,) = torch.autograd.grad((z * w).sum(), [theta])
    y_b = ((ell + g) / tau_b).softmax(-1)
    want = (jac(y_b) @ w) / (tau_f * tau_b)
    assert torch.allclose(grad, want, atol=TOL / min(tau_f * tau_b, 1), rtol=0)


def test_decoupled_at_unit_forward_temperature_is_st_gs():
    theta = torch.randn(50, 6, dtype=DT)
    f = lambda z: (z * torch.arange(6, dtype=DT)).sum(-1).pow(2)  # noqa: E731
    grads = []
    for name, kw in [("decoupled_st_gumbel_softmax", dict(tau_forward=1.0, tau_backward=0.4)),
                     ("gumbel_softmax", dict(tau=0.4, hard=True))]:
        torch.manual_seed(11)
        grads.append(gradient_samples(relaxit.get(name, **kw), f, {"logits": theta}, 20)["logits"])
    scale = float(grads[1].abs().max()) / 0.4  # rounding of a softmax at 1/τ = 2.5, times |∇f|
    assert torch.allclose(grads[0], grads[1], atol=TOL * scale, rtol=0)
