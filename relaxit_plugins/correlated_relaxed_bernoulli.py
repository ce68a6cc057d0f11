"""Correlated relaxed Bernoulli variables through a Gaussian copula.

References:
    Wang & Yin (2020), *Relaxed Multivariate Bernoulli Distribution and Its Applications to
    Deep Generative Models*, UAI — Sec. 3 (RelaxedMVB): correlated uniforms from a
    Gaussian copula, ``u = Φ(x)``, ``x ~ N(0, R)`` with ``R`` a correlation matrix, fed to
    the binary Concrete relaxation of each marginal.
    Maddison, Mnih & Teh (2017), *The Concrete Distribution*, ICLR — Sec. 3.3, the binary
    Concrete ``z = sigmoid((logits + L)/τ)`` with logistic ``L = logit(u)``, and its density.
    Nelsen (2006), *An Introduction to Copulas*, Springer — the Gaussian copula density
    ``c_R(u) = |R|^{-1/2} exp(-x^T (R^{-1} - I) x / 2)``, ``x = Φ^{-1}(u)``.

Construction, per event of ``n`` variables: ``x ~ N(0, R)``; ``L_i = logit(Φ(x_i))`` (computed
as ``log Φ(x_i) - log Φ(-x_i)``), each ``L_i`` exactly ``Logistic(0, 1)`` with the
dependence of ``R``; ``z_i = sigmoid((logits_i + L_i) / τ)``.  The hard value
``1[logits_i + L_i > 0] = 1[u_i > 1 - p_i]`` is exactly ``Bernoulli(p_i)`` for every ``i``,
and two hard values are positively/negatively dependent as ``R_ij`` is: their joint
``P(1, 1)`` is the bivariate normal orthant probability ``Φ₂(Φ^{-1}(p_i), Φ^{-1}(p_j); R_ij)``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import lazy_property
from torch.special import log_ndtr, ndtri

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import as_logits, clamp_probs
from relaxit_core.surrogate import straight_through
from relaxit_plugins._special import compute_dtype as _compute_dtype
from relaxit_plugins._special import log_, validating

__all__ = [
    "CorrelatedRelaxedBernoulli",
    "StraightThroughCorrelatedRelaxedBernoulli",
    "CorrelatedRelaxedBernoulliEstimator",
    "check_correlation_matrix",
]


class _CorrelationMatrix(constraints.Constraint):
    """Symmetric positive-definite matrices with unit diagonal (event_dim 2)."""

    is_discrete = False
    event_dim = 2

    def check(self, value):
        ct = _compute_dtype(value.dtype)
        v = value.to(ct)
        tol = 1000 * torch.finfo(ct).eps
        sym = ((v - v.mT).abs() <= tol).flatten(-2).all(-1)
        diag = ((v.diagonal(dim1=-2, dim2=-1) - 1).abs() <= tol).all(-1)
        pd = torch.linalg.cholesky_ex(v).info == 0
        return sym & diag & pd


correlation_matrix = _CorrelationMatrix()


def check_correlation_matrix(corr: torch.Tensor) -> torch.Tensor:
    """Raise :class:`ValueError` saying why ``corr`` (``[..., n, n]``) is not a correlation
    matrix; return its Cholesky factor (in float32 for 16-bit input) when it is one."""
    if corr.dim() < 2 or corr.shape[-1] != corr.shape[-2]:
        raise ValueError(f"corr must have shape [..., n, n], got {tuple(corr.shape)}")
    ct = _compute_dtype(corr.dtype)
    v = corr.to(ct)
    tol = 1000 * torch.finfo(ct).eps
    if not bool(torch.isfinite(v).all()):
        raise ValueError("corr must be finite")
    asym = (v - v.mT).abs().max()
    if asym > tol:
        raise ValueError(f"corr must be symmetric (max |corr - corr^T| = {asym.item():.3g})")
    off = (v.diagonal(dim1=-2, dim2=-1) - 1).abs().max()
    if off > tol:
        raise ValueError(f"corr must have a unit diagonal (max |diag - 1| = {off.item():.3g})")
    tril, info = torch.linalg.cholesky_ex(v)
    if bool((info != 0).any()):
        eig = torch.linalg.eigvalsh(v).min()
        raise ValueError(f"corr must be positive definite (smallest eigenvalue {eig.item():.3g})")
    return tril


def _ndtri_exp(log_q: torch.Tensor) -> torch.Tensor:
    """``Φ^{-1}(exp(log_q))`` for ``log_q <= log(1/2)``, accurate where ``exp(log_q)`` underflows.

    ``ndtri`` where ``exp(log_q)`` is a normal number; below (``x`` under about -37 in
    float64, -13 in float32) the fixed point of the asymptotic series
    ``log Φ(x) = -x²/2 - log(-x) - log(2π)/2 + log(1 - 1/x² + 3/x⁴ - 15/x⁶)``, whose
    truncation error (``105/x⁸``) is below the dtype's resolution there; three iterations
    (each contracts the error by about ``1/x²``) from ``x = -sqrt(-2 log_q)``.
    """
    tiny_log = math.log(torch.finfo(log_q.dtype).tiny) + 1.0
    normal = log_q > tiny_log
    q = torch.where(normal, log_q, torch.zeros_like(log_q)).exp()
    x_mid = ndtri(torch.where(normal, q, torch.full_like(q, 0.25)))
    lq = torch.where(normal, torch.full_like(log_q, tiny_log), log_q)
    t = -2 * lq - math.log(2 * math.pi)
    x = -(-2 * lq).sqrt()
    for _ in range(3):
        r = 1 / (x * x)
        x = -(t - 2 * (-x).log() + 2 * torch.log1p(r * (-1 + r * (3 - 15 * r)))).sqrt()
    return torch.where(normal, x_mid, x)


def _latent_from_logistic(l: torch.Tensor) -> torch.Tensor:
    """``x = Φ^{-1}(sigmoid(l))``, stable in both tails: ``-sign(l) Φ^{-1}(sigmoid(-|l|))``."""
    x = _ndtri_exp(-F.softplus(l.abs()))  # log sigmoid(-|l|) = -softplus(|l|)
    return torch.where(l > 0, -x, x)


class CorrelatedRelaxedBernoulli(TorchDistribution):
    r"""Relaxed multivariate Bernoulli on ``[0, 1]^n`` with a Gaussian copula (Wang & Yin 2020).

    Args:
        probs: ``[..., n]`` marginal probabilities (give this or ``logits``).
        logits: ``[..., n]`` marginal log-odds (give this or ``probs``).
        corr: ``[..., n, n]`` correlation matrix ``R`` of the latent Gaussian (symmetric,
            positive definite, unit diagonal; checked when validation is on, with a message
            saying which property fails).
        temperature: ``τ > 0``, a number or a tensor broadcast with ``logits`` (one
            temperature per variable, as relaxit 1.x's ``tau`` tensor allowed).

    ``rsample``: ``x = chol(R) ε``, ``L = log Φ(x) - log Φ(-x)``,
    ``z = sigmoid((logits + L)/τ)`` clamped to ``[eps, 1 - eps]`` of the dtype.

    ``log_prob`` is the joint density of the event w.r.t. Lebesgue measure on ``[0, 1]^n``
    (the contract's convention for this law): the change of variables
    ``z -> L_i = τ logit(z_i) - logits_i -> x_i = Φ^{-1}(sigmoid(L_i))`` gives
    ``log p(z) = Σ_i log p_BC(z_i) + log c_R(x)``, the binary Concrete densities of the
    marginals, ``log p_BC(z_i) = log τ - L_i - 2 softplus(-L_i) - log z_i - log(1 - z_i)``,
    plus the Gaussian copula log-density
    ``log c_R(x) = -Σ_i log chol(R)_ii - (|chol(R)^{-1} x|² - |x|²)/2``.  With ``R = I`` it is
    the product of the marginal binary Concrete densities.  16-bit parameters are computed in
    float32 and returned in their own dtype.

    Example:
        >>> corr = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
        >>> d = CorrelatedRelaxedBernoulli(logits=torch.zeros(2), corr=corr, temperature=0.5)
        >>> z = d.rsample((5,))
        >>> z.shape, d.log_prob(z).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    arg_constraints = {
        "probs": constraints.independent(constraints.unit_interval, 1),
        "logits": constraints.independent(constraints.real, 1),
        "corr": correlation_matrix,
    }
    support = constraints.independent(constraints.unit_interval, 1)
    has_rsample = True

    def __init__(self, probs=None, logits=None, corr=None, temperature: float = 1.0,
                 validate_args: bool | None = None):
        if (probs is None) == (logits is None):
            raise ValueError(
                f"{type(self).__name__}: give exactly one of `probs` or `logits`, not "
                + ("both" if probs is not None else "neither")
            )
        if corr is None:
            raise ValueError(f"{type(self).__name__}: `corr` (a correlation matrix [..., n, n]) is required")
        param = probs if probs is not None else logits
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(dtype=param.dtype, device=param.device)
            if validating(validate_args) and not bool((temperature > 0).all()):
                raise ValueError(f"{type(self).__name__}: argument 'temperature' must be positive")
        elif not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"{type(self).__name__}: temperature must be a positive number, got {temperature!r}")
        if param.dim() < 1:
            raise ValueError(f"{type(self).__name__}: `logits`/`probs` need an event dimension [..., n]")
        n = param.shape[-1]
        if corr.dim() < 2 or corr.shape[-2:] != (n, n):
            raise ValueError(
                f"{type(self).__name__}: corr must have shape [..., {n}, {n}] to match "
                f"`logits`/`probs` of shape {tuple(param.shape)}, got {tuple(corr.shape)}"
            )
        validate = validate_args if validate_args is not None else torch.distributions.Distribution._validate_args
        if validate:  # on the unexpanded matrix (torch's own check would see the expanded one)
            self._unbroadcasted_scale_tril = check_correlation_matrix(corr)
        batch_shape = torch.broadcast_shapes(param.shape[:-1], corr.shape[:-2])
        if isinstance(temperature, torch.Tensor):
            batch_shape = torch.broadcast_shapes(batch_shape + (n,), temperature.shape)[:-1]
            temperature = temperature.expand(batch_shape + (n,))
        else:
            temperature = float(temperature)
        self._unbroadcasted_corr = corr
        param = param.expand(batch_shape + (n,))
        if probs is not None:
            self.probs = param
        else:
            self.logits = param
        self._param = param
        self.temperature = temperature
        super().__init__(batch_shape, torch.Size((n,)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        n = self.event_shape[0]
        for key in ("probs", "logits"):
            if key in self.__dict__:
                setattr(new, key, getattr(self, key).expand(batch_shape + (n,)))
        new._param = new.__dict__["logits"] if self._param is self.__dict__.get("logits") else new.__dict__["probs"]
        new._unbroadcasted_corr = self._unbroadcasted_corr
        if "_unbroadcasted_scale_tril" in self.__dict__:
            new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril
        t = self.temperature
        new.temperature = t.expand(batch_shape + (n,)) if isinstance(t, torch.Tensor) else t
        super(CorrelatedRelaxedBernoulli, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, probs=None, logits=None, corr=None, temperature=()):
        param = torch.Size(logits if logits is not None else probs)
        batch = torch.broadcast_shapes(param[:-1], torch.Size(corr)[:-2]) if corr is not None else param[:-1]
        return torch.broadcast_shapes(batch + param[-1:], torch.Size(temperature))[:-1], param[-1:]

    @lazy_property
    def logits(self) -> torch.Tensor:
        return as_logits(self.probs, 0)

    @lazy_property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @lazy_property
    def corr(self) -> torch.Tensor:
        """The correlation matrix, expanded to ``batch_shape + (n, n)`` (a view).

        A lazy property, so that torch's argument validation skips it: the constructor
        checks the unexpanded matrix itself, with a message saying what is wrong."""
        n = self.event_shape[0]
        return self._unbroadcasted_corr.expand(self.batch_shape + (n, n))

    @lazy_property
    def _unbroadcasted_scale_tril(self) -> torch.Tensor:
        """Cholesky factor of ``corr`` (computed once, on the unexpanded matrix)."""
        corr = self._unbroadcasted_corr
        ct = _compute_dtype(corr.dtype)
        return torch.linalg.cholesky_ex(corr.to(ct)).L

    @property
    def scale_tril(self) -> torch.Tensor:
        n = self.event_shape[0]
        return self._unbroadcasted_scale_tril.expand(self.batch_shape + (n, n))

    def _logistic_noise(self, sample_shape) -> torch.Tensor:
        """Correlated ``Logistic(0, 1)`` noise ``L`` of shape ``sample_shape + batch + (n,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        dtype = self._param.dtype
        ct = _compute_dtype(dtype)
        tril = self._unbroadcasted_scale_tril
        eps = torch.randn(shape, dtype=ct, device=self._param.device)
        if tril.dim() == 2:  # one matrix for the whole batch: one GEMM
            x = eps @ tril.mT
        else:
            x = torch.matmul(tril, eps.unsqueeze(-1)).squeeze(-1)
        return log_ndtr(x) - log_ndtr(-x)

    def rsample(self, sample_shape=torch.Size()):
        noise = self._logistic_noise(sample_shape)
        t = self.logits.to(noise.dtype) + noise
        return clamp_probs(torch.sigmoid(t / self._tau(noise.dtype)).to(self._param.dtype))

    def _tau(self, dtype):
        t = self.temperature
        return t.to(dtype) if isinstance(t, torch.Tensor) else t

    def _validate_sample(self, value):
        if isinstance(value, torch.Tensor) and value.numel() == 0:
            # torch's check of an independent constraint cannot reshape an empty batch (it
            # raised a RuntimeError): there is no entry to check, only the event shape
            if tuple(value.shape[value.dim() - len(self.event_shape):]) != tuple(self.event_shape):
                raise ValueError(
                    f"The right-most size of value must match event_shape: {tuple(value.shape)} vs "
                    f"{tuple(self.event_shape)}."
                )
            return
        super()._validate_sample(value)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        ct = _compute_dtype(value.dtype)
        z = clamp_probs(value.to(ct))
        tau = self._tau(ct)
        log_z, log_1mz = z.log(), (-z).log1p()
        l = tau * (log_z - log_1mz) - self.logits.to(ct)
        marginal = (log_(tau) - l - 2 * F.softplus(-l) - log_z - log_1mz).sum(-1)
        x = _latent_from_logistic(l)
        tril = self._unbroadcasted_scale_tril
        tril_b = tril.expand(x.shape[:-1] + tril.shape[-2:]) if tril.dim() > 2 or x.dim() > 1 else tril
        w = torch.linalg.solve_triangular(tril_b, x.unsqueeze(-1), upper=False).squeeze(-1)
        half_logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        copula = -half_logdet - 0.5 * (w.pow(2).sum(-1) - x.pow(2).sum(-1))
        return (marginal + copula).to(value.dtype)


class StraightThroughCorrelatedRelaxedBernoulli(CorrelatedRelaxedBernoulli):
    """Straight-through version: forward ``1[logits + L > 0]`` (exactly ``Bernoulli(p_i)``
    marginals, dependent through the copula), backward through the relaxed sample.

    The joint mass function of the hard vector is a multivariate normal orthant probability
    with no closed form for ``n > 2``, so this law has no ``log_prob``.

    Example:
        >>> corr = torch.tensor([[1.0, -0.5], [-0.5, 1.0]])
        >>> d = StraightThroughCorrelatedRelaxedBernoulli(probs=torch.tensor([0.3, 0.6]), corr=corr, temperature=0.5)
        >>> sorted(set(d.rsample((100,)).flatten().tolist()))
        [0.0, 1.0]
    """

    support = constraints.independent(constraints.boolean, 1)

    def rsample(self, sample_shape=torch.Size()):
        noise = self._logistic_noise(sample_shape)
        t = self.logits.to(noise.dtype) + noise
        soft = clamp_probs(torch.sigmoid(t / self._tau(t.dtype)).to(self._param.dtype))
        return straight_through((t > 0).to(soft.dtype), soft)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            noise = self._logistic_noise(sample_shape)
            return (self.logits.to(noise.dtype) + noise > 0).to(self._param.dtype)

    def log_prob(self, value):
        raise NotImplementedError(
            "the joint PMF of correlated hard Bernoulli samples is a Gaussian orthant probability "
            "with no closed form; use the soft law (hard=False) for a density"
        )


class CorrelatedRelaxedBernoulliEstimator(relaxit_core.EstimatorBase):
    r"""Correlated relaxed Bernoulli (Gaussian copula, RelaxedMVB), pathwise; ``hard=True`` for straight-through 0/1.

    Wang & Yin (2020): the logistic noise of each binary Concrete marginal (Maddison et al.
    2017) is made dependent through a Gaussian copula with correlation matrix ``corr``:
    ``L_i = logit(Phi(x_i))``, ``x ~ N(0, corr)``, ``z_i = sigmoid((logits_i + L_i) / tau)``.
    The hard values ``1[logits_i + L_i > 0]`` have exactly the marginals ``Bernoulli(p_i)``.
    Soft laws have ``log_prob``, the true joint density on ``[0, 1]^n`` (binary Concrete
    marginals times the Gaussian copula density; :class:`CorrelatedRelaxedBernoulli`); the
    hard law has none (its PMF is a normal orthant probability).  ``corr`` must be a
    correlation matrix; with validation on, an invalid one raises ``ValueError`` saying
    which property fails.  ``estimate`` draws ``num_samples`` event vectors (one objective
    evaluation) and differentiates through them, into ``logits``/``probs`` and ``corr``.

    Maths:
        :Law: a Gaussian copula on binary Concrete marginals (Wang & Yin 2020, Sec. 3):
            :math:`x \sim \mathcal{N}(0, R)`, :math:`L_i = \operatorname{logit}\Phi(x_i)`,

            .. math::
                z_i = \sigma\bigl((\theta_i + L_i)/\tau\bigr), \qquad
                b_i = \mathbf{1}[\theta_i + L_i > 0] \sim \operatorname{Bernoulli}(\sigma(\theta_i)) .
        :Estimator: pathwise through the reparameterised sample (Wang & Yin 2020, Sec. 3;
            Maddison et al. 2017, Sec. 3.3), into :math:`\theta` and :math:`R`:
            :math:`\hat g = \frac1S \sum_s \nabla_{\theta} f(z_s)`; with ``hard=True`` the forward value
            is :math:`b` and the backward pass that of :math:`z`.
        :Gradient: :math:`\nabla_\theta \mathbb{E}[f(z)]`, the gradient of the relaxed objective:
            biased for :math:`\mathbb{E}[f(b)]`.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("correlated_relaxed_bernoulli", tau=0.5)
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> corr = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits, corr=corr)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([3])
    """

    name: ClassVar[str] = "correlated_relaxed_bernoulli"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs", "corr", "tau")
    optional_params: ClassVar[tuple[str, ...]] = ("tau",)
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB, C.HARD})
    reference: ClassVar[str] = (
        "Wang & Yin (2020), Relaxed Multivariate Bernoulli Distribution and Its Applications to Deep "
        "Generative Models, UAI, Sec. 3 (Gaussian copula + binary Concrete); Maddison, Mnih & Teh (2017), "
        "The Concrete Distribution, ICLR, Sec. 3.3"
    )
    conformance_configs = ({}, {"hard": True}, {"tau": 0.05})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`CorrelatedRelaxedBernoulliEstimator`."""

        name: Literal["correlated_relaxed_bernoulli"] = "correlated_relaxed_bernoulli"
        tau: Temperature = Field(
            1.0, description="Temperature τ of the binary Concrete marginals.")
        hard: bool = Field(False, description="Straight-through: forward 0/1, backward relaxed.")

    @classmethod
    def capabilities_for(cls, config):
        if config.hard:
            return frozenset({C.RSAMPLE, C.HARD})
        return frozenset({C.RSAMPLE, C.LOG_PROB})

    def build_distribution(self, logits=None, probs=None, corr=None, tau=None):
        law = StraightThroughCorrelatedRelaxedBernoulli if self.config.hard else CorrelatedRelaxedBernoulli
        return law(probs=probs, logits=logits, corr=corr, temperature=self.current_temperature("tau") if tau is None else tau)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        shape = tuple(batch_shape) + (event_size,)
        n = event_size
        if extreme:
            m = int(torch.Size(shape).numel())
            logits = (30.0 * torch.tensor([1.0, -1.0], dtype=torch.float64).repeat((m + 1) // 2)[:m]).reshape(shape)
        else:
            logits = torch.randn(shape, generator=generator, dtype=torch.float64)
        a = torch.randn(tuple(batch_shape) + (n, n), generator=generator, dtype=torch.float64)
        cov = a @ a.mT + (0.05 if extreme else 0.5 * n) * torch.eye(n, dtype=torch.float64)
        d = cov.diagonal(dim1=-2, dim2=-1).rsqrt()
        corr = cov * d.unsqueeze(-1) * d.unsqueeze(-2)
        corr = 0.5 * (corr + corr.mT)
        corr.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        return {"logits": logits.to(dtype=dtype, device=device), "corr": corr.to(dtype=dtype, device=device)}


@relaxit_core.hookimpl
def relaxit_estimators():
    return [CorrelatedRelaxedBernoulliEstimator]
