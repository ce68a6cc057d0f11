"""Tests of ``straight_through_bernoulli`` (Bengio et al. 2013): exact forward law, identity backward."""

import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_core.diagnostics import exact_gradient, gradient_samples
from relaxit_plugins.straight_through_bernoulli import StraightThroughBernoulli

P_MIN = 1e-6


def test_forward_is_exactly_bernoulli():
    p = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.93, 1.0], dtype=torch.float64)
    d = StraightThroughBernoulli(probs=p)
    n = 50_000
    for z in (d.sample((n,)), d.rsample((n,)).detach()):
        assert set(z.unique().tolist()) <= {0.0, 1.0}
        ones = z.sum(0)
        assert ones[0] == 0 and ones[-1] == n
        for k in range(1, 5):
            assert stats.binomtest(int(ones[k]), n, p[k].item()).pvalue > P_MIN


def test_backward_is_identity_to_probs():
    p = torch.tensor([0.2, 0.7, 0.0, 1.0], requires_grad=True)
    z = StraightThroughBernoulli(probs=p).rsample((100,))
    w = torch.randn(100, 4)
    (z * w).sum().backward()
    assert torch.equal(p.grad, w.sum(0))
    logits = torch.tensor([-30.0, 0.0, 2.0, 30.0], dtype=torch.float64, requires_grad=True)
    z = StraightThroughBernoulli(logits=logits).rsample((10,))
    z.sum().backward()
    s = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, 10 * s * (1 - s), rtol=1e-12, atol=0)


def test_log_prob_is_pmf_and_keeps_no_state_on_tensors():
    logits = torch.tensor([-1.0, 0.5, 3.0])
    d = StraightThroughBernoulli(logits=logits)
    z = d.rsample((7,))
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(z.detach())
    assert torch.allclose(d.log_prob(z), ref)
    assert torch.equal(d.log_prob(z.clone()), d.log_prob(z))  # Pyro's ST keeps state on z; we do not
    assert torch.equal(d.log_prob(z.detach().clone()), d.log_prob(z))
    s = d.enumerate_support()
    assert s.shape == (2, 3) and s[:, 0].tolist() == [0.0, 1.0]
    assert torch.allclose(d.log_prob(s).exp().sum(0), torch.ones(3))


def test_kl_and_entropy_match_torch_bernoulli():
    a, b = torch.tensor([-2.0, 0.3, 4.0]), torch.tensor([1.0, -0.5, 0.0])
    kl = torch.distributions.kl_divergence(StraightThroughBernoulli(logits=a), StraightThroughBernoulli(logits=b))
    ref = torch.distributions.kl_divergence(torch.distributions.Bernoulli(logits=a), torch.distributions.Bernoulli(logits=b))
    assert torch.allclose(kl, ref, atol=1e-6)
    assert torch.allclose(StraightThroughBernoulli(logits=a).entropy(), torch.distributions.Bernoulli(logits=a).entropy())


def test_unbiased_for_linear_objectives_in_probs():
    # straight-through is exact when the objective is linear in z: E[d f/d z] = d E f / d p
    est = relaxit.get("straight_through_bernoulli")
    c = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)
    objective = lambda z: (z * c).sum(-1)  # noqa: E731
    params = {"probs": torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)}
    exact = exact_gradient(objective, params, "bernoulli")
    g = gradient_samples(est, objective, params, 200)["probs"]
    assert torch.allclose(g, exact["probs"].expand_as(g), atol=1e-12)  # every draw is exact


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    logits = torch.tensor([-30.0, -1.0, 0.0, 30.0], dtype=dtype, requires_grad=True)
    d = StraightThroughBernoulli(logits=logits)
    z = d.rsample((64,))
    assert z.dtype == dtype and set(z.unique().tolist()) <= {0.0, 1.0}
    lp = d.log_prob(z)
    assert torch.isfinite(lp).all()
    (z.sum() + lp.float().sum()).backward()
    assert torch.isfinite(logits.grad).all()
    n = 4000
    freq = d.sample((n,)).float().mean(0)
    p = torch.sigmoid(logits.detach().float())
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1 / n).all()


def test_mean_variance():
    d = StraightThroughBernoulli(probs=torch.tensor([0.25]))
    assert d.mean.item() == 0.25 and math.isclose(d.variance.item(), 0.1875)
