"""RODEO (Shi et al. 2022): the fast control network and estimate against the paper's formula
written out directly, and the learned control variates' variance reduction.

Unbiasedness against enumeration (K = 2, 3, 5, nonzero α, β, network) is in
``tests/test_newest.py::test_bernoulli_unbiased``.  Equalities below are float64
computations of the same quantity in two ways (default ``assert_close`` tolerances); the
variance test is a two-sample z-test at 5 standard errors.
"""

import math

import pytest
import torch

import relaxit
import relaxit_plugins.rodeo as rodeo
from relaxit_plugins.rodeo import _count_below, _SteinNet

Z = 5.0


@pytest.mark.parametrize("hidden", [1, 16, 100])
def test_piecewise_network_is_the_network(hidden):
    """Values and weight gradients of the kink-table evaluation equal the plain LeakyReLU network,
    including units with zero input weight (+0.0 and -0.0: a constant unit, active where its
    bias is positive) and queries beyond every kink."""
    torch.manual_seed(hidden)
    net = _SteinNet(hidden).double()
    with torch.no_grad():
        net.dense_x.weight[: hidden // 3] = 0.0
        net.dense_x.weight[hidden // 3 : 2 * hidden // 3] = -0.0
    t = torch.randn(3, 4, 50, dtype=torch.float64) * 3
    t[..., 0] = 1e6
    t[..., 1] = -1e6
    z = torch.randn(3, 4, dtype=torch.float64)
    fast, ref = net(t, z), net.reference(t, z)
    torch.testing.assert_close(fast, ref)
    w = torch.randn_like(ref)
    g_fast = torch.autograd.grad((fast * w).sum(), list(net.parameters()))
    g_ref = torch.autograd.grad((ref * w).sum(), list(net.parameters()))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("hidden", [1, 3, 4, 5, 16, 17, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_count_below_is_searchsorted(hidden, dtype):
    """The blockwise count equals torch's binary search (left side) on sorted kinks with ±inf
    entries and ties, and the spread index adds (n mod 4)(H + 1)."""
    torch.manual_seed(hidden)
    kink = torch.randn(6, hidden, dtype=dtype) * 2
    kink[0, : hidden // 2] = -torch.inf
    kink[1, hidden // 2 :] = torch.inf
    kink = kink.sort(-1).values
    t = torch.randn(6, 41, dtype=dtype) * 3
    t[:, 0], t[:, 1] = -1e30, 1e30
    t[2, 2 : 2 + min(hidden, 39)] = kink[2, :39]  # ties: a kink is not below itself
    want = torch.searchsorted(kink, t)
    got = _count_below(kink, t)
    assert got.dtype in (torch.int32, torch.int64) and torch.equal(got.long(), want)
    spread = want + (torch.arange(41) % 4) * (hidden + 1)
    assert torch.equal(_count_below(kink, t, ways=4).long(), spread)


_C = torch.tensor([0.2, 0.7, 0.45, 0.9], dtype=torch.float64)


def objective(z):
    """Coupled objective of 4 binary variables, ``[..., 4] -> [...]``."""
    return ((z - _C) ** 2).sum(-1) * (1 + z[..., 0]) + (z[..., 1:].sum(-1) - 1.5) ** 3 / 3


def _loo(v):
    return (v.sum(0, keepdim=True) - v) / (v.shape[0] - 1)


def paper_g_hat(est, logits, x):
    """ĝ written out as in the paper / authors' code: explicit one-flip neighbours, the Taylor
    surrogate evaluated at each, the plain network, ``H(y) = h1(y) (y - p)``."""
    k, _, d = x.shape
    xl = x.clone().requires_grad_(True)
    f = objective(xl)
    (g,) = torch.autograd.grad(f.sum(), xl)
    f = f.detach()
    p = torch.sigmoid(logits)
    eye = torch.eye(d, dtype=x.dtype)
    nbrs = x.unsqueeze(-2) * (1 - eye) + (1 - x.unsqueeze(-2)) * eye  # [K, B, D (which flip), D]
    g_loo, c_loo, f_loo = _loo(g), _loo((g * x).sum(-1)), _loo(f)
    t_x = (g_loo * x).sum(-1) - c_loo
    t_nb = (g_loo.unsqueeze(-2) * nbrs).sum(-1) - c_loo.unsqueeze(-1)
    h_x = est.control.reference(t_x.unsqueeze(-1), f_loo)[..., 0, :]  # [K, B, 2]
    h_nb = est.control.reference(t_nb, f_loo)  # [K, B, D, 2]
    q_y = torch.where(x == 1, 1 - p, p)  # Gibbs kernel: q of the flipped coordinate
    a_h0 = (q_y * (h_nb[..., 0] - h_x[..., :1])).mean(-1)
    big_h_nb = h_nb[..., 1:] * (nbrs - p.unsqueeze(-2))
    big_h_x = h_x[..., 1:] * (x - p)
    a_big_h = (q_y.unsqueeze(-1) * (big_h_nb - big_h_x.unsqueeze(-2))).mean(-2)
    signal = f - _loo(f + est.alpha * a_h0)
    return (signal.unsqueeze(-1) * (x - p) + est.beta * a_big_h).mean(0)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("hidden", [1, 5, 16, 37])
def test_estimate_is_the_papers_formula(k, hidden):
    """Same samples: the model gradient is ĝ and the estimator parameters get ∇ Σ ĝ² (the
    closed-form weight gradient of the fast path against autograd through the plain network),
    with units of zero input weight, a batch of 2 x 3 and per-row weights on the surrogate."""
    torch.manual_seed(40 + k + hidden)
    est = relaxit.get("rodeo", alpha_init=0.7, beta_init=-0.6, hidden=hidden).double()
    with torch.no_grad():
        est.control.dense_x.weight[: hidden // 3] = 0.0
        est.control.dense_z.weight.mul_(0.1)  # kinks spread over the surrogate's range
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    leaf = logits.clone().requires_grad_(True)
    out = est.estimate(objective, num_samples=k, logits=leaf)
    row = torch.tensor([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0]], dtype=torch.float64)
    (out.surrogate * row).sum().backward()
    x = out.samples.reshape(k, 6, 4)
    g_ref = paper_g_hat(est, logits.reshape(6, 4), x).reshape(2, 3, 4)
    torch.testing.assert_close(leaf.grad, g_ref.detach() * row.unsqueeze(-1))
    params = list(est.parameters())
    want = torch.autograd.grad((g_ref.pow(2).sum(-1) * row).sum(), params)
    for prm, w in zip(params, want):
        torch.testing.assert_close(prm.grad, w)


def test_learned_control_variates_reduce_variance():
    """After 80 Adam steps on Σ ĝ², the variance of ĝ (K = 2) is below plain RLOO's (the same
    estimator at α = β = 0): mean squared deviation, two-sample z-test at 5 standard errors."""
    torch.manual_seed(3)
    logits = torch.tensor([0.3, -1.2, 0.8, 0.0], dtype=torch.float64)
    est = relaxit.get("rodeo")
    opt = torch.optim.Adam(est.parameters(), lr=3e-2)
    for _ in range(80):
        leaf = logits.expand(128, -1).clone().requires_grad_(True)
        out = est.estimate(objective, num_samples=2, logits=leaf)
        opt.zero_grad()
        out.surrogate.sum().backward()
        opt.step()
    n = 20000
    spread = {}
    for label, e in (("rloo", relaxit.get("rodeo", learn=False)), ("learned", est)):
        leaf = logits.expand(n, -1).clone().requires_grad_(True)
        out = e.estimate(objective, num_samples=2, logits=leaf)
        (g,) = torch.autograd.grad(out.surrogate.sum(), leaf)
        dev = (g - g.mean(0)).pow(2).sum(-1)
        spread[label] = (dev.mean(), dev.std() / math.sqrt(n))
    (m0, s0), (m1, s1) = spread["rloo"], spread["learned"]
    assert float(m0 - m1) > Z * math.hypot(s0, s1), spread


def test_a_state_dict_with_the_three_layers_still_loads():
    """relaxit 2.0.0 saved the Stein network as six parameters (dense_x, dense_z, out); such a
    state dict loads into the one-parameter network with the same layers' values."""
    torch.manual_seed(3)
    est = relaxit.get("rodeo", hidden=5)
    net = est.control
    old = {k: v.clone() for k, v in est.state_dict().items() if not k.startswith("control.")}
    layers = {"dense_x": net.dense_x, "dense_z": net.dense_z, "out": net.out}
    for name, lay in layers.items():
        old[f"control.{name}.weight"] = lay.weight.detach().clone() + 1.0
        old[f"control.{name}.bias"] = lay.bias.detach().clone() - 1.0
    fresh = relaxit.get("rodeo", hidden=5)
    fresh.load_state_dict(old)
    for name in layers:
        lay = getattr(fresh.control, name)
        assert torch.equal(lay.weight, old[f"control.{name}.weight"])
        assert torch.equal(lay.bias, old[f"control.{name}.bias"])



def _spread_kinks(rows, hidden, dtype, seed):
    """Sorted kinks with ±inf entries and ties, and queries ``t`` around them, row by row."""
    g = torch.Generator().manual_seed(seed)
    kink = torch.randn(rows, hidden, generator=g, dtype=dtype) * 2
    kink[0, : hidden // 2] = -torch.inf
    kink[1, hidden // 2 :] = torch.inf
    if hidden > 2:
        kink[2, 1] = kink[2, 2]  # a tie between two kinks
    kink = kink.sort(-1).values
    return kink, g


@pytest.mark.parametrize("hidden", [1, 3, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread", [0.0, 0.3, 3.0])
def test_window_is_the_count_and_the_pieces(hidden, dtype, spread):
    """The window path (the few kinks inside each row's range of t) gives the count of
    searchsorted, the same sums per piece as the scatter and the same values as the gather; t
    equal to a kink counts it as not below; a range holding more kinks than allowed gives None."""
    kink, g = _spread_kinks(6, hidden, dtype, hidden)
    t = torch.randn(6, 1, generator=g, dtype=dtype) + spread * torch.randn(6, 37, generator=g, dtype=dtype)
    t[3, :2] = kink[3, hidden // 2]  # ties with a kink
    want = torch.searchsorted(kink, t)
    window = rodeo._window(kink, t, widest=hidden + 1)
    lo, masks = window[:2]
    assert torch.equal(lo.unsqueeze(-1) + masks.sum(0).long(), want)
    assert bool((masks[1:] <= masks[:-1]).all())  # nested
    width = int((torch.searchsorted(kink, t.amax(-1, keepdim=True)) - lo.unsqueeze(-1)).max())
    assert masks.shape[0] == width
    if width > 0:
        assert rodeo._window(kink, t, widest=width - 1) is None
    src = torch.randn(2, 6, 37, generator=g, dtype=dtype)
    pieces = lo.unsqueeze(-1) + torch.arange(width + 1)  # lo .. lo + R, past H: nothing there
    dense = rodeo._bin_sums(want, src, hidden + 1, ways=1)
    expected = torch.where(pieces <= hidden, dense.gather(-1, pieces.clamp_max(hidden).expand(2, -1, -1)), 0.0)
    torch.testing.assert_close(rodeo._window_inside(window, src), expected)
    c, s = torch.randn(2, 6, hidden + 1, generator=g, dtype=dtype)
    at = window[2]
    torch.testing.assert_close(rodeo._lines_eval(c.gather(1, at), s.gather(1, at), masks, t),
                               rodeo._eval_pieces(c, s, want, t))


def test_window_refuses_nan_and_empty_rows():
    kink = torch.tensor([[-1.0, 0.5], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.1], [1.0, torch.nan]])
    assert rodeo._window(kink, t) is None
    assert rodeo._window(kink, t[:, :0]) is None
    assert rodeo._window(kink[:0], t[:0]) is None


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("hidden", [1, 5, 16])
@pytest.mark.parametrize("shape", [(3, 7), (2, 2, 5), (4, 1)])
def test_window_path_gives_the_general_paths_estimate(k, hidden, shape, monkeypatch):
    """Same samples: the estimate and the gradients of α, β and the network are those of the
    general path (count, scatters and gather) whether every row's range holds 0, a few or more
    kinks (the network's input weights scaled so that both paths are taken)."""

    def run(widest, scale):
        monkeypatch.setattr(rodeo, "_WINDOW_MAX", widest)
        torch.manual_seed(60 + k + hidden)
        est = relaxit.get("rodeo", alpha_init=0.7, beta_init=-0.6, hidden=hidden).double()
        with torch.no_grad():
            est.control.dense_z.weight.mul_(scale)
            est.control.dense_x.weight[: hidden // 3] = 0.0
        logits = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        out = est.estimate(objective if shape[-1] == 4 else lambda z: (z - 0.3).pow(3).sum(-1),
                           num_samples=k, logits=logits)
        (out.surrogate * torch.linspace(-1, 2, out.surrogate.numel()).reshape(out.surrogate.shape)).sum().backward()
        return [logits.grad] + [p.grad for p in est.parameters()]

    for scale in (1.0, 0.05):
        fast, general = run(16, scale), run(-1, scale)
        for a, b in zip(fast, general):
            torch.testing.assert_close(a, b)
