"""The fast paths of issue 23 give exactly what the formulas they replace gave.

Each rewritten estimate is compared, on the samples it returns, with the previous formula
(``log_prob``-based score-function surrogates, float64): equal gradients to rounding.
"""

from __future__ import annotations

import math

import pyro.distributions as pdist
import pytest
import torch

import relaxit
from relaxit_core.surrogate import leave_one_out_baseline, score_function_surrogate
from relaxit_plugins.vimco import vimco_signals

TOL = dict(rtol=1e-10, atol=1e-12)


def _problem(seed=0, shape=(4, 5)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64)
    target = torch.rand(shape[-1], generator=gen, dtype=torch.float64)
    phi = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    def objective(z):  # non-linear, signed, with its own parameter
        return phi * torch.sin(3 * (z - target)).sum(-1) + (z * target).sum(-1).pow(2)

    return logits, objective, phi


def _grads(surrogate, leaves):
    return torch.autograd.grad(surrogate.sum(), leaves)


def _old_reinforce(f, z, logits, baseline):
    log_q = pdist.Bernoulli(logits=logits).log_prob(z).sum(-1)
    return score_function_surrogate(f, log_q, baseline)


@pytest.mark.parametrize("baseline", ["none", "leave_one_out", "moving_average"])
def test_reinforce_bernoulli_equals_the_log_prob_surrogate(baseline):
    logits, objective, phi = _problem()
    est = relaxit.get("reinforce", family="bernoulli", baseline=baseline)
    ref = relaxit.get("reinforce", family="bernoulli", baseline=baseline)  # same baseline state
    for step in range(3):  # the moving average has state: compare over several calls
        leaf = logits.clone().requires_grad_(True)
        out = est.estimate(objective, num_samples=4, logits=leaf)
        got = _grads(out.surrogate, [leaf, phi])
        z = out.samples
        f = objective(z)
        b = ref.baseline(f.detach())
        leaf2 = logits.clone().requires_grad_(True)
        old = _old_reinforce(f, z, leaf2, b)
        want = _grads(old, [leaf2, phi])
        assert torch.equal(out.surrogate.detach(), out.value)
        torch.testing.assert_close(out.value, old.detach(), **TOL)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("reduce", ["mean", "logmeanexp"])
def test_vimco_bernoulli_equals_the_log_prob_surrogate(reduce):
    logits, objective, phi = _problem(1, (3, 2, 6))
    est = relaxit.get("vimco", family="bernoulli")
    leaf = logits.clone().requires_grad_(True)
    out = est.estimate(objective, num_samples=5, reduce=reduce, logits=leaf)
    got = _grads(out.surrogate, [leaf, phi])
    z = out.samples
    leaf2 = logits.clone().requires_grad_(True)
    f = objective(z)
    log_q = pdist.Bernoulli(logits=leaf2).log_prob(z).sum(-1)
    if reduce == "mean":
        old = score_function_surrogate(f, log_q, leave_one_out_baseline(f.detach()))
    else:
        bound = f.logsumexp(0) - math.log(5)
        old = bound + (vimco_signals(f) * (log_q - log_q.detach())).sum(0)
    want = _grads(old, [leaf2, phi])
    torch.testing.assert_close(out.value, old.detach(), **TOL)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("name", ["reinforce", "vimco"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_paths_finite_at_infinite_logits(name, dtype):
    """Logits ±inf are the limits p = 1, 0: samples are that limit, the score there is 0."""
    logits = torch.tensor([[math.inf, -math.inf, 0.3], [-math.inf, 1.0, math.inf]], dtype=dtype, requires_grad=True)
    cfg = {"baseline": "leave_one_out"} if name == "reinforce" else {}
    est = relaxit.get(name, family="bernoulli", **cfg)
    out = est.estimate(lambda z: (z - 0.4).pow(2).sum(-1), num_samples=4, logits=logits)
    out.surrogate.sum().backward()
    assert torch.isfinite(out.value).all() and torch.isfinite(logits.grad).all()
    inf = torch.isinf(logits.detach())
    assert (logits.grad[inf] == 0).all()
    assert torch.equal(out.samples[:, inf], (logits.detach()[inf] > 0).to(dtype).expand(4, -1))


def test_fast_bernoulli_draws_follow_the_law():
    """``U < p`` draws: per-coordinate frequencies within 5 standard errors of ``p``."""
    from relaxit_plugins._multisample import Bernoulli

    p = torch.tensor([0.0, 1e-3, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    n = 200_000
    z = Bernoulli(probs=p).sample((n,))
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    se = (p * (1 - p) / n).sqrt()
    assert ((z.mean(0) - p).abs() <= 5 * se + 1e-12).all()
