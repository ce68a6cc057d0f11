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


# ------------------------------------------------------------------ REBAR / RELAX engine
def _hand_relaxed_cv(logits, objective, s, eta, log_tau, net=None, learned=()):
    """REBAR / RELAX written out (Grathwohl et al. 2018, eq. 8; the previous engine's formula,
    ``(logits - logits.detach()) ĝ`` and ``(p - p.detach()) ∂Σĝ²/∂p``), Bernoulli, on the noise of
    ``relaxed_pair`` (call under the same seed)."""
    from relaxit_plugins._relaxed_cv import relaxed_pair

    theta = logits.detach().requires_grad_(True)
    z, b, zt = relaxed_pair("bernoulli", theta, s)
    soft = torch.sigmoid(torch.cat([z, zt]) / log_tau.exp())
    f_all = objective(torch.cat([b, soft]))
    f_b, f_s = f_all[:s], f_all[s:]
    c = eta * f_s + (net(soft) if net is not None else 0)
    c_z, c_zt = c[:s], c[s:]
    (g_path,) = torch.autograd.grad((c_z - c_zt).sum(), theta, create_graph=bool(learned), retain_graph=True)
    coef = f_b.detach() - c_zt
    g_hat = ((coef.unsqueeze(-1) * (b - torch.sigmoid(theta.detach()))).sum(0) + g_path) / s
    extra = 0
    if learned:
        var = torch.autograd.grad(g_hat.pow(2).sum(), learned, retain_graph=True)
        extra = sum(((p - p.detach()) * g).sum() for p, g in zip(learned, var)) / f_b.shape[1]
    return f_b.mean(0) + ((logits - logits.detach()) * g_hat.detach()).sum(-1) + extra


@pytest.mark.parametrize("learn", [False, True])
def test_rebar_equals_the_previous_formula(learn):
    logits, objective, phi = _problem(2, (3, 4))
    est = relaxit.get("rebar", learn=learn, eta=0.7, tau=0.4).double()
    leaf = logits.clone().requires_grad_(True)
    torch.manual_seed(5)
    out = est.estimate(objective, num_samples=2, logits=leaf)
    leaves = [leaf, phi] + ([est.eta, est.log_tau] if learn else [])
    got = _grads(out.surrogate, leaves)
    leaf2 = logits.clone().requires_grad_(True)
    eta = est.eta.detach().clone().requires_grad_(learn)
    log_tau = est.log_tau.detach().clone().requires_grad_(learn)
    torch.manual_seed(5)
    old = _hand_relaxed_cv(leaf2, objective, 2, eta, log_tau, learned=[eta, log_tau] if learn else ())
    want = _grads(old, [leaf2, phi] + ([eta, log_tau] if learn else []))
    torch.testing.assert_close(out.surrogate.detach(), old.detach(), **TOL)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def test_relax_network_reads_the_whole_relaxed_vector():
    """RELAX's r_ρ is the authors' QFunc on 2 σ_λ(z) - 1 of all D values of an event: the
    estimate (logits, objective parameter, every estimator parameter) equals the formula
    written out with that network."""
    from relaxit_plugins.relax import ControlNetwork

    logits, objective, phi = _problem(3, (3, 4))
    est = relaxit.get("relax", family="bernoulli", hidden=5, latents=4, eta=0.8, tau=0.6).double()
    net = est.nets["4"]
    with torch.no_grad():
        net.w2.normal_()  # a non-trivial network
        net.b2.fill_(0.3)
    x = torch.rand(7, 4, dtype=torch.float64)
    written = torch.tanh((2 * x - 1) @ net.w1.T + net.b1) @ net.w2 + net.b2
    torch.testing.assert_close(net(x), written, **TOL)
    assert isinstance(net, ControlNetwork) and net.w1.shape == (5, 4)  # reads all D = 4 values
    leaf = logits.clone().requires_grad_(True)
    torch.manual_seed(9)
    out = est.estimate(objective, num_samples=2, logits=leaf)
    params = list(est.parameters())
    got = _grads(out.surrogate, [leaf, phi] + params)
    ref = relaxit.get("relax", family="bernoulli", hidden=5, latents=4).double()
    ref.load_state_dict(est.state_dict())
    leaf2 = logits.clone().requires_grad_(True)
    torch.manual_seed(9)
    old = _hand_relaxed_cv(leaf2, objective, 2, ref.eta, ref.log_tau, net=ref.nets["4"], learned=list(ref.parameters()))
    want = _grads(old, [leaf2, phi] + list(ref.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def test_relax_network_size():
    """Without ``latents`` one network per event size, created (and trained) in the first call
    that meets it; with ``latents`` another size is an error naming it."""
    from relaxit_core import ParameterError

    est = relaxit.get("relax", family="bernoulli", hidden=3)
    assert len(list(est.nets.parameters())) == 0
    logits = torch.zeros(2, 6, requires_grad=True)
    est.estimate(lambda z: (z - 0.3).pow(2).sum(-1), logits=logits).surrogate.sum().backward()
    assert list(est.nets) == ["6"] and all(p.grad is not None for p in est.nets["6"].parameters())
    est.estimate(lambda z: (z - 0.3).pow(2).sum((-2, -1)), logits=logits.detach())  # D = 12
    assert sorted(est.nets) == ["12", "6"]
    fixed = relaxit.get("relax", family="bernoulli", hidden=3, latents=6)
    with pytest.raises(ParameterError, match="latents=6"):
        fixed.estimate(lambda z: z.sum(-1), logits=torch.zeros(2, 5, requires_grad=True))


# ----------------------------------------------------------------------------- double CV
def _old_double_cv(objective, z, logits, alpha):
    """The previous double_cv surrogate (log_prob score term, ``(probs - probs.detach())`` global
    term, ``Σ ĝ²`` through α), on given samples ``z`` ``[K, *batch]``, objective on the last dim."""
    from relaxit_plugins._multisample import loo_mean

    leaf = z.detach().requires_grad_(True)
    f = objective(leaf)
    (grad,) = torch.autograd.grad(f.sum(), leaf, retain_graph=True)
    dist = pdist.Bernoulli(logits=logits)
    fd, p = f.detach(), dist.probs.detach()
    score = z - p
    h = (loo_mean(grad) * score).sum(-1)
    signal = fd - loo_mean(fd) + alpha * (h - loo_mean(h))
    g_bar = grad.mean(0)
    log_q = dist.log_prob(z).sum(-1)
    sf = (f + signal.detach() * (log_q - log_q.detach())).mean(0)
    glob = (alpha.detach() * g_bar * (dist.probs - dist.probs.detach())).sum(-1)
    g_hat = (signal.unsqueeze(-1) * score).mean(0) - alpha * g_bar * p * (1 - p)
    var = g_hat.pow(2).sum(-1)
    return sf - glob + (var - var.detach())


def test_double_cv_equals_the_previous_formula():
    logits, objective, phi = _problem(4, (3, 5))
    est = relaxit.get("double_cv", alpha_init=0.6).double()
    leaf = logits.clone().requires_grad_(True)
    out = est.estimate(objective, num_samples=4, logits=leaf)
    got = _grads(out.surrogate, [leaf, phi, est.alpha])
    alpha = est.alpha.detach().clone().requires_grad_(True)
    leaf2 = logits.clone().requires_grad_(True)
    old = _old_double_cv(objective, out.samples, leaf2, alpha)
    want = _grads(old, [leaf2, phi, alpha])
    torch.testing.assert_close(out.surrogate.detach(), old.detach(), **TOL)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def test_conditional_sample_equals_the_two_branch_formula():
    """``relaxed_pair`` draws ``z̃`` with one softplus; the previous two-branch formula
    ``where(b, softplus(lv + softplus(l)), -softplus(lv + softplus(-l)))`` on the same noise
    gives the same values and gradients."""
    import torch.nn.functional as F

    from relaxit_core.distributions import logistic_like
    from relaxit_plugins._relaxed_cv import relaxed_pair

    logits = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4
    leaf = logits.clone().requires_grad_(True)
    torch.manual_seed(11)
    z, b, zt = relaxed_pair("bernoulli", leaf, 5)
    leaf2 = logits.clone().requires_grad_(True)
    torch.manual_seed(11)
    z2 = leaf2 + logistic_like(z.shape, leaf2)
    b2 = (z2 > 0).to(z2.dtype)
    lv = logistic_like(z.shape, leaf2)
    zt2 = torch.where(b2 > 0, F.softplus(lv + F.softplus(leaf2)), -F.softplus(lv + F.softplus(-leaf2)))
    assert torch.equal(b, b2) and torch.equal(z.detach(), z2.detach())
    torch.testing.assert_close(zt, zt2, rtol=0, atol=0)
    w = torch.randn_like(zt)
    torch.testing.assert_close(torch.autograd.grad((zt * w).sum(), leaf)[0],
                               torch.autograd.grad((zt2 * w).sum(), leaf2)[0], **TOL)


# ------------------------------------------------------------------------------- import cost
def test_first_get_loads_only_the_plugin_asked_for():
    """With only relaxit's own entry points installed, ``get(name)`` imports that one plugin
    module; ``available()`` then loads the rest (a fresh interpreter)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from relaxit_core.registry import ENTRY_POINT_GROUP, _dist_name, _relaxit_entry_points
        if len({_dist_name(ep) for ep in _relaxit_entry_points(ENTRY_POINT_GROUP)}) != 1:
            print("SKIP")
            raise SystemExit
        import relaxit
        est = relaxit.get("gumbel_softmax", tau=0.5)
        loaded = sorted(m for m in sys.modules if m.startswith("relaxit_plugins."))
        assert loaded == ["relaxit_plugins.gumbel_softmax"], loaded
        assert relaxit.describe("gumbel_softmax").name == "gumbel_softmax"
        names = [i.name for i in relaxit.available()]
        assert "reinforce" in names and len(names) > 20, names
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "SKIP":
        pytest.skip("a third-party relaxit plugin is installed: every get() loads all plugins")
    assert out.stdout.strip() == "OK"


def test_finite_screen_fast_path_and_its_overflow_fallback():
    """The non-finite screen sums each argument once; finite logits whose sum overflows (3e38 + 3e38
    in float32) still count as finite, and a single inf or NaN is still found."""
    from relaxit_core import ParameterError

    est = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
    big = torch.tensor([3e38, 3e38, -1.0], requires_grad=True)
    out = est.estimate(lambda z: (z - 0.3).pow(2), num_samples=2, logits=big)
    out.surrogate.sum().backward()
    assert torch.isfinite(big.grad).all() and torch.equal(out.samples[:, :2], torch.ones(2, 2))
    with pytest.raises(ParameterError, match="NaN"):
        est.estimate(lambda z: z, num_samples=2, logits=torch.tensor([0.0, float("nan"), 1.0]))
    inf = torch.tensor([0.0, float("inf"), 1.0], requires_grad=True)
    out = est.estimate(lambda z: (z - 0.3).pow(2), num_samples=2, logits=inf)
    assert torch.equal(out.samples[:, 1], torch.ones(2))


def test_relax_state_dict_carries_its_lazily_made_networks():
    """A trained RELAX (no ``latents``: networks made at the first estimate) reloads into a fresh
    estimator, and a state saved before the first estimate restores the network-less state."""
    f = lambda z: ((z - 0.3) ** 2).sum(-1)  # noqa: E731
    fresh = relaxit.get("relax", family="bernoulli", hidden=4)
    empty = {k: v.clone() for k, v in fresh.state_dict().items()}
    trained = relaxit.get("relax", family="bernoulli", hidden=4)
    out = trained.estimate(f, num_samples=2, logits=torch.zeros(3, 5, requires_grad=True))
    out.surrogate.sum().backward()
    with torch.no_grad():
        for p in trained.nets.parameters():
            p.add_(torch.randn_like(p))
    fresh.load_state_dict(trained.state_dict())
    assert set(fresh.nets) == {"5"}
    for (n1, a), (n2, b) in zip(fresh.state_dict().items(), trained.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    assert set(dict(fresh.named_parameters())) == set(dict(trained.named_parameters()))
    trained.load_state_dict(empty)
    assert len(trained.nets) == 0
    fixed = relaxit.get("relax", family="bernoulli", hidden=4, latents=5)
    with pytest.raises(RuntimeError, match="Missing key"):
        fixed.load_state_dict(empty)  # a network fixed by the config is not optional


# ------------------------------------------------------------------ the core guard's fast path
import relaxit_core.estimator as core_estimator  # noqa: E402
from relaxit_core import NonFiniteGradientWarning, ObjectiveError, ParameterError  # noqa: E402

GUARDED = [
    ("reinforce", {"family": "bernoulli", "baseline": "leave_one_out"}),
    ("reinforce", {"family": "categorical", "baseline": "none"}),
    ("vimco", {"family": "bernoulli"}),
    ("gumbel_softmax", {}),
    ("relaxed_bernoulli", {}),
    ("disarm", {}),
    ("gaussian_relaxed_bernoulli", {}),
]


@pytest.mark.parametrize(("name", "cfg"), GUARDED, ids=[f"{n}-{'-'.join(map(str, c.values()))}" for n, c in GUARDED])
def test_guard_fast_path_equals_the_full_checks(name, cfg, monkeypatch):
    """From an estimator's second call on, one finite floating-point tensor argument is checked
    by the guard's fast path (one sum): same samples, value, surrogate and gradients as the full
    checks give, with the same seed."""
    est = relaxit.get(name, **cfg)
    params = est.example_params((4,), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ((key, leaf),) = params.items()
    leaf.requires_grad_(True)
    k = max(2, est.min_num_samples)
    target = torch.linspace(0.1, 0.9, leaf.shape[-1], dtype=torch.float64)

    def objective(z):
        return (z - target[: z.shape[-1]]).pow(2).reshape(z.shape[0], 4, -1).sum(-1)

    est.estimate(objective, num_samples=k, **{key: leaf})  # the first call: full checks, names cached
    assert core_estimator._one_finite_tensor(est, {key: leaf, "num_samples": k})

    def run():
        torch.manual_seed(5)
        out = est.estimate(objective, num_samples=k, **{key: leaf})
        return out, torch.autograd.grad(out.surrogate.sum(), leaf)

    (fast, g_fast) = run()
    monkeypatch.setattr(core_estimator, "_one_finite_tensor", lambda self, kwargs: False)
    (full, g_full) = run()
    for a, b in zip((*fast, *g_fast), (*full, *g_full)):
        assert torch.equal(a.detach(), b.detach())


def test_guard_fast_path_is_taken_only_where_it_decides_like_the_full_checks():
    """NaN, limits, overflowing sums, numbers, integer tensors, probs, two arguments and a first
    call go through the full checks, which answer as before."""
    fast = core_estimator._one_finite_tensor
    est = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
    ok = torch.randn(3, 4, requires_grad=True)
    assert not fast(est, {"logits": ok})  # no call checked yet
    loss = lambda z: (z - 0.3).pow(2).sum(-1)  # noqa: E731
    est.estimate(loss, num_samples=2, logits=ok)
    assert fast(est, {"logits": ok, "num_samples": 2})
    nan = torch.tensor([[0.0, float("nan")]])
    assert not fast(est, {"logits": nan})
    with pytest.raises(ParameterError, match="'logits'.*NaN"):
        est.estimate(loss, num_samples=2, logits=nan)
    inf = torch.tensor([[float("inf"), -float("inf"), 0.5]], requires_grad=True)
    assert not fast(est, {"logits": inf})
    out = est.estimate(loss, num_samples=2, logits=inf)
    out.surrogate.sum().backward()
    assert torch.equal(out.samples[..., :2], torch.tensor([1.0, 0.0]).expand(2, 1, 2))
    assert torch.equal(inf.grad[..., :2], torch.zeros(1, 2))
    big = torch.tensor([6e4, 6e4, -1.0], dtype=torch.float16)  # finite entries, sum overflows float16
    assert not fast(est, {"logits": big})
    assert torch.equal(est.estimate(loss, num_samples=2, logits=big).samples[:, :2], torch.ones(2, 2, dtype=torch.float16))
    assert not fast(est, {"logits": 0.5})
    assert est.estimate(lambda z: (z - 0.3).pow(2), num_samples=2, logits=0.5).value.shape == ()
    assert not fast(est, {"logits": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(ParameterError, match="'logits'.*floating-point"):
        est.estimate(loss, num_samples=2, logits=torch.zeros(3, dtype=torch.long))
    assert not fast(est, {"probs": torch.full((3,), 0.5)})
    with pytest.raises(ParameterError, match="outside"):
        est.estimate(loss, num_samples=2, probs=torch.tensor([0.5, 1.5]))
    assert not fast(est, {"logits": ok, "probs": ok})
    with pytest.raises(ParameterError, match="both"):
        est.estimate(loss, num_samples=2, logits=ok, probs=ok.detach().sigmoid())


def test_guard_fast_path_keeps_the_objective_and_parameter_protection():
    """On the fast path the objective still may not change z in place nor return integers, and
    an estimator's own parameters still get the hook that skips non-finite updates."""
    est = relaxit.get("reinforce", family="bernoulli", baseline="learned")
    logits = torch.zeros(2, 3, requires_grad=True)
    est.check_params({"logits": logits})  # names accepted: the very first estimate() takes the fast path
    assert core_estimator._one_finite_tensor(est, {"logits": logits})
    assert not any(id(p) in core_estimator._PROTECTED for p in est.parameters())
    est.estimate(lambda z: z.sum(-1), num_samples=2, logits=logits)
    assert all(id(p) in core_estimator._PROTECTED for p in est.parameters())
    out = est.estimate(lambda z: z.sum(-1) * float("nan"), num_samples=2, logits=logits)
    with pytest.warns(NonFiniteGradientWarning):
        out.surrogate.sum().backward()
    with pytest.raises(ObjectiveError, match="in place"):
        est.estimate(lambda z: z.mul_(2).sum(-1), num_samples=2, logits=logits)
    with pytest.raises(ObjectiveError, match="torch.int64"):
        est.estimate(lambda z: z.sum(-1).long(), num_samples=2, logits=logits)


def test_reinforce_pickled_by_an_earlier_version_recomputes_its_flags():
    """An estimator pickled before the per-instance flags existed still runs (and takes its fast path)."""
    import io

    est = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
    state = dict(est.__dict__)
    for key in ("_bernoulli_fast", "_leave_one_out", "_reads_context"):
        del state[key]
    old = type(est).__new__(type(est))
    old.__setstate__(state)
    buf = io.BytesIO()
    torch.save(old, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded._bernoulli_fast and loaded._leave_one_out and not loaded._reads_context
    out = loaded.estimate(lambda z: (z - 0.3).pow(2).sum(-1), num_samples=2, logits=torch.zeros(2, 3))
    assert out.value.shape == (2,)
