"""Law tests of ``hard_concrete`` against Louizos et al. (2018): atoms, density, eq. (12), gates."""

import math

import pytest
import torch
from scipy import integrate, stats

import relaxit
from relaxit_plugins.hard_concrete import HardConcrete, L0Gate, L0Linear, expected_l0

Z = 5.0
P_MIN = 1e-6
LOG_ALPHA = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0], dtype=torch.float64)
HYPERS = [(2 / 3, -0.1, 1.1), (0.3, -0.5, 1.5), (1.5, -0.05, 1.2)]


def _cdf_s(t, log_alpha, beta):
    """CDF of the binary Concrete s (Maddison et al. 2017): sigmoid(beta logit(t) - log_alpha)."""
    return 1 / (1 + math.exp(-(beta * math.log(t / (1 - t)) - log_alpha)))


@pytest.mark.parametrize("beta,gamma,zeta", HYPERS)
def test_atom_masses_closed_form_and_samples(beta, gamma, zeta):
    d = HardConcrete(LOG_ALPHA, beta, gamma, zeta)
    # closed form through the CDF of s at the stretch points
    want0 = torch.tensor([_cdf_s(-gamma / (zeta - gamma), a, beta) for a in LOG_ALPHA.tolist()], dtype=torch.float64)
    want1 = torch.tensor([1 - _cdf_s((1 - gamma) / (zeta - gamma), a, beta) for a in LOG_ALPHA.tolist()], dtype=torch.float64)
    assert torch.allclose(d.prob_zero(), want0, rtol=1e-10)
    assert torch.allclose(d.prob_one(), want1, rtol=1e-10)
    assert torch.allclose(d.log_prob(torch.zeros(5, dtype=torch.float64)).exp(), want0, rtol=1e-10)
    assert torch.allclose(d.log_prob(torch.ones(5, dtype=torch.float64)).exp(), want1, rtol=1e-10)
    n = 200_000
    z = d.sample((n,))
    for atom, want in ((0.0, want0), (1.0, want1)):
        freq = (z == atom).double().mean(0)
        se = (want * (1 - want) / n).sqrt().clamp_min(1 / n)
        assert ((freq - want).abs() <= Z * se).all(), (atom, freq, want)


def test_expected_l0_is_eq_12():
    beta, gamma, zeta = 2 / 3, -0.1, 1.1
    want = torch.sigmoid(LOG_ALPHA - beta * math.log(-gamma / zeta))
    d = HardConcrete(LOG_ALPHA)
    assert torch.allclose(d.expected_l0(), want, rtol=1e-12)
    assert torch.allclose(expected_l0(LOG_ALPHA), want, rtol=1e-12)
    assert torch.allclose(d.expected_l0(), 1 - d.prob_zero(), rtol=1e-12)


@pytest.mark.parametrize("beta,gamma,zeta", HYPERS)
@pytest.mark.parametrize("log_alpha", [-1.0, 0.5])
def test_interior_follows_stretched_concrete_ks(beta, gamma, zeta, log_alpha):
    d = HardConcrete(torch.tensor(log_alpha, dtype=torch.float64), beta, gamma, zeta)
    z = d.sample((40_000,))
    inner = z[(z > 0) & (z < 1)].numpy()
    p0 = d.prob_zero().item()
    mass = 1 - p0 - d.prob_one().item()
    cdf = lambda x: (_cdf_s((x - gamma) / (zeta - gamma), log_alpha, beta) - p0) / mass  # noqa: E731
    import numpy as np
    assert stats.kstest(inner, np.vectorize(cdf)).pvalue > P_MIN


@pytest.mark.parametrize("beta,gamma,zeta", HYPERS)
@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 3.0])
def test_log_prob_integrates_to_one_with_atoms(beta, gamma, zeta, log_alpha):
    d = HardConcrete(torch.tensor(log_alpha, dtype=torch.float64), beta, gamma, zeta)
    dens = lambda x: d.log_prob(torch.tensor(x, dtype=torch.float64)).exp().item()  # noqa: E731
    inside, err = integrate.quad(dens, 0, 1, epsabs=1e-12, epsrel=1e-10, limit=200)
    atoms = d.log_prob(torch.tensor([0.0, 1.0], dtype=torch.float64)).exp().sum().item()
    assert abs(inside + atoms - 1) < 1e-8 + 10 * err


def test_one_uniform_per_gate():
    # upstream shared one uniform across the batch: gates were perfectly dependent
    d = HardConcrete(torch.zeros(2, dtype=torch.float64))
    n = 20_000
    z = d.rsample((n,))
    r = torch.corrcoef(z.T)[0, 1].item()
    assert abs(r) < Z / math.sqrt(n)
    assert torch.unique(HardConcrete(torch.zeros(256)).rsample()).numel() > 10


def test_gradient_zero_on_atoms_positive_inside():
    la = torch.zeros(10_000, dtype=torch.float64, requires_grad=True)
    z = HardConcrete(la).rsample()
    z.sum().backward()
    inside = (z > 0) & (z < 1)
    assert (la.grad[~inside] == 0).all() and (la.grad[inside] > 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    la = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0], dtype=dtype, requires_grad=True)
    d = relaxit.get("hard_concrete").distribution(log_alpha=la)
    z = d.rsample((64,))
    assert z.dtype == dtype and ((z >= 0) & (z <= 1)).all()
    lp = d.log_prob(z)
    assert lp.dtype == dtype and torch.isfinite(lp).all()
    (z.sum() + lp.float().sum() + d.expected_l0().float().sum()).backward()
    assert torch.isfinite(la.grad).all()


def test_finite_at_extreme_params():
    la = torch.tensor([-1e3, -30.0, 30.0, 1e3], requires_grad=True)
    d = HardConcrete(la, beta=0.05, gamma=-0.1, zeta=1.1)
    x = torch.tensor([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0]).view(5, 1)
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    (lp.sum() + d.rsample((8,)).sum()).backward()
    assert torch.isfinite(la.grad).all()


def test_l0_linear_prunes_and_penalty_has_gradient():
    torch.manual_seed(0)
    layer = L0Linear(8, 3)
    x = torch.randn(5, 8)
    y = layer(x)
    (y.pow(2).sum() + layer.penalty()).backward()
    assert layer.gate.log_alpha.grad is not None and torch.isfinite(layer.gate.log_alpha.grad).all()
    with torch.no_grad():
        layer.gate.log_alpha[:4] = -10.0
    layer.eval()
    mask = layer.active_features()
    assert mask.tolist() == [False] * 4 + [True] * 4
    # eval mode is deterministic (eq. 13)
    assert torch.equal(layer(x), layer(x))
    gate = L0Gate(4, drop_init=0.5)
    assert abs(gate.penalty().item() - 4 * expected_l0(torch.zeros(())).item()) < 0.01
