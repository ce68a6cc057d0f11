"""The conformance kit: checks that any estimator (ours or a third party's) runs on itself.

Like scikit-learn's ``estimator_checks``, checks are chosen from the estimator's declared
capabilities, and :func:`parametrize_with_checks` gives pytest one test id per check::

    from relaxit_core.testing import parametrize_with_checks

    @parametrize_with_checks([MyEstimator])
    def test_conformance(estimator, check):
        check(estimator)

or, outside pytest, :func:`check_estimator` runs them all and raises on the first
failure.  Statistical checks use fixed seeds and thresholds derived from the sample size
(five standard errors, or a p-value of 1e-6); numerical ones derive their tolerance from
the dtype's machine epsilon.  The kit needs ``scipy`` (``pip install 'relaxit[test]'``).

An estimator class is checked under each of its ``conformance_configs``; an instance is
checked as it is.  Its ``example_params`` supplies the tensor arguments.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from relaxit_core.capabilities import FAMILIES, Capability
from relaxit_core.errors import ConfigError, EstimatorWarning, ParameterError, UnknownEstimatorError
from relaxit_core.estimator import EstimatorBase, GradientEstimator

__all__ = ["Check", "CHECKS", "checks_for", "check_estimator", "parametrize_with_checks", "estimator_id", "instances"]

C = Capability
Z_THRESHOLD = 5.0
"""Statistical checks fail beyond this many standard errors."""
P_THRESHOLD = 1e-6
"""Goodness-of-fit checks fail below this p-value."""


@dataclass(frozen=True)
class Check:
    """One conformance check: runs when the estimator has every capability in ``requires``."""

    name: str
    func: Callable[..., None]
    requires: frozenset[Capability] = frozenset()
    description: str = ""

    def __call__(self, estimator: Any, *, device: str | torch.device | None = None, seed: int = 0) -> None:
        est = copy.deepcopy(estimator)
        if device is not None:
            est = est.to(device)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            with _validation(True):
                self.func(est, torch.device(device) if device is not None else torch.device("cpu"))
        finally:
            torch.random.set_rng_state(gen_state)

    def __repr__(self) -> str:
        return f"Check({self.name})"


CHECKS: list[Check] = []


def _check(*requires: Capability) -> Callable:
    def deco(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip().splitlines()
        CHECKS.append(Check(func.__name__.removeprefix("check_"), func, frozenset(requires), doc[0] if doc else ""))
        return func

    return deco


class _validation:
    """Context manager setting torch's default ``validate_args``."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.prev = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(self.on)

    def __exit__(self, *exc):
        torch.distributions.Distribution.set_default_validate_args(self.prev)


# ----------------------------------------------------------------------------- helpers
def _params(est, batch_shape=(2, 3), *, dtype=torch.float64, device=None, extreme=False, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    params = est.example_params(tuple(batch_shape), dtype=dtype, device=device, generator=gen, extreme=extreme)
    out = {}
    for k, v in params.items():
        v = v.detach().clone()
        if requires_grad and v.is_floating_point():
            v.requires_grad_(True)
        out[k] = v
    return out


def _float_params(params):
    return {k: v for k, v in params.items() if v.is_floating_point() and v.requires_grad}


def _tol(dtype: torch.dtype, scale: float = 1.0) -> float:
    return 64 * torch.finfo(dtype).eps * max(1.0, scale)


def _assert(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def _main_dtype(params) -> torch.dtype:
    return next(v.dtype for v in params.values() if v.is_floating_point())


def _objective(dist, b_ndim: int, *, seed: int = 1, dtype=torch.float64, device=None):
    """A smooth, non-linear objective reducing every batch dimension beyond the first ``b_ndim``.

    ``f(z) = sum ((z - c)^2 * w) + (z_0 . a) (z_1 . a)`` over the reduced dimensions, with the
    product coupling the first two reduced elements (when there are two).
    """
    gen = torch.Generator().manual_seed(seed)
    full = tuple(dist.batch_shape) + tuple(dist.event_shape)
    c = torch.rand(full, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    w = (torch.rand(full, generator=gen, dtype=torch.float64) + 0.5).to(dtype=dtype, device=device)
    a = torch.randn(full, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    ndim_full = len(full)

    def objective(z: torch.Tensor) -> torch.Tensor:
        lead = z.dim() - ndim_full  # sample (and replicate) dimensions
        red = tuple(range(lead + b_ndim, z.dim()))
        quad = ((z - c) ** 2 * w)
        f = quad.sum(red) if red else quad
        flat = (z * a).flatten(lead + b_ndim) if red else None
        if flat is not None and flat.shape[-1] >= 2:
            ev = max(1, int(torch.Size(dist.event_shape).numel()))
            e0 = flat[..., :ev].sum(-1)
            e1 = flat[..., ev: 2 * ev].sum(-1)
            f = f + e0 * e1
        return f

    return objective


def _context(est, batch, *, device=None, dtype=torch.float64, seed=7) -> dict[str, torch.Tensor]:
    """``{"context": c}`` for an estimator that reads a context (its ``example_context``
    returns one for the objective's batch ``B``), else ``{}``."""
    make = getattr(est, "example_context", None)
    if make is None:
        return {}
    ctx = make(tuple(batch), dtype=dtype, device=device, generator=torch.Generator().manual_seed(seed))
    return {} if ctx is None else {"context": ctx}


def _is_registered(est) -> bool:
    from relaxit_core.registry import registry

    try:
        return registry.get_class(est.name) is type(est)
    except (UnknownEstimatorError, Exception):  # noqa: BLE001 - conflicts count as not registered
        return False


# ------------------------------------------------------------------------------ checks
@_check()
def check_declarations(est, device):
    """Class attributes follow the protocol; the instance's capabilities and family fit the class's."""
    cls = type(est)
    _assert(isinstance(est, torch.nn.Module), f"{cls.__name__} must be a torch.nn.Module")
    _assert(isinstance(est, GradientEstimator), f"{cls.__name__} does not implement GradientEstimator")
    if hasattr(cls, "check_declaration"):
        cls.check_declaration()
    _assert(est.capabilities <= cls.capabilities,
            f"instance capabilities {sorted(map(str, est.capabilities))} exceed the class's {sorted(map(str, cls.capabilities))}")
    families = tuple(getattr(cls, "families", ()) or (cls.family,))
    _assert(est.family in families, f"instance family {est.family!r} not among the class's families {families}")
    _assert(all(f in FAMILIES for f in families), f"unknown family in {families}")
    _assert(C.RSAMPLE in est.capabilities or C.SCORE_FUNCTION in est.capabilities
            or getattr(cls, "estimate", None) is not EstimatorBase.estimate,
            "an estimator needs RSAMPLE or SCORE_FUNCTION, or its own estimate()")
    _assert(bool((cls.__doc__ or "").strip()), f"{cls.__name__} needs a docstring (summary, maths, paper)")
    _assert(bool(getattr(cls, "reference", "")), f"{cls.__name__}.reference must cite the paper it implements")
    _assert(isinstance(est.config, cls.Config), "config must be an instance of Config")


@_check()
def check_config_roundtrip(est, device):
    """The config is frozen, dumps to JSON and rebuilds an equal estimator; bad fields raise ConfigError."""
    cfg = est.config
    dumped = cfg.model_dump()
    _assert(dumped["name"] == est.name, "config.name must equal the estimator name")
    _assert(type(est)(dumped).config == cfg, "Config round trip through model_dump() changed the config")
    _assert(type(cfg).model_validate_json(cfg.model_dump_json()) == cfg, "JSON round trip changed the config")
    try:
        cfg.name = "x"  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - pydantic raises ValidationError for frozen models
        pass
    else:
        raise AssertionError("configs must be frozen")
    try:
        type(est)({**dumped, "no_such_field_xyz": 1})
    except ConfigError as exc:
        _assert("no_such_field_xyz" in str(exc), "ConfigError must name the unknown field")
    else:
        raise AssertionError("unknown config fields must raise ConfigError (extra='forbid')")
    if _is_registered(est):
        from relaxit_core.registry import registry

        _assert(registry.build(dumped).config == cfg, "registry.build(config.model_dump()) changed the config")
        _assert(registry.validate_union(dumped) == cfg, "the discriminated union does not validate this config")


@_check()
def check_distribution_api(est, device):
    """The law is a Pyro TorchDistribution whose flags, constraints and ``infer_shapes`` agree."""
    from pyro.distributions.torch_distribution import TorchDistributionMixin

    params = _params(est, (2, 3), device=device)
    d = est.distribution(**params)
    _assert(isinstance(d, TorchDistributionMixin) and isinstance(d, torch.distributions.Distribution),
            f"distribution() must return a Pyro TorchDistribution, got {type(d).__name__}")
    _assert(bool(d.has_rsample) == (C.RSAMPLE in est.capabilities), "law.has_rsample must agree with RSAMPLE")
    _assert(bool(d.has_enumerate_support) == (C.ENUMERATE_SUPPORT in est.capabilities),
            "law.has_enumerate_support must agree with ENUMERATE_SUPPORT")
    _assert(isinstance(d.arg_constraints, dict), "arg_constraints must be a dict")
    _assert(isinstance(d.support, torch.distributions.constraints.Constraint), "support must be a Constraint")
    shapes = {k: v.shape for k, v in params.items()}
    batch, event = type(d).infer_shapes(**shapes)
    _assert((tuple(batch), tuple(event)) == (tuple(d.batch_shape), tuple(d.event_shape)),
            f"infer_shapes gave {(tuple(batch), tuple(event))}, the law has {(tuple(d.batch_shape), tuple(d.event_shape))}")


@_check()
def check_sample_shapes(est, device):
    """``sample``/``rsample`` give ``sample_shape + batch_shape + event_shape`` in the parameters' dtype and device."""
    for dtype in (torch.float32, torch.float64):
        for batch in ((), (2, 3)):
            params = _params(est, batch, dtype=dtype, device=device)
            d = est.distribution(**params)
            _assert(tuple(d.batch_shape) == tuple(batch), f"batch_shape {tuple(d.batch_shape)} != {batch}")
            for sample_shape in ((), (4,), (2, 3)):
                want = torch.Size(sample_shape) + d.batch_shape + d.event_shape
                methods = ["sample"] + (["rsample"] if C.RSAMPLE in est.capabilities else [])
                for m in methods:
                    x = getattr(d, m)(torch.Size(sample_shape))
                    _assert(x.shape == want, f"{m}({sample_shape}) has shape {tuple(x.shape)}, expected {tuple(want)}")
                    _assert(x.dtype == dtype, f"{m} returned {x.dtype} for {dtype} parameters")
                    _assert(x.device.type == torch.device(device).type, f"{m} returned a sample on {x.device}")


@_check()
def check_expand(est, device):
    """``expand`` and Pyro's ``expand_by`` give laws of the new batch shape that sample and score."""
    d = est.distribution(**_params(est, (2, 3), device=device))
    e = d.expand(torch.Size((4, 2, 3)))
    _assert(tuple(e.batch_shape) == (4, 2, 3), f"expand gave batch_shape {tuple(e.batch_shape)}")
    _assert(type(e) is type(d), "expand must return the same class")
    x = e.sample((5,))
    _assert(x.shape == (5, 4, 2, 3) + tuple(d.event_shape), f"expanded sample shape {tuple(x.shape)}")
    if C.RSAMPLE in est.capabilities:
        _assert(e.rsample().shape == (4, 2, 3) + tuple(d.event_shape), "expanded rsample shape")
    if C.LOG_PROB in est.capabilities:
        _assert(e.log_prob(x).shape == (5, 4, 2, 3), "expanded log_prob shape")
        y = d.sample()
        _assert(torch.allclose(e.log_prob(y)[0], d.log_prob(y), rtol=_tol(y.dtype), atol=_tol(y.dtype)),
                "expand changed log_prob")
    b = d.expand_by((7,))
    _assert(tuple(b.batch_shape) == (7, 2, 3), "expand_by failed")


@_check()
def check_support(est, device):
    """Samples lie in the declared support; with HARD they are exactly discrete."""
    d = est.distribution(**_params(est, (2, 3), device=device))
    xs = [("sample", d.sample((64,)))]
    if C.RSAMPLE in est.capabilities:
        xs.append(("rsample", d.rsample((64,))))
    for m, x in xs:
        _assert(bool(torch.isfinite(x).all()), f"{m} returned non-finite values")
        _assert(bool(d.support.check(x).all()), f"{m} returned values outside the support {d.support}")
        if C.HARD in est.capabilities:
            _assert(bool((x == x.round()).all()), f"{m} of a HARD estimator returned non-integer values")


@_check()
def check_noise_independent(est, device):
    """Each batch element gets its own noise: identical parameters give different samples."""
    p1 = _params(est, (1,), device=device)
    d1 = est.distribution(**p1)
    n = 256
    params = {}
    for k, v in p1.items():
        bdims = len(d1.batch_shape)
        # parameters have batch dims first; expand the batch dim of size 1 to n
        params[k] = v.expand((n,) + tuple(v.shape[1:])).contiguous() if v.dim() > 0 and v.shape[0] == 1 and bdims else v
    d = est.distribution(**params)
    methods = ["sample"] + (["rsample"] if C.RSAMPLE in est.capabilities else [])
    for m in methods:
        x = getattr(d, m)().reshape(n, -1)
        distinct = torch.unique(x, dim=0).shape[0]
        _assert(distinct > 1, f"{m}: {n} batch elements with equal parameters all got the same sample (shared noise?)")


@_check(C.RSAMPLE)
def check_rsample_gradients_finite(est, device):
    """``rsample`` gradients are finite in float32 and float64, at ordinary and extreme (±30) parameters."""
    for dtype in (torch.float32, torch.float64):
        for extreme in (False, True):
            params = _params(est, (2, 3), dtype=dtype, device=device, extreme=extreme, requires_grad=True)
            d = est.distribution(**params)
            x = d.rsample((8,))
            _assert(bool(torch.isfinite(x).all()), f"rsample non-finite ({dtype}, extreme={extreme})")
            w = torch.linspace(-1, 1, x.numel(), dtype=dtype, device=x.device).reshape(x.shape)
            (x * w).sum().backward()
            for k, v in _float_params(params).items():
                _assert(v.grad is not None and bool(torch.isfinite(v.grad).all()),
                        f"non-finite or missing gradient for {k!r} ({dtype}, extreme={extreme})")


@_check(C.LOG_PROB)
def check_log_prob(est, device):
    """``log_prob`` has shape ``sample_shape + batch_shape``, is finite on samples (also at ±30), and validates values."""
    for dtype in (torch.float32, torch.float64):
        for extreme in (False, True):
            d = est.distribution(**_params(est, (2, 3), dtype=dtype, device=device, extreme=extreme))
            x = (d.rsample if C.RSAMPLE in est.capabilities else d.sample)((5,))
            lp = d.log_prob(x)
            _assert(lp.shape == (5, 2, 3), f"log_prob shape {tuple(lp.shape)}, expected (5, 2, 3)")
            _assert(bool(torch.isfinite(lp).all()), f"log_prob not finite on its own samples ({dtype}, extreme={extreme})")
    d = est.distribution(**_params(est, (2, 3), device=device))
    x = d.sample()
    bad = x + 7.5
    if not bool(d.support.check(bad).any()):
        try:
            d.log_prob(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("log_prob accepted values outside the support with validation on")
    wrong = torch.zeros((2, 4) + tuple(d.event_shape), dtype=x.dtype, device=x.device)
    try:
        d.log_prob(wrong)
    except (ValueError, RuntimeError):
        pass
    else:
        raise AssertionError("log_prob accepted a value of a non-broadcastable shape with validation on")


@_check(C.ENUMERATE_SUPPORT)
def check_enumerate_support(est, device):
    """``enumerate_support`` has torch's shapes and order and ``log_prob`` sums to one over it."""
    d = est.distribution(**_params(est, (2, 3), device=device))
    s = d.enumerate_support(expand=True)
    n = s.shape[0]
    _assert(s.shape == (n, 2, 3) + tuple(d.event_shape), f"enumerate_support shape {tuple(s.shape)}")
    s0 = d.enumerate_support(expand=False)
    _assert(s0.shape == (n, 1, 1) + tuple(d.event_shape), f"enumerate_support(expand=False) shape {tuple(s0.shape)}")
    total = d.log_prob(s).logsumexp(0)
    _assert(bool(torch.allclose(total, torch.zeros_like(total), atol=_tol(total.dtype, n))),
            f"log_prob over the support sums to {total.exp().flatten().tolist()}, not 1")
    if d.support is torch.distributions.constraints.boolean or isinstance(d.support, type(torch.distributions.constraints.boolean)):
        _assert(s0.flatten().tolist() == [0.0, 1.0], "binary support must be enumerated as 0 then 1")
    if isinstance(d.support, type(torch.distributions.constraints.one_hot)):
        k = d.event_shape[-1]
        _assert(torch.equal(s0.reshape(n, k), torch.eye(k, dtype=s0.dtype, device=s0.device)),
                "one-hot support must be enumerated as the rows of eye(K)")


def _chi_square(d, x, what: str) -> None:
    from scipy import stats

    support = d.enumerate_support(expand=True)  # [n, *batch, *event]
    n = support.shape[0]
    probs = d.log_prob(support).exp()  # [n, *batch]
    ev = len(d.event_shape)
    eq = (x.unsqueeze(1) == support.unsqueeze(0))
    if ev:
        eq = eq.flatten(-ev).all(-1)
    _assert(bool(eq.any(1).all()), f"{what}: a sample is not in enumerate_support")
    counts = eq.to(torch.float64).sum(0)  # [n, *batch]
    num = x.shape[0]
    expected = probs.to(torch.float64) * num
    keep = expected > 0
    stat = ((counts - expected) ** 2 / expected.clamp_min(1e-300))[keep].sum().item()
    dof = int(keep.sum().item()) - int(torch.Size(d.batch_shape).numel())
    p = float(stats.chi2.sf(stat, max(dof, 1)))
    _assert(p > P_THRESHOLD, f"{what}: samples do not follow exp(log_prob) (chi-square {stat:.1f}, dof {dof}, p = {p:.2e})")


@_check(C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT)
def check_sample_law(est, device):
    """Forward samples (``sample`` and ``rsample``) follow ``exp(log_prob)`` (chi-square, p > 1e-6)."""
    d = est.distribution(**_params(est, (2,), device=device))
    _chi_square(d, d.sample((20000,)), "sample")
    if C.RSAMPLE in est.capabilities:
        _chi_square(d, d.rsample((20000,)).detach(), "rsample")


@_check(C.KL)
def check_kl(est, device):
    """``kl_divergence`` is registered, non-negative, zero for equal laws, and matches a Monte Carlo estimate."""
    p = est.distribution(**_params(est, (2, 3), device=device, seed=0))
    q = est.distribution(**_params(est, (2, 3), device=device, seed=1))
    kl = torch.distributions.kl_divergence(p, q)
    _assert(kl.shape == p.batch_shape, f"KL shape {tuple(kl.shape)}")
    _assert(bool((kl >= -_tol(kl.dtype)).all()), "KL is negative")
    self_kl = torch.distributions.kl_divergence(p, p)
    _assert(bool(torch.allclose(self_kl, torch.zeros_like(self_kl), atol=_tol(kl.dtype, 10))), "KL(p, p) != 0")
    if C.LOG_PROB in est.capabilities:
        n = 20000
        x = p.sample((n,))
        diff = p.log_prob(x) - q.log_prob(x)
        mc, se = diff.mean(0), diff.std(0) / math.sqrt(n)
        z = ((mc - kl).abs() / se.clamp_min(1e-12)).max().item()
        _assert(z < Z_THRESHOLD or bool(torch.allclose(mc, kl, atol=_tol(kl.dtype, 10))),
                f"KL differs from its Monte Carlo estimate by {z:.1f} standard errors")


def _min_samples(est) -> int:
    return int(getattr(est, "min_num_samples", 1) or 1)



@_check()
def check_estimate_contract(est, device):
    """``estimate`` returns value and surrogate of shape ``B``, equal in value; gradients reach the law's and the objective's parameters."""
    s = max(4, _min_samples(est))
    reductions = tuple(getattr(est, "reductions", ("mean",)))
    _assert("mean" in reductions, "every estimator supports reduce='mean'")
    for b_ndim, reduce in [(b, "mean") for b in (0, 1, 2)] + [(1, r) for r in reductions if r != "mean"]:
        params = _params(est, (2, 3), device=device, requires_grad=True)
        d = est.distribution(**{k: v.detach() for k, v in params.items()})
        base = _objective(d, b_ndim, device=device)
        phi = torch.tensor(1.7, dtype=torch.float64, device=device, requires_grad=True)
        kw = {} if reduce == "mean" else {"reduce": reduce}
        want = tuple(d.batch_shape)[:b_ndim]
        out = est.estimate(lambda z: phi * base(z), num_samples=s, **kw, **_context(est, want, device=device), **params)
        _assert(tuple(out.value.shape) == want, f"value shape {tuple(out.value.shape)}, expected {want}")
        _assert(tuple(out.surrogate.shape) == want, f"surrogate shape {tuple(out.surrogate.shape)}, expected {want}")
        _assert(not out.value.requires_grad, "value must be detached")
        _assert(out.samples.shape == (s,) + tuple(d.batch_shape) + tuple(d.event_shape),
                f"samples shape {tuple(out.samples.shape)}")
        tol = _tol(torch.float64, float(out.value.abs().max()))
        _assert(bool(torch.allclose(out.surrogate.detach(), out.value, atol=tol, rtol=0)),
                "surrogate's forward value must equal value")
        f_again = (phi * base(out.samples.detach())).detach()
        again = f_again.mean(0) if reduce == "mean" else f_again.logsumexp(0) - math.log(s)
        _assert(bool(torch.allclose(again, out.value, atol=tol, rtol=0)),
                f"value must be the {reduce} of the objective on the returned samples")
        out.surrogate.sum().backward()
        for k, v in _float_params(params).items():
            _assert(v.grad is not None and v.grad.shape == v.shape and bool(torch.isfinite(v.grad).all()),
                    f"gradient of {k!r} missing, misshapen or non-finite")
        _assert(phi.grad is not None, "the objective's own parameter got no gradient")
        if reduce != "mean":
            continue
        want_phi = out.value.sum() / phi.detach()
        _assert(bool(torch.allclose(phi.grad, want_phi, atol=tol, rtol=0)),
                f"the objective's parameter got {phi.grad.item():.6g}, expected the Monte Carlo mean {want_phi.item():.6g}")
    # gradients finite at extreme parameters, in float32 too
    for dtype in (torch.float32, torch.float64):
        params = _params(est, (2, 3), device=device, dtype=dtype, extreme=True, requires_grad=True)
        d = est.distribution(**{k: v.detach() for k, v in params.items()})
        base = _objective(d, 0, dtype=dtype, device=device)
        out = est.estimate(base, num_samples=s, **_context(est, (), device=device, dtype=dtype), **params)
        out.surrogate.backward()
        for k, v in _float_params(params).items():
            _assert(v.grad is not None and bool(torch.isfinite(v.grad).all()), f"non-finite gradient for {k!r} at extreme parameters ({dtype})")


@_check()
def check_two_phase(est, device):
    """With ``cost_samples`` set, ``draw`` then ``from_costs`` give what ``estimate`` gives under the same random stream."""
    form = getattr(est, "cost_samples", None)
    _assert(form in (None, "any", "own"), f"cost_samples must be None, 'any' or 'own', got {form!r}")
    if form is None:
        return
    s = max(4, _min_samples(est))
    for reduce in tuple(getattr(est, "reductions", ("mean",))):
        grads = []
        for phase in ("estimate", "two"):
            params = _params(est, (2, 3), device=device, requires_grad=True)
            d = est.distribution(**{k: v.detach() for k, v in params.items()})
            base = _objective(d, 1, device=device)
            state = copy.deepcopy(est.state_dict())
            torch.manual_seed(11)
            if phase == "estimate":
                out = est.estimate(base, num_samples=s, reduce=reduce, **params)
            else:
                draw = est.draw(s, **params)
                out = est.from_costs(base(draw.samples), draw, reduce=reduce, **params)
            est.load_state_dict(state)
            out.surrogate.sum().backward()
            grads.append((out.value, [v.grad for v in _float_params(params).values()]))
        (v1, g1), (v2, g2) = grads
        tol = _tol(torch.float64, float(v1.abs().max()))
        _assert(bool(torch.allclose(v1, v2, atol=tol, rtol=0)), f"two phases give another value than estimate() ({reduce})")
        for a, b in zip(g1, g2):
            _assert(bool(torch.allclose(a, b, atol=tol * 16, rtol=1e-9)), f"two phases give another gradient than estimate() ({reduce})")


@_check()
def check_evaluations(est, device):
    """``evaluations(num_samples, batch_ndim=b, **params)`` equals the objective rows one gradient-building ``estimate`` call evaluates."""
    s = max(4, _min_samples(est))
    for b_ndim in (0, 1):
        params = _params(est, (2, 3), device=device, requires_grad=True)
        d = est.distribution(**{k: v.detach() for k, v in params.items()})
        base = _objective(d, b_ndim, device=device)
        ndim_full = len(d.batch_shape) + len(d.event_shape)
        rows = []

        def counting(z, base=base, rows=rows, ndim_full=ndim_full):
            rows.append(int(z.shape[: z.dim() - ndim_full].numel()))
            return base(z)

        ctx = _context(est, tuple(d.batch_shape)[:b_ndim], device=device)
        est.estimate(counting, num_samples=s, **ctx, **params).surrogate.sum().backward()
        declared = est.evaluations(s, batch_ndim=b_ndim, **params)
        _assert(isinstance(declared, int) and not isinstance(declared, bool),
                f"evaluations() must return an int, got {declared!r}")
        _assert(declared == sum(rows),
                f"evaluations({s}, batch_ndim={b_ndim}) = {declared}, but estimate() evaluated {sum(rows)} objective rows ({rows})")


@_check()
def check_argument_errors(est, device):
    """Wrong arguments raise ParameterError (or ValueError) naming what is allowed."""
    params = _params(est, (2, 3), device=device)
    try:
        est.distribution(**params, no_such_param_xyz=torch.zeros(1))
    except ParameterError as exc:
        _assert(any(p in str(exc) for p in est.params), "the error must list the allowed arguments")
    else:
        raise AssertionError("an unknown argument must raise ParameterError")
    for group in getattr(est, "exclusive_params", ()):
        present = [g for g in group if g in params]
        if present:
            both = dict(params)
            for g in group:
                both[g] = params[present[0]]
            try:
                est.distribution(**both)
            except (ParameterError, ValueError):
                pass
            else:
                raise AssertionError(f"giving all of {group} must raise")
    try:
        est.estimate(lambda z: z, num_samples=0, **params)
    except (ParameterError, ValueError):
        pass
    else:
        raise AssertionError("num_samples=0 must raise")
    try:
        s = max(2, _min_samples(est))
        est.estimate(lambda z: z.new_zeros((s, 5, 5, 5)), num_samples=s, **_context(est, (), device=device), **params)
    except (ValueError, RuntimeError):
        pass
    else:
        raise AssertionError("an objective of the wrong shape must raise ValueError")
    main = next(k for k, v in params.items() if v.is_floating_point())
    bad = dict(params)
    bad[main] = params[main].clone()
    bad[main].view(-1)[0] = float("nan")
    try:
        est.distribution(**bad)
    except ValueError:
        pass
    else:
        raise AssertionError(f"a NaN in {main!r} must raise ValueError when validation is on")


@_check(C.UNBIASED)
def check_unbiased(est, device):
    """The mean gradient estimate equals the exact gradient by enumeration, within 5 standard errors."""
    from relaxit_core.diagnostics import exact_gradient, family_law, gradient_samples

    batch = (3,) if est.family == "bernoulli" else (2,)
    params = _params(est, batch, device=device, seed=3)
    d = est.distribution(**params)
    objective = _objective(d, 0, seed=5, device=device)
    law = (lambda **p: est.distribution(**p)) if C.ENUMERATE_SUPPORT in est.capabilities else None
    exact = exact_gradient(objective, params, est.family, law=law)
    s = max(2, _min_samples(est))
    draws = 4000
    ctx = _context(est, (), device=device)  # the objective reduces every batch dimension: B = ()
    gradient_samples(est, objective, params, 8, num_samples=s, **ctx)  # warm-up (moving averages, control variates)
    grads = gradient_samples(est, objective, params, draws, num_samples=s, **ctx)
    _compare_to_exact(grads, exact, "reduce='mean'")
    if "logmeanexp" in getattr(est, "reductions", ()):
        # the multi-sample bound over S = 2 draws: enumerate the joint law of both draws
        s = max(2, _min_samples(est))

        def joint(z):  # z: [N, S, *batch, *event] -> [N]
            return objective(z).logsumexp(1) - math.log(s)

        def law_s(**p):
            base = law(**p) if law is not None else family_law(est.family, p)
            return base.expand(torch.Size((s,)) + base.batch_shape)

        exact_s = exact_gradient(joint, params, est.family, law=law_s)
        leaves = {k: v.detach().unsqueeze(0).expand(draws, *v.shape).clone().requires_grad_(True) for k, v in params.items()}
        ctx_s = {k: v.unsqueeze(0).expand(draws, *v.shape) for k, v in ctx.items()}
        out = est.estimate(objective, num_samples=s, reduce="logmeanexp", **ctx_s, **leaves)
        g = torch.autograd.grad(out.surrogate.sum(), list(leaves.values()))
        _compare_to_exact(dict(zip(leaves, g)), exact_s, "reduce='logmeanexp'")


def _compare_to_exact(grads, exact, what):
    draws = next(iter(grads.values())).shape[0]
    for k, g in grads.items():
        mean = g.mean(0)
        se = g.std(0) / math.sqrt(draws)
        err = (mean - exact[k]).abs()
        slack = Z_THRESHOLD * se + _tol(torch.float64, float(exact[k].abs().max()))
        worst = (err / slack).max().item()
        _assert(bool((err <= slack).all()),
                f"{what}: gradient of {k!r} is biased: mean {mean.flatten().tolist()} vs exact {exact[k].flatten().tolist()} "
                f"(standard errors {se.flatten().tolist()}; worst ratio to the 5-SE bound {worst:.2f})")


@_check()
def check_pickle(est, device):
    """Laws and estimators survive ``torch.save``/``torch.load`` and pickle."""
    d = est.distribution(**_params(est, (2, 3), device=device))
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    d2 = torch.load(buf, weights_only=False)
    _assert(type(d2) is type(d) and d2.batch_shape == d.batch_shape and d2.event_shape == d.event_shape,
            "a pickled law changed class or shape")
    x = d.sample()
    if C.LOG_PROB in est.capabilities:
        _assert(bool(torch.allclose(d.log_prob(x), d2.log_prob(x))), "a pickled law changed log_prob")
    e2 = pickle.loads(pickle.dumps(est))
    _assert(e2.config == est.config, "a pickled estimator changed its config")
    state = est.state_dict()
    fresh = type(est)(est.config)
    fresh.load_state_dict(state)


@_check()
def check_pyro_site(est, device):
    """The law works as a ``pyro.sample`` site: traced, scored, and in an ELBO when it has ``log_prob``."""
    import pyro
    import pyro.poutine as poutine

    params = _params(est, (2, 3), device=device, requires_grad=True)
    d = est.distribution(**params)
    n_batch = len(d.batch_shape)

    def model():
        return pyro.sample("z", est.distribution(**{k: v.detach() for k, v in params.items()}).to_event(n_batch))

    def guide():
        return pyro.sample("z", est.distribution(**params).to_event(n_batch))

    pyro.clear_param_store()
    with warnings.catch_warnings():  # Trace_ELBO on a score-function law warns (EstimatorWarning): expected here
        warnings.simplefilter("ignore", EstimatorWarning)
        tr = poutine.trace(guide).get_trace()
        _assert(tr.nodes["z"]["value"].shape == d.shape(), "the site's value has the wrong shape")
        if C.LOG_PROB in est.capabilities:
            _assert(bool(torch.isfinite(tr.log_prob_sum())), "the site's log_prob is not finite")
            loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide)
            loss.backward()
            for k, v in _float_params(params).items():
                _assert(v.grad is not None and bool(torch.isfinite(v.grad).all()), f"ELBO gradient of {k!r} not finite")


# -------------------------------------------------------------------------- running
def instances(obj: Any) -> list[Any]:
    """The estimator instances to check: a class under each of its ``conformance_configs``
    (default: its default config), an instance as it is."""
    if isinstance(obj, type):
        configs = getattr(obj, "conformance_configs", ({},)) or ({},)
        return [obj(dict(c)) for c in configs]
    return [obj]


def estimator_id(est: Any) -> str:
    """``name`` plus the config fields that differ from the defaults, e.g. ``gumbel_softmax[hard=True]``."""
    diff = est.config.non_default_fields()
    return est.name + ("[" + ",".join(f"{k}={v}" for k, v in diff.items()) + "]" if diff else "")


def checks_for(estimator: Any) -> list[Check]:
    """The checks that apply to ``estimator`` (by its instance capabilities)."""
    return [c for c in CHECKS if c.requires <= estimator.capabilities]


def _cases(estimators: Iterable[Any]) -> Iterator[tuple[str, Any, Check]]:
    for obj in estimators:
        for est in instances(obj):
            for check in checks_for(est):
                yield f"{estimator_id(est)}-{check.name}", est, check


def check_estimator(estimator: Any, *, device: str | torch.device | None = None, seed: int = 0) -> None:
    """Run every applicable check on an estimator class (each conformance config) or instance.

    Raises :class:`AssertionError` listing every failed check.
    """
    failures = []
    for case_id, est, check in _cases([estimator]):
        try:
            check(est, device=device, seed=seed)
        except Exception as exc:  # noqa: BLE001 - report every failing check
            failures.append(f"{case_id}: {type(exc).__name__}: {exc}")
    if failures:
        raise AssertionError(f"{len(failures)} conformance check(s) failed:\n" + "\n".join(failures))


def parametrize_with_checks(estimators: Iterable[Any], *, device: str | torch.device | None = None, seed: int = 0):
    """A ``pytest.mark.parametrize`` over ``(estimator, check)`` pairs, one test id per check.

    The test receives an estimator instance and a callable ``check(estimator)``.
    """
    import functools

    import pytest

    cases = list(_cases(estimators))
    return pytest.mark.parametrize(
        ("estimator", "check"),
        [(est, functools.partial(check, device=device, seed=seed)) for _, est, check in cases],
        ids=[cid for cid, _, _ in cases],
    )
