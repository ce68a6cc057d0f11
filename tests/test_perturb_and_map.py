"""imle, aimle and perturbed: perturb-and-MAP estimators with a MAP-solver hook."""

import math

import pytest
import torch

import relaxit
from relaxit_core import ConfigError, ParameterError
from relaxit_core.diagnostics import exact_gradient, gradient_samples
from relaxit_plugins._solvers import argmax_map, sum_of_gamma_like, topk_map
from relaxit_plugins.imle import MapSolver, available_solvers, register_solver
from relaxit_plugins.perturbed import fenchel_young_loss, smoothed_argmax

Z = 5.0


def _quadratic(c, d):
    """f(z) = c·z + (d·z)^2 per batch element: non-linear, with ∇f = c + 2 (d·z) d."""
    def f(z):
        return (z * c).sum(-1) + (z * d).sum(-1) ** 2

    def grad(z):
        return c + 2 * (z * d).sum(-1, keepdim=True) * d

    return f, grad


@pytest.mark.parametrize("solver,k", [("topk", 3), ("argmax", 1)])
def test_imle_without_noise_is_the_map_difference_over_lambda(solver, k):
    lam = 2.5
    family = "subset" if solver == "topk" else "categorical"
    est = relaxit.get("imle", family=family, k=k, lambda_=lam, noise="none", solver=solver)
    theta = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    c, d = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    f, grad_f = _quadratic(c, d)
    out = est.estimate(f, num_samples=3, logits=theta)
    (g,) = torch.autograd.grad(out.surrogate.sum(), theta)
    map_ = (lambda s: topk_map(s, k)) if solver == "topk" else (lambda s: argmax_map(s))
    z = map_(theta.detach())
    expected = (z - map_(theta.detach() - lam * grad_f(z))) / lam
    assert torch.equal(out.samples, z.expand(3, 4, 7))
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)


def test_imle_gradient_scale_does_not_grow_with_lambda():
    """Divided by λ (uclnlp/torch-imle#3): a larger λ never gives a larger gradient here."""
    theta = torch.tensor([[2.0, 1.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    norms = []
    for lam in (1.5, 10.0, 100.0):
        est = relaxit.get("imle", family="subset", k=1, lambda_=lam, noise="none")
        out = est.estimate(lambda z: (z * c).sum(-1), num_samples=1, logits=theta)
        (g,) = torch.autograd.grad(out.surrogate.sum(), theta)
        norms.append(float(g.norm()))
    assert norms[0] >= norms[1] >= norms[2] > 0


def test_sum_of_gamma_moments():
    """E[ε] = (H_s - log s)/κ and Var[ε] = Σ_{i≤s} i^{-2} / κ (sum of κ copies: Gumbel as s → ∞)."""
    kappa, s, n = 4, 10, 200_000
    eps = sum_of_gamma_like(torch.Size((n,)), torch.zeros((), dtype=torch.float64), kappa, s)
    h = sum(1.0 / i for i in range(1, s + 1))
    mean, var = (h - math.log(s)) / kappa, sum(1.0 / i**2 for i in range(1, s + 1)) / kappa
    assert abs(float(eps.mean()) - mean) < Z * math.sqrt(var / n)
    fourth = float(((eps - mean) ** 4).mean())
    assert abs(float(eps.var()) - var) < Z * math.sqrt((fourth - var**2) / n)


def test_solver_hook_by_name_and_by_callable():
    def bottom_k(scores, k):  # a MAP solver of the negated scores
        return topk_map(-scores, k)

    register_solver("test_bottom_k", bottom_k, family="subset")
    assert available_solvers()["test_bottom_k"] == "subset"
    est = relaxit.build({"name": "imle", "family": "subset", "k": 2, "solver": "test_bottom_k", "noise": "none"})
    theta = torch.tensor([3.0, 2.0, 1.0, 0.0])
    out = est.estimate(lambda z: (z * theta).sum(-1), num_samples=1, logits=theta)
    assert out.samples[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert relaxit.build(est.config.model_dump()).config == est.config

    def first_one(scores):  # a one-argument callable with a declared family
        return torch.zeros_like(scores).index_fill_(-1, torch.tensor([0]), 1.0)

    first_one.family = "categorical"
    est2 = relaxit.get("imle", family="categorical", solver=first_one)
    assert est2.family == "categorical" and est2.config.solver == "first_one"
    assert est2.distribution(logits=torch.randn(2, 5)).sample()[:, 0].tolist() == [1.0, 1.0]
    est3 = relaxit.get("perturbed", family="subset", k=1, solver=MapSolver("mine", topk_map, "subset"))
    assert est3.config.solver == "mine"
    with pytest.raises(ConfigError, match="topk"):
        relaxit.get("imle", family="subset", solver="no_such_solver")
    with pytest.raises(ConfigError, match="categorical"):
        relaxit.get("perturbed", family="categorical", solver="topk")


@pytest.mark.parametrize("name", ["imle", "aimle", "perturbed"])
def test_family_is_required_and_must_fit_the_solver(name):
    with pytest.raises(ConfigError, match="'subset', 'categorical'"):
        relaxit.get(name)
    with pytest.raises(ConfigError, match="argmax"):
        relaxit.get(name, family="subset", solver="argmax")


def test_imle_needs_a_differentiable_objective():
    est = relaxit.get("imle", family="subset", k=1)
    with pytest.raises(ParameterError, match="differentiable"):
        est.estimate(lambda z: (z.argmax(-1) == 0).double(), logits=torch.randn(3, 4, dtype=torch.float64))


def test_aimle_central_difference_and_beta_adaptation():
    beta = 0.7
    est = relaxit.get("aimle", family="subset", k=2, noise="none", beta=beta, beta_step=0.05, target_norm=100.0)
    theta = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    c, d = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    f, grad_f = _quadratic(c, d)
    out = est.estimate(f, num_samples=2, logits=theta)
    (g,) = torch.autograd.grad(out.surrogate.sum(), theta)
    z = topk_map(theta.detach(), 2)
    df = grad_f(z)
    lam = beta * theta.detach().norm(dim=-1, keepdim=True) / df.norm(dim=-1, keepdim=True)
    expected = (topk_map(theta.detach() + lam * df, 2) - topk_map(theta.detach() - lam * df, 2)) / (2 * lam)
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)
    # the gradient has fewer non-zero entries than the target: beta grows by beta_step per call
    assert math.isclose(float(est.beta), beta + 0.05)
    est.estimate(f, num_samples=2, logits=theta)
    assert math.isclose(float(est.beta), beta + 0.1)
    low = relaxit.get("aimle", family="subset", k=2, beta=5.0, beta_step=10.0, target_norm=1e-3, noise="none")
    low.estimate(f, num_samples=2, logits=theta)
    assert float(low.beta) == 0.0  # a dense gradient above the target: beta falls, clamped at zero
    assert "beta" in est.state_dict()


def test_perturbed_unbiased_categorical_gumbel_is_softmax():
    """noise='gumbel', sigma=1: samples follow softmax(θ); the estimate is unbiased for its gradient."""
    est = relaxit.get("perturbed", family="categorical", noise="gumbel", sigma=1.0)
    theta = torch.randn(2, 4, dtype=torch.float64)
    w = torch.tensor([0.0, 3.0, -1.0, 2.0], dtype=torch.float64)

    def objective(z):  # not differentiable in z
        return ((z * w).sum(-1) > 1.0).double().sum(-1) + (z[..., 0, :] * z[..., 1, :]).sum(-1)

    exact = exact_gradient(objective, {"logits": theta}, "categorical")
    g = gradient_samples(est, objective, {"logits": theta}, 8000, num_samples=4)["logits"]
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert bool(((mean - exact["logits"]).abs() <= Z * se + 1e-12).all())


def test_perturbed_unbiased_normal_noise_two_categories():
    """n = 2, normal noise: P(y = e_0) = Φ((θ_0 - θ_1) / (σ√2)) in closed form."""
    sigma = 0.3
    est = relaxit.get("perturbed", family="categorical", sigma=sigma)
    theta = torch.tensor([[0.2, 0.0], [-0.1, 0.15]], dtype=torch.float64)
    v = torch.tensor([1.5, -0.5], dtype=torch.float64)
    objective = lambda z: (z * v).sum(-1).sum(-1)  # noqa: E731
    leaf = theta.clone().requires_grad_()
    p0 = torch.special.ndtr((leaf[:, 0] - leaf[:, 1]) / (sigma * math.sqrt(2)))
    (exact,) = torch.autograd.grad((p0 * v[0] + (1 - p0) * v[1]).sum(), leaf)
    g = gradient_samples(est, objective, {"logits": theta}, 20000, num_samples=2)["logits"]
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert bool(((mean - exact).abs() <= Z * se).all())
    assert est.evaluations(2) == 3


def test_smoothed_argmax_value_and_jacobian_against_monte_carlo():
    sigma, n_mc = 0.5, 200_000
    theta = torch.tensor([0.3, 0.1, -0.2, 0.0], dtype=torch.float64)
    y = smoothed_argmax(theta, sigma=sigma, num_samples=n_mc)
    # an independent high-sample Monte Carlo of E[argmax(θ + σZ)]
    ref = argmax_map(theta + sigma * torch.randn(n_mc, 4, dtype=torch.float64)).mean(0)
    se = (ref * (1 - ref) * 2 / n_mc).sqrt()
    assert bool(((y - ref).abs() <= Z * se).all())
    # Jacobian column j vs central finite differences of the Monte Carlo with common noise
    h = 0.02
    eps = torch.randn(n_mc, 4, dtype=torch.float64)
    theta_r = theta.clone().requires_grad_()
    for j in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[j] = h
        fd = (argmax_map(theta + e + sigma * eps) - argmax_map(theta - e + sigma * eps)) / (2 * h)  # [N, 4]
        (row,) = torch.autograd.grad(smoothed_argmax(theta_r, sigma=sigma, num_samples=n_mc)[j], theta_r)
        # row[i] = dŷ_j/dθ_i; the Jacobian is symmetric (a Hessian), compare with dŷ_i/dθ_j
        fd_se = fd.std(0) / math.sqrt(n_mc)
        assert bool(((row - fd.mean(0)).abs() <= Z * (fd_se + 0.02) ).all()), (j, row, fd.mean(0))


def test_fenchel_young_gradient_is_smoothed_argmax_minus_target():
    theta = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.tensor([0, 2, 4]), 5).double()
    torch.manual_seed(7)
    loss = fenchel_young_loss(theta, y, sigma=0.7, num_samples=64)
    (g,) = torch.autograd.grad(loss.sum(), theta)
    torch.manual_seed(7)
    eps = torch.randn(64, 3, 5, dtype=torch.float64)
    y_hat = argmax_map(theta.detach() + 0.7 * eps).mean(0)
    torch.testing.assert_close(g, y_hat - y)
    assert loss.shape == (3,)
