"""Law tests of ``gaussian_relaxed_bernoulli`` against Yamada et al. (2020): atoms, density, L0."""

import math

import pytest
import torch
from scipy import integrate, stats

import relaxit
from relaxit_plugins.gaussian_relaxed_bernoulli import GaussianRelaxedBernoulli, expected_l0

Z = 5.0  # standard errors
P_MIN = 1e-6
LOCS = torch.tensor([-0.3, 0.2, 0.5, 0.9, 1.4], dtype=torch.float64)
SIGMA = 0.5


def _phi(x):
    return stats.norm.cdf(x)


def test_atom_masses_match_closed_form():
    d = GaussianRelaxedBernoulli(LOCS, sigma=SIGMA)
    n = 200_000
    z = d.sample((n,))
    p0 = torch.tensor(_phi(-LOCS.numpy() / SIGMA))
    p1 = torch.tensor(_phi((LOCS.numpy() - 1) / SIGMA))
    for atom, want in ((0.0, p0), (1.0, p1)):
        freq = (z == atom).double().mean(0)
        se = (want * (1 - want) / n).sqrt().clamp_min(1 / n)
        assert ((freq - want).abs() <= Z * se).all(), (atom, freq, want)
    assert torch.allclose(d.prob_zero(), p0, rtol=1e-12)
    assert torch.allclose(d.prob_one(), p1, rtol=1e-12)
    assert torch.allclose(d.log_prob(torch.zeros(5, dtype=torch.float64)).exp(), p0, rtol=1e-12)
    assert torch.allclose(d.log_prob(torch.ones(5, dtype=torch.float64)).exp(), p1, rtol=1e-12)


def test_expected_l0_is_phi_loc_over_sigma_and_matches_samples():
    d = GaussianRelaxedBernoulli(LOCS, sigma=SIGMA)
    want = torch.tensor(_phi(LOCS.numpy() / SIGMA))
    assert torch.allclose(d.expected_l0(), want, rtol=1e-12)
    assert torch.allclose(expected_l0(LOCS, SIGMA), want, rtol=1e-12)
    n = 100_000
    nonzero = (d.sample((n,)) > 0).double().mean(0)
    assert ((nonzero - want).abs() <= Z * (want * (1 - want) / n).sqrt()).all()
    loc = LOCS.clone().requires_grad_(True)
    expected_l0(loc, SIGMA).sum().backward()
    assert torch.allclose(loc.grad, torch.tensor(stats.norm.pdf(LOCS.numpy() / SIGMA) / SIGMA), rtol=1e-10)


@pytest.mark.parametrize("loc", [-0.3, 0.5, 1.4])
def test_interior_follows_truncated_normal_ks(loc):
    d = GaussianRelaxedBernoulli(torch.tensor(loc, dtype=torch.float64), sigma=SIGMA)
    z = d.sample((50_000,))
    inner = z[(z > 0) & (z < 1)].numpy()
    a, b = _phi(-loc / SIGMA), _phi((1 - loc) / SIGMA)
    cdf = lambda x: (_phi((x - loc) / SIGMA) - a) / (b - a)  # noqa: E731
    assert stats.kstest(inner, cdf).pvalue > P_MIN


@pytest.mark.parametrize("loc,sigma", [(-0.3, 0.5), (0.5, 0.5), (0.7, 0.05), (2.0, 3.0)])
def test_log_prob_integrates_to_one_with_atoms(loc, sigma):
    d = GaussianRelaxedBernoulli(torch.tensor(loc, dtype=torch.float64), sigma=sigma)
    dens = lambda x: d.log_prob(torch.tensor(x, dtype=torch.float64)).exp().item()  # noqa: E731
    inside, err = integrate.quad(dens, 0, 1, epsabs=1e-12, epsrel=1e-10, limit=200)
    atoms = d.log_prob(torch.tensor([0.0, 1.0], dtype=torch.float64)).exp().sum().item()
    assert abs(inside + atoms - 1) < 1e-8 + 10 * err


def test_noise_is_independent_per_element():
    # upstream drew one noise value for the whole batch: columns were identical
    d = GaussianRelaxedBernoulli(torch.full((2,), 0.5, dtype=torch.float64), sigma=SIGMA)
    n = 20_000
    z = d.rsample((n,))
    r = torch.corrcoef(z.T)[0, 1].item()
    assert abs(r) < Z / math.sqrt(n)


def test_gradient_is_one_inside_zero_on_atoms():
    loc = torch.full((10_000,), 0.5, dtype=torch.float64, requires_grad=True)
    z = GaussianRelaxedBernoulli(loc, sigma=SIGMA).rsample()
    z.sum().backward()
    inside = (z > 0) & (z < 1)
    assert torch.equal(loc.grad, inside.double())


def test_mean_closed_form():
    d = GaussianRelaxedBernoulli(LOCS, sigma=SIGMA)
    n = 200_000
    z = d.sample((n,))
    se = z.std(0) / math.sqrt(n)
    assert ((z.mean(0) - d.mean).abs() <= Z * se).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    loc = torch.tensor([-30.0, 0.0, 0.5, 30.0], dtype=dtype, requires_grad=True)
    d = relaxit.get("gaussian_relaxed_bernoulli").distribution(loc=loc)
    z = d.rsample((64,))
    assert z.dtype == dtype
    lp = d.log_prob(z)
    assert lp.dtype == dtype and torch.isfinite(lp).all()
    (z.sum() + lp.float().sum()).backward()
    assert torch.isfinite(loc.grad).all()
    assert d.expected_l0().dtype == dtype


def test_finite_at_extreme_params():
    loc = torch.tensor([-1e4, -30.0, 30.0, 1e4], dtype=torch.float32, requires_grad=True)
    d = GaussianRelaxedBernoulli(loc, sigma=1e-3)
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1)
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all()


def test_validation_rejects_values_outside_unit_interval():
    d = GaussianRelaxedBernoulli(torch.zeros(2), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([1.5, 0.0]))
