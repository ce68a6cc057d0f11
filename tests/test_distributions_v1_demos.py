"""relaxit 1.x programs run unchanged: its README quickstart, and the distribution calls of its
demo VAEs (which load MNIST through torchvision) as a few training steps on scikit-learn's
bundled 8x8 digits.

Each demo below is our own small VAE (64 -> 32 -> latent -> 32 -> 64) around exactly the
call the 1.x demo makes: the same class, argument names and shapes of arguments.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

QUICKSTART = """
import torch
from relaxit.distributions import InvertibleGaussian

# initialize distribution parameters
loc = torch.zeros(3, 4, 5, requires_grad=True)
scale = torch.ones(3, 4, 5, requires_grad=True)
temperature = torch.tensor([1e-0])

# initialize distribution
distribution = InvertibleGaussian(loc, scale, temperature)

# sample with reparameterization
sample = distribution.rsample()
print('sample.shape:', sample.shape)
print('sample.requires_grad:', sample.requires_grad)
"""


def test_1x_readme_quickstart_runs_unchanged():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(QUICKSTART, "relaxit-1.x-README-quickstart", "exec"), {})
    assert out.getvalue().splitlines() == ["sample.shape: torch.Size([3, 4, 6])", "sample.requires_grad: True"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data[:64], dtype=torch.float32) / 16.0
    return x


LATENT = 8


def _sample_correlated(h):
    from relaxit.distributions import CorrelatedRelaxedBernoulli

    pi = torch.sigmoid(h).clamp(1e-6, 1 - 1e-6)
    q = CorrelatedRelaxedBernoulli(pi, torch.eye(LATENT), torch.tensor(0.1))
    return q.rsample(), 0.0


def _sample_gaussian(h):
    from relaxit.distributions import GaussianRelaxedBernoulli

    q = GaussianRelaxedBernoulli(h, torch.tensor([1]))
    return q.rsample(), 0.0


def _sample_topk(h):
    from relaxit.distributions import GumbelSoftmaxTopK

    q = GumbelSoftmaxTopK(torch.sigmoid(h), K=torch.tensor(3), tau=torch.tensor(0.001), hard=True)
    return q.rsample(), 0.0


def _sample_rebar(h):
    from relaxit.distributions import RebarRelaxation

    q = RebarRelaxation(theta=torch.sigmoid(h), lambd=torch.tensor(0.5))
    return q.rsample(), 0.0


def _sample_sts(h):
    from relaxit.distributions import StochasticTimesSmooth

    return StochasticTimesSmooth(logits=h).rsample(), 0.0


def _sample_st(h):
    from relaxit.distributions import StraightThroughBernoulli

    return StraightThroughBernoulli(logits=h).rsample(), 0.0


def _sample_hard_concrete(h):
    from relaxit.distributions import HardConcrete

    a, b, x, g = h.chunk(4, -1)
    q = HardConcrete(alpha=a.clamp(1e-5, 100), beta=b.clamp(1e-5, 1000), xi=x.clamp(1 + 1e-5, 3),
                     gamma=g.clamp(-3, -1e-5))
    return q.rsample(), 0.0


def _sample_decoupled(h):
    from relaxit.distributions import DecoupledStraightThroughGumbelSoftmax

    q = DecoupledStraightThroughGumbelSoftmax(temperature_forward=0.5, temperature_backward=1.0,
                                              logits=h.view(-1, LATENT // 2, 2))
    return q.rsample().flatten(1), 0.0


def _sample_igr(h):
    from relaxit.distributions import InvertibleGaussian
    from relaxit.distributions.kl import kl_divergence

    n, k = LATENT // 4, 4
    loc, log_scale = h.view(-1, n, 2 * (k - 1)).chunk(2, -1)
    q = InvertibleGaussian(loc, log_scale.exp(), 1.0)
    prior = InvertibleGaussian(torch.zeros(h.shape[0], n, k - 1), torch.ones(h.shape[0], n, k - 1), 1.0)
    return q.rsample().flatten(1), kl_divergence(q, prior).sum()


def _sample_gengs(dist):
    def sample(h):
        from relaxit.distributions import GeneralizedGumbelSoftmaxNP

        values = torch.arange(0, 21, dtype=torch.float32).view(1, 1, -1).expand(h.shape[0], LATENT, -1)
        if dist == "poisson":
            q_dist = torch.distributions.Poisson(rate=(F.softplus(h) + 1e-6).unsqueeze(-1).expand_as(values))
        else:
            q_dist = torch.distributions.Geometric(probs=torch.sigmoid(h).clamp(1e-4, 1 - 1e-4).unsqueeze(-1).expand_as(values))
        q = GeneralizedGumbelSoftmaxNP(q_dist, values=values, tau=torch.tensor(0.5), eta=0.999, hard=True)
        return q.rsample_value() / 20.0, 0.0

    return sample


# demo -> (encoder outputs, decoder inputs, the 1.x call)
DEMOS = {
    "vae_correlated_bernoulli": (LATENT, LATENT, _sample_correlated),
    "vae_gaussian_bernoulli": (LATENT, LATENT, _sample_gaussian),
    "vae_gumbel_softmax_topk": (LATENT, LATENT, _sample_topk),
    "vae_rebar_relaxation": (LATENT, LATENT, _sample_rebar),
    "vae_stochastic_times_smooth": (LATENT, LATENT, _sample_sts),
    "vae_straight_through_bernoulli": (LATENT, LATENT, _sample_st),
    "vae_hard_concrete": (4 * LATENT, LATENT, _sample_hard_concrete),  # alpha, beta, xi, gamma per gate
    "vae_decoupled_straight_through_gumbel_softmax": (LATENT, LATENT, _sample_decoupled),
    "vae_invertible_gaussian": (LATENT // 4 * 2 * 3, LATENT, _sample_igr),  # loc, log-scale of 2 x (4-1)
    "vae_generalized_gumbel_poisson": (LATENT, LATENT, _sample_gengs("poisson")),
    "vae_generalized_gumbel_geometric": (LATENT, LATENT, _sample_gengs("geometric")),
}


@pytest.mark.parametrize("demo", sorted(DEMOS))
def test_1x_demo_distribution_calls_train_on_digits(demo, digits):
    head, latent, sample = DEMOS[demo]
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, head))
    dec = nn.Sequential(nn.Linear(latent, 32), nn.ReLU(), nn.Linear(32, 64))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)
    losses = []
    for step in range(3):
        x = digits[step * 16:(step + 1) * 16]
        opt.zero_grad()
        z, kl = sample(enc(x))
        loss = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum") + kl
        loss.backward()
        grads = [p.grad for p in enc.parameters()]
        assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(bool((g != 0).any()) for g in grads), f"{demo}: no gradient reached the encoder"
        opt.step()
        losses.append(loss.item())
    assert len(losses) == 3


def test_upgrading_guide_snippet_runs():
    """The before/after snippet of docs/guides/upgrading.md: the 1.x call and the registry's law
    give the same draws under one seed."""
    import runpy
    from pathlib import Path

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "docs" / "snippets" / "upgrading_v1.py"))
    assert "alpha.grad: (4, 10)" in out.getvalue()


def test_1x_laplace_bridge_demo_calls():
    """The 1.x Laplace-bridge notebook: Dirichlet -> logistic normal -> Dirichlet, then samples of each."""
    from pyro.distributions import Dirichlet

    from relaxit.distributions import LogisticNormalSoftmax
    from relaxit.distributions.approx import dirichlet_approximation_fn, lognorm_approximation_fn

    concentration = torch.randint(1, 10, (3,), dtype=torch.float)
    dirichlet = Dirichlet(concentration)
    lognorm = lognorm_approximation_fn(dirichlet)
    assert isinstance(lognorm, LogisticNormalSoftmax)
    back = dirichlet_approximation_fn(lognorm)
    assert torch.allclose(concentration, back.concentration)
    for d in (dirichlet, lognorm, back):
        x = d.sample((500,))
        assert x.shape == (500, 3) and torch.allclose(x.sum(-1), torch.ones(500))
