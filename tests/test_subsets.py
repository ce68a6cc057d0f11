"""The exact k-subset law (relaxit_plugins._ksubset) and the estimators built on it: simple, sfess."""

import cmath
import itertools
import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_core.diagnostics import exact_gradient, gradient_samples
from relaxit_plugins._ksubset import KSubset, inclusion_probs, log_partition, log_partition_tree, sample_k_subset

Z = 5.0  # standard errors


def enumerate_law(theta, k):
    """(support [C, n], probs [C, *batch]) by brute force over itertools.combinations."""
    n = theta.shape[-1]
    combos = list(itertools.combinations(range(n), k))
    support = torch.zeros(len(combos), n, dtype=theta.dtype)
    for c, idx in enumerate(combos):
        support[c, list(idx)] = 1.0
    scores = torch.einsum("cn,...n->c...", support, theta)
    return support, scores.softmax(0), scores.logsumexp(0)


@pytest.mark.parametrize("n,k", [(1, 1), (4, 0), (4, 4), (5, 1), (6, 3), (7, 5), (9, 2), (10, 9), (12, 5), (12, 8)])
def test_log_partition_and_marginals_exact_by_enumeration(n, k):
    theta = torch.randn(3, n, dtype=torch.float64) * 3
    support, probs, lz = enumerate_law(theta, k)
    mu = torch.einsum("c...,cn->...n", probs, support)
    torch.testing.assert_close(log_partition(theta, k), lz, atol=1e-6, rtol=0)
    torch.testing.assert_close(inclusion_probs(theta, k), mu, atol=1e-6, rtol=0)
    d = KSubset(theta, k)
    torch.testing.assert_close(d.log_prob(support.unsqueeze(1)).exp(), probs, atol=1e-12, rtol=0)
    assert torch.equal(d.enumerate_support(expand=False).squeeze(1), support)  # itertools order


def _poisson_binomial_dft(p):
    """P(Σ Bernoulli(p_i) = j), j = 0..n, by the DFT of the characteristic function
    (Fernandez & Williams 2010): an algorithm independent of the dynamic program."""
    n = p.shape[-1]
    c = cmath.exp(2j * math.pi / (n + 1))
    w = torch.tensor([c**l for l in range(n + 1)], dtype=torch.complex128)
    pc = p.to(torch.complex128).unsqueeze(-1)
    chf = (pc * w + (1 - pc)).prod(-2)  # [..., n + 1]
    return torch.fft.fft(chf, norm="forward").real


def test_n40_k10_against_poisson_binomial_dft():
    n, k = 40, 10
    theta = torch.randn(4, n, dtype=torch.float64)
    p = torch.sigmoid(theta)
    pb = _poisson_binomial_dft(p)  # [4, n + 1]
    lz = torch.nn.functional.softplus(theta).sum(-1) + pb[:, k].log()
    torch.testing.assert_close(log_partition(theta, k), lz, atol=1e-6, rtol=0)
    # μ_i = p_i P(Σ_{j≠i} = k - 1) / P(Σ = k): leave item i out of the DFT
    mask = ~torch.eye(n, dtype=torch.bool)
    p_rest = p.unsqueeze(1).expand(4, n, n)[:, mask].reshape(4, n, n - 1)
    pb_rest = _poisson_binomial_dft(p_rest)  # [4, n, n]
    mu = p * pb_rest[..., k - 1] / pb[:, k : k + 1]
    torch.testing.assert_close(inclusion_probs(theta, k), mu, atol=1e-6, rtol=0)
    assert abs(float(inclusion_probs(theta, k).sum(-1).sub(k).abs().max())) < 1e-9


@pytest.mark.parametrize("k", [2, 4])  # k = 4 of 6 samples the complement
def test_samples_follow_the_law_chi_square(k):
    n, num = 6, 20000
    theta = torch.randn(2, n, dtype=torch.float64) * 1.5
    support, probs, _ = enumerate_law(theta, k)
    x = sample_k_subset(theta, k, (num,))
    assert x.shape == (num, 2, n) and bool((x.sum(-1) == k).all())
    which = (x.unsqueeze(1) == support.unsqueeze(1)).all(-1).double().argmax(1)  # [num, 2]
    for b in range(2):
        counts = torch.bincount(which[:, b], minlength=support.shape[0]).double()
        stat, pval = stats.chisquare(counts.numpy(), (probs[:, b] * num).numpy())
        assert pval > 1e-6, (b, stat, pval)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampling_large_n_extreme_logits_and_mean(dtype):
    n, k, num = 60, 15, 4000
    theta = torch.randn(3, n, dtype=torch.float64) * 2
    theta[0, :20] = 30.0  # saturated: these 15 of 20 ... all tied at the top
    theta[1, :10] = -30.0
    x = sample_k_subset(theta.to(dtype), k, (num,))
    assert x.dtype == dtype and bool((x.sum(-1) == k).all()) and bool(((x == 0) | (x == 1)).all())
    mu = inclusion_probs(theta, k)
    se = (mu * (1 - mu) / num).sqrt()
    err = (x.double().mean(0) - mu).abs()
    assert bool((err <= Z * se + 1e-3).all()), float((err / (se + 1e-12)).max())


def test_marginals_backward_is_the_covariance():
    n, k = 7, 3
    theta = (torch.randn(2, n, dtype=torch.float64) * 2).requires_grad_()
    support, probs, _ = enumerate_law(theta.detach(), k)
    mu = torch.einsum("cb,cn->bn", probs, support)
    cov = torch.einsum("cb,cn,cm->bnm", probs, support, support) - mu.unsqueeze(-1) * mu.unsqueeze(-2)
    g = torch.randn(2, n, dtype=torch.float64)
    (grad,) = torch.autograd.grad((inclusion_probs(theta, k) * g).sum(), theta)
    torch.testing.assert_close(grad, torch.einsum("bnm,bm->bn", cov, g), atol=1e-10, rtol=0)
    (gz,) = torch.autograd.grad(log_partition(theta, k).sum(), theta)
    torch.testing.assert_close(gz, mu, atol=1e-10, rtol=0)


def test_kl_and_entropy_by_enumeration():
    n, k = 6, 2
    tp, tq = torch.randn(2, n, dtype=torch.float64), torch.randn(2, n, dtype=torch.float64)
    p, q = KSubset(tp, k), KSubset(tq, k)
    s = p.enumerate_support()
    lp, lq = p.log_prob(s), q.log_prob(s)
    torch.testing.assert_close(torch.distributions.kl_divergence(p, q), (lp.exp() * (lp - lq)).sum(0))
    torch.testing.assert_close(p.entropy(), -(lp.exp() * lp).sum(0))


def test_simple_gradient_is_exact_for_linear_objectives():
    """For f(z) = c·z every SIMPLE sample gives Cov(z) c = d/dθ E[c·z], the exact gradient."""
    n, k = 8, 3
    est = relaxit.get("simple", k=k)
    theta = torch.randn(4, n, dtype=torch.float64)
    c = torch.randn(4, n, dtype=torch.float64)
    support, probs, _ = enumerate_law(theta, k)  # per batch element
    leaf = theta.clone().requires_grad_()
    scores = torch.einsum("cn,bn->cb", support, leaf)
    expected = (scores.softmax(0) * torch.einsum("cn,bn->cb", support, c)).sum()
    (exact,) = torch.autograd.grad(expected, leaf)
    draws = gradient_samples(est, lambda z: (z * c).sum(-1), {"logits": theta}, 5, num_samples=3, vectorize=False)
    for g in draws["logits"]:
        torch.testing.assert_close(g, exact, atol=1e-10, rtol=0)


def test_simple_forward_is_exact_k_hot_and_biased_for_nonlinear():
    est = relaxit.get("simple", k=2)
    theta = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    z = est.distribution(logits=theta).rsample((5,))
    assert bool((z.sum(-1) == 2).all()) and bool(((z == 0) | (z == 1)).all())


def test_sfess_unbiased_for_a_non_differentiable_objective():
    n, k, draws = 6, 2, 4000
    est = relaxit.get("sfess", k=k)
    theta = torch.randn(2, n, dtype=torch.float64)
    w = torch.arange(n, dtype=torch.float64)

    def objective(z):  # a step function of the set: not differentiable in z
        last = (z * w).amax(-1)  # the largest chosen index
        return ((last >= 4).double() * 2.0 - z[..., 0] * z[..., 1] * 3.0).sum(-1)

    exact = exact_gradient(objective, {"logits": theta}, law=lambda logits: KSubset(logits, k))
    g = gradient_samples(est, objective, {"logits": theta}, draws, num_samples=4)["logits"]
    mean, se = g.mean(0), g.std(0) / math.sqrt(draws)
    assert bool(((mean - exact["logits"]).abs() <= Z * se + 1e-12).all())
    # the leave-one-out control variate is blind to an offset that the plain score function suffers from
    shifted = lambda z: objective(z) + 10.0  # noqa: E731
    g_loo = gradient_samples(est, shifted, {"logits": theta}, draws, num_samples=4)["logits"]
    plain = gradient_samples(relaxit.get("sfess", k=k, baseline="none"), shifted, {"logits": theta}, draws, num_samples=4)
    assert 5 * float(g_loo.var(0).sum()) < float(plain["logits"].var(0).sum())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="k=5"):
        relaxit.get("simple", k=5).distribution(logits=torch.zeros(3))
    with pytest.raises(ValueError, match="k"):
        KSubset(torch.zeros(3), k=4)


@pytest.mark.parametrize("n,k", [(1, 1), (5, 2), (7, 4), (12, 5), (33, 1), (40, 10), (40, 31)])
def test_divide_and_conquer_form_equals_the_dynamic_program(n, k):
    theta = (torch.randn(3, n, dtype=torch.float64) * 2).requires_grad_()
    tree = log_partition_tree(theta, k)
    torch.testing.assert_close(tree, log_partition(theta.detach(), k), atol=1e-9, rtol=0)
    (grad,) = torch.autograd.grad(tree.sum(), theta)
    torch.testing.assert_close(grad, inclusion_probs(theta.detach(), k), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["simple", "sfess"])
def test_minus_inf_masks_items_and_bad_rows_raise(name):
    est = relaxit.get(name, k=2)
    theta = torch.tensor([[0.5, -math.inf, 0.2, 1.0, -math.inf]], dtype=torch.float64, requires_grad=True)
    out = est.estimate(lambda z: (z * torch.arange(5.0, dtype=torch.float64)).sum(-1), num_samples=4, logits=theta)
    out.surrogate.sum().backward()
    assert bool((out.samples[..., [1, 4]] == 0).all()) and bool(torch.isfinite(theta.grad).all())
    assert bool((theta.grad[0, [1, 4]] == 0).all())
    with pytest.raises(ValueError, match="fewer than"):
        est.distribution(logits=torch.tensor([0.0, -math.inf, -math.inf]))
    with pytest.raises(ValueError, match="inf"):
        est.distribution(logits=torch.tensor([0.0, math.inf, 1.0]))
