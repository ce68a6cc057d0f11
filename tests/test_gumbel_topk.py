"""Law and gradient tests of ``gumbel_topk`` against Kool et al. (2019) and the relaxation's definition."""

import itertools
import math

import pytest
import torch
from scipy import stats

import relaxit
from relaxit_plugins.gumbel_topk import (
    MAX_LOG_PROB_K,
    GumbelTopK,
    StraightThroughGumbelTopK,
    _gumbel,
    _solve_threshold,
    hard_topk,
    relaxed_topk,
)

P_MIN = 1e-6


def exact_set_probs(probs, k):
    """{frozenset: P(set)} by summing the Plackett-Luce probability of every ordered k-tuple."""
    p = [float(v) for v in probs]
    out = {}
    for seq in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in seq:
            prob *= p[i] / left
            left -= p[i]
        key = frozenset(seq)
        out[key] = out.get(key, 0.0) + prob
    return out


def chi_square_sets(x, probs, k):
    exact = exact_set_probs(probs, k)
    keys = sorted(exact, key=sorted)
    index = {key: i for i, key in enumerate(keys)}
    counts = torch.zeros(len(keys), dtype=torch.float64)
    for row in x.reshape(-1, x.shape[-1]).nonzero()[:, 1].reshape(-1, k).tolist():
        counts[index[frozenset(row)]] += 1
    expected = torch.tensor([exact[key] for key in keys], dtype=torch.float64) * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(stat, len(keys) - 1))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("method", ["sample", "rsample"])
def test_hard_samples_are_draws_without_replacement(k, method):
    torch.manual_seed(0)
    logits = torch.tensor([1.5, 0.2, -0.7, 0.9, -1.6], dtype=torch.float64)
    d = StraightThroughGumbelTopK(logits=logits, k=k, temperature=0.3)
    x = getattr(d, method)((40000,)).detach()
    assert bool((x.sum(-1) == k).all()) and bool(((x == 0) | (x == 1)).all())
    assert chi_square_sets(x, logits.softmax(-1), k) > P_MIN


def test_probs_are_not_treated_as_logits():
    torch.manual_seed(1)
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64)
    est = relaxit.get("gumbel_topk", k=2, hard=True)
    x = est.distribution(probs=probs).sample((40000,))
    assert chi_square_sets(x, probs, 2) > P_MIN
    # the same numbers read as logits give another law, which the test tells apart
    assert chi_square_sets(x, probs.softmax(-1), 2) < P_MIN


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_log_prob_is_the_exact_set_probability(k):
    torch.manual_seed(2)
    logits = torch.randn(6, dtype=torch.float64) * 1.5
    d = StraightThroughGumbelTopK(logits=logits, k=k, temperature=0.5)
    support = d.enumerate_support()
    assert support.shape == (math.comb(6, k), 6)
    exact = exact_set_probs(logits.softmax(-1), k)
    want = torch.tensor([exact[frozenset(row.nonzero().flatten().tolist())] for row in support], dtype=torch.float64)
    got = d.log_prob(support).exp()
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    assert abs(got.sum().item() - 1) < 1e-12


def test_log_prob_at_extreme_logits_is_finite_and_normalised():
    logits = torch.tensor([30.0, -30.0, 30.0, -30.0, 0.0])
    d = StraightThroughGumbelTopK(logits=logits, k=2)
    lp = d.log_prob(d.enumerate_support())
    assert bool(torch.isfinite(lp).all())
    assert abs(lp.logsumexp(0).item()) < 1e-5
    # the unlikely set {1, 3} (index 5 in lexicographic order): p1 = p3 = e^{-60}/(2 + ...), so
    # P = p1 p3 (1/(1-p1) + 1/(1-p3)) = e^{-120}/2 to float32 precision, far below float32's range
    log_z = torch.logsumexp(logits.double(), 0).item()
    want = math.log(2) + 2 * (-30.0 - log_z)
    assert abs(lp[5].item() - want) < 1e-5 * abs(want)


def test_log_prob_capability_depends_on_config():
    assert "log_prob" not in {str(c) for c in relaxit.get("gumbel_topk", k=3).capabilities}
    assert "log_prob" in {str(c) for c in relaxit.get("gumbel_topk", k=3, hard=True).capabilities}
    big = relaxit.get("gumbel_topk", k=MAX_LOG_PROB_K + 1, hard=True)
    assert "log_prob" not in {str(c) for c in big.capabilities}
    d = big.distribution(logits=torch.zeros(12))
    with pytest.raises(NotImplementedError):
        d.log_prob(d.sample())
    with pytest.raises(NotImplementedError):
        GumbelTopK(logits=torch.zeros(5), k=2).log_prob(torch.full((5,), 0.4))


@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("tau", [0.05, 1.0, 20.0])
def test_relaxed_sample_lies_in_the_k_hypersimplex(k, tau):
    torch.manual_seed(3)
    d = GumbelTopK(logits=torch.randn(4, 10, dtype=torch.float64) * 3, k=k, temperature=tau)
    y = d.rsample((2, 3))
    assert y.shape == (2, 3, 4, 10)
    assert bool(((y >= 0) & (y <= 1)).all())
    assert torch.allclose(y.sum(-1), torch.full((2, 3, 4), float(k), dtype=torch.float64), atol=1e-10, rtol=0)
    assert bool(d.support.check(y).all())


def test_threshold_solver_reaches_rounding_level():
    """Σ σ(x - ν) = k to the rounding level of the sum and of ``x - ν``, over n, k and scales.

    For ``2k > n`` the solver works on ``w = -x`` with ``n - k`` (its bottom ``n - k``): the
    same check on ``w``."""
    torch.manual_seed(4)
    for n, k in [(2, 1), (5, 2), (10, 9), (50, 7), (300, 30), (300, 299), (9, 5)]:
        for scale in [1e-3, 0.1, 1.0, 3.0, 30.0, 1e3]:
            for dtype in (torch.float32, torch.float64):
                x0 = torch.randn(256, n, dtype=dtype) * scale
                nu, index, flip = _solve_threshold(x0, k, 6)[:3]
                assert flip == (2 * k > n)
                x, k_side = (-x0, n - k) if flip else (x0, k)
                sgn = torch.ones_like(x).scatter_(-1, index, -1.0)
                hot = (sgn < 0).to(dtype)
                a = torch.sigmoid(sgn * (x - nu))
                resid = (sgn * a).sum(-1).abs()
                eps = torch.finfo(dtype).eps
                tol = eps * (8 * math.log2(n + 1) * (a.sum(-1) + 1) + 4 * ((x.abs() + nu.abs()) * (a - a * a)).sum(-1))
                assert bool((resid <= tol).all()), (n, k, scale, dtype, resid.max().item())
                assert bool((hot.sum(-1) == k_side).all()) and bool(((hot == 0) | (hot == 1)).all())
                top_min = x.masked_fill(hot == 0, float("inf")).amin(-1)
                rest_max = x.masked_fill(hot == 1, float("-inf")).amax(-1)
                assert bool((top_min >= rest_max).all())  # the k largest (ties either way)
                assert bool(((sgn == 1) | (sgn == -1)).all())


def _bisect_threshold(x, k, iters=200):
    """A tight float64 reference root of Σ σ(x - ν) = k: bisection on the counting bracket."""
    x = x.double()
    n = x.shape[-1]
    vals = x.topk(k + 1, -1).values
    lo, hi = vals[..., k:] - math.log(k), vals[..., k - 1:k] + math.log(n - k)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = torch.sigmoid(x - mid).sum(-1, keepdim=True) > k  # the root lies above mid
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def test_default_steps_reach_the_reference_threshold():
    """The solver's start (one exp pass) and counting bracket reach, in the default number of
    steps, the soft k-hot of a tight float64 bisection root, within the rounding of the dtype:
    |y - y*| <= eps + σ'(z) (δν + eps (|x| + |ν|)), δν = the residual tolerance of
    test_threshold_solver_reaches_rounding_level over Σ σ'."""
    torch.manual_seed(11)
    for n, k in [(2, 1), (7, 3), (50, 7), (1000, 100), (1000, 500), (300, 299)]:
        for scale in [1e-3, 1.0, 10.0, 1e3]:
            for dtype in (torch.float32, torch.float64):
                s = (torch.randn(64, n, dtype=torch.float64) * scale
                     - torch.empty(64, n, dtype=torch.float64).exponential_().log()).to(dtype)
                y = relaxed_topk(s, k, 0.5)
                x = (s / 0.5).double()
                nu = _bisect_threshold(x, k)
                ref = torch.sigmoid(x - nu)
                d = ref - ref * ref
                eps = torch.finfo(dtype).eps
                resid_tol = eps * (8 * math.log2(n + 1) * (ref.sum(-1, keepdim=True) + 1)
                                   + 4 * ((x.abs() + nu.abs()) * d).sum(-1, keepdim=True))
                tol = eps + d * (resid_tol / d.sum(-1, keepdim=True) + eps * (x.abs() + nu.abs()))
                assert bool(((y.double() - ref).abs() <= tol).all()), (n, k, scale, dtype)


def test_gumbel_noise_is_the_wide_noise_rounded():
    """The float32 (and 16-bit) noise: E from the same float64 draw as gumbel_like's, rounded
    once to float32, then -log in float32: within 2^-24 + 2 ulp(|G|) of gumbel_like in float64."""
    from relaxit_core.distributions import gumbel_like

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        like = torch.zeros((), dtype=dtype)
        torch.manual_seed(12)
        g = _gumbel((4096, 64), like)
        torch.manual_seed(12)
        wide = gumbel_like((4096, 64), torch.zeros((), dtype=torch.float64))
        assert g.dtype == dtype and bool(torch.isfinite(g).all())
        bound = 2.0**-24 + 2.0**-22 * wide.abs()  # E rounded to float32, then a float32 log
        if dtype != torch.float32:  # rounded once more to the 16-bit dtype
            bound = bound + torch.finfo(dtype).eps * wide.abs().clamp_min(torch.finfo(dtype).tiny)
        assert bool(((g.double() - wide).abs() <= bound).all()), dtype


def test_rsample_leaves_logits_and_scores_alone():
    """rsample forms the scores in place on its own noise tensor: the logits given, and the
    scores given to relaxed_topk, are never modified."""
    logits = torch.randn(3, 8, requires_grad=True)
    before = logits.detach().clone()
    for hard in (False, True):
        law = relaxit.get("gumbel_topk", k=3, tau=0.4, hard=hard).distribution(logits=logits)
        law.rsample((2,)).sum().backward()
        assert torch.equal(logits.detach(), before) and bool(torch.isfinite(logits.grad).all())
    s = torch.randn(4, 9)
    s0 = s.clone()
    relaxed_topk(s, 2, 0.3)
    assert torch.equal(s, s0)


@pytest.mark.parametrize("steps", [{}, {"steps": 30}], ids=["default-steps", "30-steps"])
def test_relaxed_topk_gradient_matches_finite_differences(steps):
    torch.manual_seed(5)
    s = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: relaxed_topk(t, 3, 0.7, **steps), (s,))


def test_sum_constraint_has_zero_gradient():
    """Σ y = k for every input, so its gradient is exactly zero (no leaking mask gradients)."""
    torch.manual_seed(6)
    s = (torch.randn(5, 20, dtype=torch.float64) * 4).requires_grad_(True)
    relaxed_topk(s, 4, 0.3).sum().backward()
    assert s.grad.abs().max().item() < 1e-12


def test_low_temperature_tends_to_the_hard_top_k():
    torch.manual_seed(7)
    s = torch.randn(100, 12, dtype=torch.float64)
    y = relaxed_topk(s, 4, 1e-4)
    hard = hard_topk(s, 4)
    gap = (s.topk(5).values[:, 3] - s.topk(5).values[:, 4])
    ok = gap > 0.01  # rows whose k-th and (k+1)-th scores are not tied at this temperature
    assert (y[ok] - hard[ok]).abs().max().item() < 1e-6


def test_straight_through_forward_is_exactly_k_hot_and_backward_is_soft():
    logits = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, dtype=torch.float64)
    torch.manual_seed(8)
    x = StraightThroughGumbelTopK(logits=logits, k=3, temperature=0.5).rsample((5,))
    assert bool((x.detach().sum(-1) == 3).all()) and bool(((x == 0) | (x == 1)).all())
    (g_hard,) = torch.autograd.grad((x * w).sum(), logits)
    torch.manual_seed(8)
    y = GumbelTopK(logits=logits, k=3, temperature=0.5).rsample((5,))
    (g_soft,) = torch.autograd.grad((y * w).sum(), logits)
    assert torch.allclose(g_hard, g_soft, rtol=1e-12, atol=1e-14)


def test_hard_has_exactly_k_ones_with_ties():
    d = StraightThroughGumbelTopK(logits=torch.full((3, 8), -30.0).index_fill(-1, torch.tensor([0]), 30.0), k=5,
                                  temperature=0.01)
    x = d.rsample((50,))
    assert bool((x.sum(-1) == 5).all())
    assert bool(torch.isfinite(x).all())


def test_float16_samples():
    d = relaxit.get("gumbel_topk", k=3, hard=True).distribution(logits=torch.randn(2, 6).half())
    x = d.rsample((4,))
    assert x.dtype == torch.float16 and bool((x.sum(-1) == 3).all())


def test_k_larger_than_n_is_an_error():
    est = relaxit.get("gumbel_topk", k=5)
    with pytest.raises(ValueError):
        est.distribution(logits=torch.zeros(3))


def test_feature_selection_example_recovers_the_informative_features():
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "feature_selection.py"
    main = runpy.run_path(str(path))["main"]
    assert main(["--steps", "300"]) == 0
