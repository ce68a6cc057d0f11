r"""Invertible Gaussian reparameterisation (IGR): Gaussian noise through softmax++ onto the simplex.

Potapczynski, Loaiza-Ganem & Cunningham (2020), *Invertible Gaussian Reparameterization:
Revisiting the Gumbel-Softmax*, NeurIPS, Sec. 3.1.  With ``loc``, ``scale`` of shape
``[..., K-1]``, temperature ``τ`` and ``δ > 0``,

.. math::
    y = \mu + \sigma \odot \varepsilon,\ \varepsilon \sim N(0, I_{K-1}), \qquad
    x_k = \frac{e^{y_k/τ}}{\sum_{j=1}^{K-1} e^{y_j/τ} + δ}\ (k < K), \qquad
    x_K = \frac{δ}{\sum_{j=1}^{K-1} e^{y_j/τ} + δ},

the softmax++ map, i.e. ``softmax([y/τ, log δ])``.  It is a bijection from ``R^{K-1}`` onto
the open simplex, with inverse ``y_k = τ (log x_k - log x_K + log δ)`` and
``|det ∂y/∂x_{1:K-1}| = τ^{K-1} / Π_{k=1}^{K} x_k``.  Hence the density w.r.t. Lebesgue
measure on the first ``K - 1`` coordinates (the contract's simplex measure) is

.. math::
    \log p(x) = \sum_{k<K} \log N(y_k; \mu_k, \sigma_k^2) + (K-1)\log τ - \sum_{k=1}^{K} \log x_k ,

which integrates to one over the simplex (tested by quadrature).

KL.  For two IGR laws ``p = (μ_p, σ_p, τ_p, δ_p)`` and ``q``, the map ``h = g_q^{-1}``
(q's inverse softmax++) is invertible, so ``KL(p || q) = KL(h_* p || h_* q)``.  ``h_* q`` is
``N(μ_q, σ_q²)``, and ``h ∘ g_p`` is affine, ``y ↦ (τ_q/τ_p) y + τ_q log(δ_q / δ_p)``, so
``h_* p = N((τ_q/τ_p) μ_p + τ_q log(δ_q/δ_p), (τ_q/τ_p)² σ_p²)``: the KL is closed-form for
any two temperatures and δ's, and reduces to the Gaussians' KL when they share ``τ`` and
``δ``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.distributions.utils import broadcast_all

import relaxit_core
from relaxit_core.distributions import simplex
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_plugins._special import log_, validating

__all__ = ["InvertibleGaussian", "InvertibleGaussianEstimator", "softmax_pp", "softmax_pp_inverse"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def softmax_pp(y: torch.Tensor, tau: float = 1.0, delta: float = 1.0) -> torch.Tensor:
    """softmax++: ``[..., K-1]`` -> the ``K``-simplex, ``softmax([y / tau, log delta])``.

    Example:
        >>> softmax_pp(torch.zeros(2)).tolist()
        [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
    """
    z = y / tau
    pad = torch.full(z.shape[:-1] + (1,), math.log(delta), dtype=z.dtype, device=z.device)
    return torch.cat([z, pad], -1).softmax(-1)


def softmax_pp_inverse(x: torch.Tensor, tau: float = 1.0, delta: float = 1.0) -> torch.Tensor:
    """The inverse of :func:`softmax_pp`: ``y_k = tau (log x_k - log x_K + log delta)``."""
    log_x = x.clamp_min(torch.finfo(x.dtype).tiny).log()
    return tau * (log_x[..., :-1] - log_x[..., -1:] + math.log(delta))


class InvertibleGaussian(TorchDistribution):
    r"""IGR law on the ``K``-simplex: ``x = softmax++((loc + scale * eps) / τ; δ)`` (module docstring).

    ``loc`` and ``scale`` have shape ``[..., K-1]``; samples have ``K`` coordinates.
    ``log_prob`` is the density w.r.t. Lebesgue measure on the first ``K - 1`` coordinates.
    ``temperature`` is a number or a tensor with one temperature per batch element (its
    shape broadcasts with ``loc.shape[:-1]``).

    Example:
        >>> d = InvertibleGaussian(torch.zeros(2), torch.ones(2), temperature=0.5, delta=1.0)
        >>> x = d.rsample((4,))
        >>> x.shape, d.log_prob(x).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 1),
        "scale": constraints.independent(constraints.positive, 1),
    }
    support = simplex  # the sum's tolerance follows the dtype
    has_rsample = True

    def __init__(self, loc, scale, *, temperature: float | torch.Tensor = 1.0, delta: float = 1.0, validate_args=None):
        if loc.dim() < 1 or scale.dim() < 1:
            raise ValueError("InvertibleGaussian: loc and scale need a last dimension of K - 1 >= 1 entries")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.delta = float(delta)
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(dtype=self.loc.dtype, device=self.loc.device)
            if validating(validate_args) and not bool((temperature > 0).all()):
                raise ValueError("InvertibleGaussian: argument 'temperature' must be positive")
            batch = torch.broadcast_shapes(self.loc.shape[:-1], temperature.shape)
            full = batch + self.loc.shape[-1:]
            self.loc, self.scale = self.loc.expand(full), self.scale.expand(full)
            self.temperature = temperature.expand(batch)
        else:
            self.temperature = float(temperature)
            if not self.temperature > 0:
                raise ValueError(f"InvertibleGaussian: need temperature > 0, got {temperature}")
        if not self.delta > 0:
            raise ValueError(f"InvertibleGaussian: need delta > 0, got {delta}")
        batch = self.loc.shape[:-1]
        super().__init__(batch, torch.Size((self.loc.shape[-1] + 1,)), validate_args=validate_args)

    def _tau(self):
        """The temperature broadcastable against ``[..., K-1]`` tensors."""
        t = self.temperature
        return t.unsqueeze(-1) if isinstance(t, torch.Tensor) else t

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(InvertibleGaussian, _instance)
        shape = torch.Size(batch_shape) + self.loc.shape[-1:]
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        t = self.temperature
        new.temperature = t.expand(batch_shape) if isinstance(t, torch.Tensor) else t
        new.delta = self.delta
        super(InvertibleGaussian, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, loc, scale, temperature=()):
        shape = torch.broadcast_shapes(torch.Size(loc), torch.Size(scale))
        return torch.broadcast_shapes(shape[:-1], torch.Size(temperature)), torch.Size((shape[-1] + 1,))

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.loc.shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return softmax_pp(self.loc + self.scale * eps, self._tau(), self.delta)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_x = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        y = self._tau() * (log_x[..., :-1] - log_x[..., -1:] + math.log(self.delta))
        e = (y - self.loc) / self.scale
        log_normal = -0.5 * e.square() - self.scale.log() - _HALF_LOG_2PI
        km1 = value.shape[-1] - 1
        return log_normal.sum(-1) + km1 * log_(self.temperature) - log_x.sum(-1)


@register_kl(InvertibleGaussian, InvertibleGaussian)
def _kl_invertible_gaussian(p: InvertibleGaussian, q: InvertibleGaussian) -> torch.Tensor:
    """Exact ``KL(p || q)`` for any temperatures and δ's (module docstring); gradients kept."""
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL between IGR laws on simplices of different sizes {p.event_shape} and {q.event_shape}")
    ratio = q._tau() / p._tau()
    mean = ratio * p.loc + q._tau() * math.log(q.delta / p.delta)
    std = ratio * p.scale
    var_ratio = (std / q.scale).square()
    t = ((mean - q.loc) / q.scale).square()
    return 0.5 * (var_ratio + t - 1 - var_ratio.log()).sum(-1)


class InvertibleGaussianEstimator(relaxit_core.EstimatorBase):
    r"""Invertible Gaussian reparameterisation (IGR, pathwise): Gaussian noise through softmax++ onto the simplex.

    ``x = softmax([(loc + scale * eps) / tau, log delta])`` with ``loc``, ``scale`` of shape
    ``[..., K-1]`` (Potapczynski et al. 2020, Sec. 3.1).  ``log_prob`` is the
    change-of-variables density w.r.t. Lebesgue measure on the first ``K - 1`` coordinates;
    ``kl_divergence`` between two IGR laws is exact for any temperatures and δ's.  One
    objective evaluation per sample; a relaxation (biased for a categorical objective).
    ``tau`` may also be given to ``distribution()`` / ``estimate()`` as an optional tensor
    (one temperature per batch element) overriding the config's number.

    Maths:
        :Law: Gaussian noise through softmax++ onto the :math:`K`-simplex (Potapczynski et al. 2020,
            Sec. 3.1): :math:`y = \mu + \sigma \odot \varepsilon`, :math:`\varepsilon \sim \mathcal{N}(0, I_{K-1})`,

            .. math::
                x_k = \frac{e^{y_k/\tau}}{\sum_{j=1}^{K-1} e^{y_j/\tau} + \delta} \;(k < K), \qquad
                x_K = \frac{\delta}{\sum_{j=1}^{K-1} e^{y_j/\tau} + \delta} .
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_{\mu,\sigma} f(x_s)`
            (Potapczynski et al. 2020, Sec. 3.1).
        :Gradient: :math:`\nabla \mathbb{E}[f(x)]` under the simplex law (a relaxation: biased for a
            categorical objective).
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("invertible_gaussian", tau=0.5)
        >>> loc = torch.zeros(2, 3, requires_grad=True)
        >>> out = est.estimate(lambda x: x[..., 0].sum(-1), num_samples=8, loc=loc, scale=torch.ones(2, 3))
        >>> out.samples.shape
        torch.Size([8, 2, 4])
    """

    name: ClassVar[str] = "invertible_gaussian"
    family: ClassVar[str] = "simplex"
    params: ClassVar[tuple[str, ...]] = ("loc", "scale", "tau")
    optional_params: ClassVar[tuple[str, ...]] = ("tau",)
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB, C.KL})
    reference: ClassVar[str] = (
        "Potapczynski, Loaiza-Ganem & Cunningham (2020), Invertible Gaussian Reparameterization: "
        "Revisiting the Gumbel-Softmax, NeurIPS, Sec. 3.1 (softmax++ with temperature and delta)"
    )
    conformance_configs = ({}, {"tau": 0.1, "delta": 0.5})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`InvertibleGaussianEstimator`."""

        name: Literal["invertible_gaussian"] = "invertible_gaussian"
        tau: Temperature = Field(
            1.0, description="Temperature τ dividing the Gaussian sample.")
        delta: float = Field(1.0, gt=0, le=1e6, description="δ > 0 of softmax++: the weight of the K-th coordinate.")

    def build_distribution(self, loc, scale, tau=None):
        return InvertibleGaussian(loc, scale, temperature=self.current_temperature("tau") if tau is None else tau, delta=self.config.delta)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        shape = tuple(batch_shape) + (max(event_size - 1, 1),)
        if extreme:
            n = int(torch.Size(shape).numel())
            loc = (30.0 * torch.tensor([1.0, -1.0]).repeat((n + 1) // 2)[:n]).reshape(shape)
            scale = torch.full(shape, 0.05)
        else:
            loc = torch.randn(shape, generator=generator, dtype=torch.float64)
            scale = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        return {"loc": loc.to(dtype=dtype, device=device), "scale": scale.to(dtype=dtype, device=device)}


@relaxit_core.hookimpl
def relaxit_estimators():
    return [InvertibleGaussianEstimator]
