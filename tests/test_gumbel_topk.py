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
    _default_steps,
    _gumbel,
    _order_keys,
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
    """Σ σ(x - ν) = k to the rounding level of the sum and of ``x - ν``, over n, k and scales,
    in the default number of steps of the dtype (4 in float32, 5 in float64).

    For ``2k > n`` the solver works on ``w = -x`` with ``n - k`` (its bottom ``n - k``): the
    same check on ``w``."""
    torch.manual_seed(4)
    for n, k in [(2, 1), (5, 2), (10, 9), (50, 7), (300, 30), (300, 299), (9, 5)]:
        for scale in [1e-3, 0.1, 1.0, 3.0, 30.0, 1e3]:
            for dtype in (torch.float32, torch.float64):
                x0 = torch.randn(256, n, dtype=dtype) * scale
                nu, index, flip = _solve_threshold(x0, k, _default_steps(dtype))[:3]
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
    """A tight float64 reference root of Σ σ(x - ν) = k: bisection on the counting bracket,
    the sum compared with k as Σ_rest σ(z) - Σ_top σ(-z) (the top k apart: no term near 1, so
    that saturated rows with k near n are resolved too)."""
    x = x.double()
    n = x.shape[-1]
    vals, idx = x.topk(k + 1, -1)
    sgn = torch.ones_like(x).scatter_(-1, idx[..., :k], -1.0)
    lo, hi = vals[..., k:] - math.log(k), vals[..., k - 1:k] + math.log(n - k)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = (sgn * torch.sigmoid(sgn * (x - mid))).sum(-1, keepdim=True) > 0  # the root lies above mid
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _reference_tolerance(s, k, dtype, tau=0.5):
    """The soft k-hot of the float64 bisection root of ``s / tau`` and the tolerance of a
    solver's result in ``dtype``: |y - y*| <= eps + σ'(z) (δν + eps (|x| + |ν|)), δν = the
    residual tolerance of test_threshold_solver_reaches_rounding_level over Σ σ'."""
    n = s.shape[-1]
    x = (s / tau).double()
    nu = _bisect_threshold(x, k)
    ref = torch.sigmoid(x - nu)
    d = ref - ref * ref
    eps = torch.finfo(dtype).eps
    resid_tol = eps * (8 * math.log2(n + 1) * (ref.sum(-1, keepdim=True) + 1)
                       + 4 * ((x.abs() + nu.abs()) * d).sum(-1, keepdim=True))
    total = d.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)  # > 0: no 0/0 on saturated rows
    return ref, eps + d / total * resid_tol + d * eps * (x.abs() + nu.abs())


def test_default_steps_reach_the_reference_threshold():
    """The solver's start (one exp pass) and counting bracket reach, in the default number of
    steps, the soft k-hot of a tight float64 bisection root, within the rounding of the dtype."""
    torch.manual_seed(11)
    for n, k in [(2, 1), (7, 3), (50, 7), (1000, 100), (1000, 500), (1000, 700), (300, 299)]:
        for scale in [1e-3, 1.0, 10.0, 1e3]:
            for dtype in (torch.float32, torch.float64):
                s = (torch.randn(64, n, dtype=torch.float64) * scale
                     - torch.empty(64, n, dtype=torch.float64).exponential_().log()).to(dtype)
                y = relaxed_topk(s, k, 0.5)
                ref, tol = _reference_tolerance(s, k, dtype)
                assert bool(((y.double() - ref).abs() <= tol).all()), (n, k, scale, dtype)


def _hard_rows(n, gen):
    """Rows that need the most Newton steps: two or three repeated values, two tight clusters
    (balanced and 1:9), a constant row, Cauchy rows and outliers, at scales 1e-3 to 1e3."""
    scale = torch.logspace(-3, 3, 16, dtype=torch.float64)[:, None]
    ties2 = torch.randint(0, 2, (16, n), generator=gen).double() * scale
    ties3 = torch.randint(0, 3, (16, n), generator=gen).double() * scale
    clusters = (torch.rand(16, n, generator=gen) < 0.5).double() * scale + 1e-3 * torch.randn(16, n, generator=gen).double()
    skewed = (torch.rand(16, n, generator=gen) < 0.1).double() * scale + 1e-4 * torch.randn(16, n, generator=gen).double()
    cauchy = torch.tan(math.pi * (torch.rand(16, n, generator=gen).double() - 0.5)) * scale.sqrt()
    outliers = torch.randn(16, n, generator=gen).double()
    outliers[:, 0], outliers[:, -1] = 1e3, -1e3
    return torch.cat([ties2, ties3, clusters, skewed, cauchy, outliers, torch.full((1, n), 3.0, dtype=torch.float64)])


@pytest.mark.parametrize("n", [5, 64, 301])
def test_default_steps_reach_the_reference_on_tied_and_clustered_rows(n):
    """The Newton steps on log Σ_rest σ(z) - log Σ_top σ(-z) are exact in one step on a tie
    cluster straddling ν (where Newton on Σ σ(z) - k needed 7-8 steps): every hard row, every k
    from 1 and 2 to n/2 and n - 1 (the solve on -x), reaches the float64 bisection root within
    the rounding of the dtype in the default steps; bfloat16 to its own rounding."""
    gen = torch.Generator().manual_seed(21)
    rows = _hard_rows(n, gen)
    for k in sorted({1, 2, n // 2, n // 2 + 1, n - 2, n - 1} - {0}):
        for dtype in (torch.float32, torch.float64):
            s = rows.to(dtype)
            y = relaxed_topk(s, k, 0.5)
            ref, tol = _reference_tolerance(s, k, dtype)
            assert bool(((y.double() - ref).abs() <= tol).all()), (n, k, dtype)
        sb = rows.to(torch.bfloat16)
        yb = relaxed_topk(sb, k, 0.5)
        ref, tol = _reference_tolerance(sb, k, torch.bfloat16)
        assert yb.dtype == torch.bfloat16 and bool(((yb.double() - ref).abs() <= tol).all()), (n, k)


def test_minus_infinite_scores_are_never_chosen():
    """-inf scores (logits of probability 0) get y = 0 exactly, the others solve Σ y = k among
    themselves: the same as dropping the -inf columns (k from 1 to the last finite - 1)."""
    torch.manual_seed(22)
    s = torch.randn(8, 12, dtype=torch.float64)
    s[:, ::3] = -math.inf  # 4 of 12 entries, 8 finite
    for k in (1, 3, 6, 7):
        y = relaxed_topk(s, k, 0.5)
        assert bool((y[:, ::3] == 0).all())
        finite = s[:, [i for i in range(12) if i % 3]]
        assert torch.allclose(y[:, [i for i in range(12) if i % 3]], relaxed_topk(finite, k, 0.5), atol=1e-14, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rows_with_exactly_k_finite_scores_give_their_k_hot(dtype):
    """x_(k+1) = -inf (or, solving on -x for 2k > n, x_(k) = +inf): the root is at -inf and y is
    exactly the k-hot of the finite entries, with a finite (zero) gradient; it was NaN."""
    torch.manual_seed(27)
    s = torch.randn(6, 12, dtype=torch.float64) * 3
    s[0, 5] = 1e4
    for k, dead in [(3, slice(3, None)), (8, slice(None, 4)), (6, slice(None, None, 2))]:  # 2k < n, 2k > n, 2k = n
        x = s.clone()
        x[:, dead] = -math.inf
        x = x.to(dtype).requires_grad_(True)
        y = relaxed_topk(x, k, 0.5)
        assert torch.equal(y.detach(), torch.isfinite(x.detach()).to(dtype)), k
        (y * torch.arange(12.0, dtype=dtype)).sum().backward()
        assert bool((x.grad == 0).all()), k
    logits = torch.tensor([[0.0, -math.inf, 1.0, -math.inf, 2.0]], dtype=dtype if dtype != torch.float16 else torch.float32)
    for hard in (False, True):
        z = relaxit.get("gumbel_topk", k=3, tau=0.5, hard=hard).distribution(logits=logits).rsample((4,))
        assert torch.equal(z, torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=z.dtype).expand_as(z)), hard


def test_order_keys_sort_like_the_floats():
    """The integer keys that topk runs on (CPU) order like the floats: negatives, ±0, subnormals, ±inf."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        fi = torch.finfo(dtype)
        special = torch.tensor([-math.inf, -fi.max, -1.0, -fi.tiny, -fi.tiny * fi.eps, 0.0, fi.tiny * fi.eps,
                                fi.tiny, 1.0, fi.max, math.inf], dtype=torch.float64).to(dtype)
        x = torch.cat([special, (torch.randn(2000, dtype=torch.float64) * 10.0 ** torch.randint(-8, 8, (2000,))).to(dtype)])
        keys = _order_keys(x, torch.empty_like(x))
        assert keys.dtype != dtype
        assert torch.equal(x[torch.argsort(keys, stable=True)], x.sort(stable=True).values), dtype  # (-0.0 == +0.0)
        assert torch.equal(x.topk(50).values, x[keys.topk(50).indices]), dtype


def test_solve_on_minus_x_is_the_complement():
    """For 2k > n the solve runs on -x with n - k: y(x, k) = 1 - y(-x, n - k), and the hard
    k-hot is the top k of the scores (no ties)."""
    torch.manual_seed(23)
    s = torch.randn(16, 9, dtype=torch.float64) * 3
    for k in (5, 7, 8):
        assert torch.allclose(relaxed_topk(s, k, 0.4), 1 - relaxed_topk(-s, 9 - k, 0.4), atol=1e-15, rtol=0)
    logits = torch.randn(4, 9)
    for k in (2, 6, 8):
        torch.manual_seed(24)
        x = StraightThroughGumbelTopK(logits=logits, k=k, temperature=0.5).rsample((3,))
        torch.manual_seed(24)
        scores = StraightThroughGumbelTopK(logits=logits, k=k, temperature=0.5)._scaled_scores((3,))[0]
        assert torch.equal(x.detach(), hard_topk(scores, k)), k


def test_scaled_scores_are_the_gumbel_scores_bit_for_bit():
    """rsample's in-place float32 noise, (ln E - logits) / (-τ), equals (logits + _gumbel) / τ
    for the same draw, bit for bit, with sample dimensions and a batch."""
    logits = torch.randn(3, 50)
    for tau, shape in [(0.5, (2, 5)), (0.37, (437, 1)), (3.0, (450, 1))]:  # 2^16 entries and more: the fast path
        law = GumbelTopK(logits=logits, k=4, temperature=tau)
        torch.manual_seed(25)
        fast, scratch = law._scaled_scores(shape)
        torch.manual_seed(25)
        plain = (_gumbel(shape + (3, 50), law.logits) + law.logits) / tau
        assert fast.shape == shape + (3, 50) and torch.equal(fast, plain), tau
        assert (scratch is None) == (fast.numel() < 2**16)
        if scratch is not None:  # rsample on its own scores and scratch is the solve on copies, gradient too
            leaf, ref_leaf, w = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True), torch.randn(50)
            torch.manual_seed(25)
            y = GumbelTopK(logits=leaf, k=4, temperature=tau).rsample(shape)
            ref_law = GumbelTopK(logits=ref_leaf, k=4, temperature=tau)
            torch.manual_seed(25)
            y_ref = relaxed_topk(_gumbel(shape + (3, 50), ref_law.logits) + ref_law.logits, 4, tau)
            assert torch.equal(y.detach(), y_ref.detach()), tau
            (y * w).sum().backward()
            (y_ref * w).sum().backward()
            assert torch.allclose(leaf.grad, ref_leaf.grad, atol=1e-6, rtol=0), tau


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


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("steps", [{}, {"steps": 30}], ids=["default-steps", "30-steps"])
def test_relaxed_topk_gradient_matches_finite_differences(steps, k):
    torch.manual_seed(5)
    s = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: relaxed_topk(t, k, 0.7, **steps), (s,))


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


def test_benchmark_hand_reference_is_the_same_relaxation():
    """benchmarks/topk_speed.py's hand-written solve (the ≤ 1.2x reference) computes the
    library's relaxation: the same soft k-hot to rounding, and the same gradient."""
    import importlib.util
    import pathlib
    import sys

    bench = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("topk_speed", bench / "topk_speed.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    torch.manual_seed(26)
    s = (torch.randn(16, 40, dtype=torch.float64) * 2 - torch.empty(16, 40, dtype=torch.float64).exponential_().log())
    w = torch.randn(40, dtype=torch.float64)
    for k in (1, 7, 20, 33, 39):
        a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
        ya = mod._HandThreshold.apply(a / 0.5, k, _default_steps(torch.float64))
        yb = relaxed_topk(b, k, 0.5)
        assert torch.allclose(ya, yb, atol=1e-14, rtol=0), k
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-12, rtol=0), k
