"""Laws of the first three plugins against their papers: densities, CDFs, limits, Pyro SVI."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from scipy import integrate, stats

import relaxit
from relaxit_plugins.gumbel_softmax import GumbelSoftmax, StraightThroughGumbelSoftmax
from relaxit_plugins.relaxed_bernoulli import RelaxedBernoulli, StraightThroughRelaxedBernoulli

P_MIN = 1e-6  # goodness-of-fit p-value threshold
Z = 5.0  # standard errors


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("logit", [-3.0, 0.0, 1.5])
def test_binary_concrete_density_integrates_to_one(tau, logit):
    d = RelaxedBernoulli(logits=torch.tensor(logit, dtype=torch.float64), temperature=tau)

    def dens(x):
        return math.exp(d.log_prob(torch.tensor(x, dtype=torch.float64)).item())

    # Integrate over x in [sigmoid(a), sigmoid(b)] (substituting y = logit x, where the integrand is
    # smooth) and compare with the exact mass of that interval, sigmoid(tau*y - logit) between a and b;
    # as a, b -> -inf, +inf it tends to one.  (Beyond |y| ~ 36 float64 cannot represent x apart from 0/1.)
    a, b = -30.0, 30.0
    sig = lambda y: 1 / (1 + math.exp(-y))  # noqa: E731
    total, err = integrate.quad(lambda y: dens(sig(y)) * sig(y) * (1 - sig(y)), a, b, limit=400, epsabs=1e-12)
    exact = sig(tau * b - logit) - sig(tau * a - logit)
    assert abs(total - exact) < max(10 * err, 1e-9)


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_binary_concrete_samples_follow_cdf(tau):
    torch.manual_seed(1)
    logit = 0.7
    d = RelaxedBernoulli(logits=torch.tensor(logit, dtype=torch.float64), temperature=tau)
    x = d.rsample((20000,)).numpy()
    # P(X <= x) = P(logit X <= logit x) = sigmoid(tau * logit(x) - logit)   (Maddison et al. 2017)
    cdf = lambda v: 1 / (1 + np.exp(-(tau * (np.log(v) - np.log1p(-v)) - logit)))  # noqa: E731
    assert stats.kstest(x, cdf).pvalue > P_MIN


def test_binary_concrete_matches_torch_where_torch_is_finite():
    logits = torch.linspace(-3, 3, 7, dtype=torch.float64)
    ours = RelaxedBernoulli(logits=logits, temperature=0.7)
    ref = torch.distributions.RelaxedBernoulli(torch.tensor(0.7, dtype=torch.float64), logits=logits)
    x = ref.sample((50,))
    assert torch.allclose(ours.log_prob(x), ref.log_prob(x), rtol=1e-9, atol=1e-9)


def test_concrete_matches_torch_where_torch_is_finite():
    logits = torch.randn(4, 5, dtype=torch.float64)
    ours = GumbelSoftmax(logits=logits, temperature=0.8)
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.8, dtype=torch.float64), logits=logits)
    x = ref.sample((30,))
    assert torch.allclose(ours.log_prob(x), ref.log_prob(x), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("tau", [0.7, 1.0, 2.0])
def test_concrete_density_integrates_to_one(tau):
    # Importance sampling with the uniform law on the simplex (Dirichlet(1, 1, 1), density 2 on
    # the first two coordinates): E_u[p(u) / 2] = integral of p = 1.
    torch.manual_seed(2)
    n = 200000
    d = GumbelSoftmax(logits=torch.tensor([0.3, -0.5, 0.9], dtype=torch.float64), temperature=tau)
    u = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((n,))
    w = d.log_prob(u).exp() / 2.0
    mean, se = w.mean().item(), w.std().item() / math.sqrt(n)
    assert abs(mean - 1) < Z * se


def test_finite_where_torch_gives_nan():
    logits = torch.tensor([30.0, -30.0, 0.0])
    with torch.no_grad():
        for est in (relaxit.get("gumbel_softmax", tau=0.05), relaxit.get("relaxed_bernoulli", tau=0.05)):
            d = est.distribution(logits=logits)
            x = d.rsample((1000,))
            assert torch.isfinite(d.log_prob(x)).all()
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.05), logits=logits)
    torch.manual_seed(0)
    assert not torch.isfinite(ref.log_prob(ref.rsample((1000,)))).all()  # the failure we fix


def test_gumbel_softmax_matches_torch_formula_in_law():
    # our soft sample and torch.nn.functional.gumbel_softmax follow one law: compare a marginal by KS
    torch.manual_seed(3)
    logits = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)
    ours = relaxit.get("gumbel_softmax", tau=0.5).distribution(logits=logits).rsample((20000,))[:, 0]
    ref = torch.nn.functional.gumbel_softmax(logits.expand(20000, 3), tau=0.5)[:, 0]
    assert stats.ks_2samp(ours.numpy(), ref.numpy()).pvalue > P_MIN


@pytest.mark.parametrize("cls", [StraightThroughRelaxedBernoulli, StraightThroughGumbelSoftmax])
def test_straight_through_forward_is_exact_and_gradient_is_soft(cls):
    logits = torch.randn(64, 4, dtype=torch.float64, requires_grad=True)
    d = cls(logits=logits if cls is StraightThroughGumbelSoftmax else logits, temperature=0.5)
    torch.manual_seed(4)
    x = d.rsample()
    assert ((x == 0) | (x == 1)).all()
    torch.manual_seed(4)
    soft = (GumbelSoftmax if cls is StraightThroughGumbelSoftmax else RelaxedBernoulli)(
        logits=logits, temperature=0.5
    ).rsample()
    w = torch.randn_like(x)
    g_st = torch.autograd.grad((x * w).sum(), logits)[0]
    g_soft = torch.autograd.grad((soft * w).sum(), logits)[0]
    assert torch.allclose(g_st, g_soft)
    y = x.clone()  # no state on tensors: a clone scores like the original
    assert torch.equal(d.log_prob(y), d.log_prob(x))


def test_reinforce_moving_average_updates_without_host_sync():
    est = relaxit.get("reinforce", family="bernoulli", baseline="moving_average", decay=0.5)
    logits = torch.zeros(3)
    f = lambda z: (z - 0.45).pow(2).sum(-1)  # noqa: E731
    est.estimate(f, num_samples=4, logits=logits)
    assert int(est.num_updates) == 1
    est.estimate(f, num_samples=4, logits=logits)
    assert int(est.num_updates) == 2 and 0 < float(est.running_mean) < 3
    assert set(dict(est.named_buffers())) == {"running_mean", "num_updates"}


def test_svi_with_relaxit_sites():
    # Concrete VAE-style sites (Maddison et al. 2017): prior and guide are both relaxed laws, so the
    # ELBO is maximised at q = prior; pathwise SVI must move q there.
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    prior_logits = torch.tensor([0.6, 0.3, 0.1]).log()
    est = relaxit.get("gumbel_softmax", tau=0.5)

    def model():
        pyro.sample("z", est.distribution(logits=prior_logits))

    def guide():
        pyro.sample("z", est.distribution(logits=pyro.param("q_logits", torch.zeros(3))))

    def kl():
        q = pyro.param("q_logits").softmax(-1).detach()
        return (q * (q.log() - prior_logits)).sum().item()

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO(num_particles=16, vectorize_particles=True))
    svi.step()
    start = kl()
    for _ in range(300):
        svi.step()
    assert kl() < start / 10


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_noise_helpers_follow_gumbel_and_exponential_laws(dtype):
    """``gumbel_like`` / ``exponential_like`` (the noise of every Gumbel-based law) against the
    exact CDFs (Kolmogorov-Smirnov), finite and in the requested dtype."""
    from relaxit_core.distributions import exponential_like, gumbel_like

    like = torch.zeros((), dtype=dtype)
    torch.manual_seed(0)
    g, e = gumbel_like(torch.Size((20000,)), like), exponential_like(torch.Size((20000,)), like)
    assert g.dtype == e.dtype == dtype and bool(g.isfinite().all()) and bool((e > 0).all())
    # float16 rounding (relative 2^-11) moves the CDF by < 1e-3, below what 20000 draws resolve
    assert stats.kstest(g.double().numpy(), stats.gumbel_r.cdf).pvalue > P_MIN
    assert stats.kstest(e.double().numpy(), stats.expon.cdf).pvalue > P_MIN


def test_noise_helpers_off_cpu_keep_shape_and_dtype():
    """The non-CPU branch (``exponential_`` in at least float32), traced on the meta device."""
    from relaxit_core.distributions import exponential_like, gumbel_like

    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        like = torch.empty((), dtype=dtype, device="meta")
        for fn in (gumbel_like, exponential_like):
            out = fn(torch.Size((3, 4)), like)
            assert out.shape == (3, 4) and out.dtype == dtype and out.device.type == "meta"
