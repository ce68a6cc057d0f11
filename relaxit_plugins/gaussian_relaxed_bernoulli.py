"""Gaussian-relaxed Bernoulli gates: the stochastic gates (STG) of Yamada et al. (2020).

References:
    Yamada, Lindenbaum, Negahban & Kluger (2020), *Feature Selection using Stochastic
    Gates*, ICML — eq. (3) the gate ``z_d = max(0, min(1, μ_d + ε_d))``,
    ``ε_d ~ N(0, σ²)``; eq. (5) the regulariser
    ``E ||z||_0 = Σ_d P(z_d > 0) = Σ_d Φ(μ_d / σ)``; Sec. 3 the test-time gate
    ``max(0, min(1, μ_d))``.

The law of ``z`` is mixed: atoms at 0 and 1 with masses ``Φ(-μ/σ)`` and ``Φ((μ - 1)/σ)``
and the normal density ``N(x; μ, σ²)`` on ``(0, 1)``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.special import ndtr

import relaxit_core
from relaxit_core import Capability as C
from relaxit_plugins._special import compute_dtype as _compute_dtype
from relaxit_plugins._special import hyper_tensors, log_, log_ndtr

__all__ = ["GaussianRelaxedBernoulli", "GaussianRelaxedBernoulliEstimator", "expected_l0"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _as_ct(sigma, ct):
    return sigma.to(ct) if isinstance(sigma, torch.Tensor) else sigma


def expected_l0(loc: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """``P(z > 0) = Φ(loc / σ)`` per gate (Yamada et al. 2020, eq. 5); sum it for the
    expected number of open gates.  Differentiable in ``loc`` (and ``sigma`` when it is a tensor)."""
    ct = _compute_dtype(loc.dtype)
    out = ndtr(loc.to(ct) / _as_ct(sigma, ct))
    return out.to(loc.dtype)


class GaussianRelaxedBernoulli(TorchDistribution):
    r"""Clipped Gaussian gate on ``[0, 1]``: ``z = clamp(loc + σ ε, 0, 1)``, ``ε ~ N(0, 1)``
    drawn independently for every element of ``sample_shape + batch_shape``.

    The law has an atom at 0 of mass ``Φ(-loc/σ)``, an atom at 1 of mass ``Φ((loc-1)/σ)``
    and the density ``N(x; loc, σ²)`` on ``(0, 1)``.  ``log_prob`` is taken w.r.t. Lebesgue
    measure on ``(0, 1)`` plus unit point masses at 0 and 1 (the contract's convention for
    laws with atoms): at exactly 0 or 1 it returns the log of the atom's mass, inside the
    log of the normal density.  Atoms use ``log Φ`` (with an asymptotic left tail, so that values and
    gradients stay finite and correct at ``|loc| / σ`` of 10⁷).  16-bit parameters are computed in
    float32 and returned in their own dtype (a 16-bit sample just below 1 can round to
    exactly 1, and is then scored as the atom).  ``sigma`` is a number or a per-element tensor
    (broadcast with ``loc``; relaxit 1.x's ``scale``).

    The reparameterised gradient is ``dz/dloc = 1`` inside ``(0, 1)`` and ``0`` on the
    atoms (Yamada et al. 2020, Sec. 3).

    Example:
        >>> d = GaussianRelaxedBernoulli(torch.tensor([0.5, -3.0]), sigma=0.5)
        >>> z = d.rsample((1000,))
        >>> bool((z >= 0).all() and (z <= 1).all())
        True
        >>> d.expected_l0()  # P(z > 0) = Phi(loc / sigma)
        tensor([0.8413, 0.0000])
        >>> d.log_prob(torch.tensor([0.0, 0.0]))  # log masses of the atoms at 0
        tensor([-1.8410e+00, -9.8659e-10])
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, loc: torch.Tensor, sigma: float | torch.Tensor = 0.5, validate_args: bool | None = None):
        if not isinstance(loc, torch.Tensor):
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        self.loc, h = hyper_tensors(loc, "GaussianRelaxedBernoulli",
                                    {"sigma": (sigma, lambda v: v > 0, "positive")}, validate_args)
        self.sigma = h["sigma"]
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GaussianRelaxedBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.sigma = self.sigma.expand(batch_shape) if isinstance(self.sigma, torch.Tensor) else self.sigma
        super(GaussianRelaxedBernoulli, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, loc=(), sigma=()):
        return torch.broadcast_shapes(loc, sigma), torch.Size()

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc + self.sigma * eps).clamp(0, 1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, value = torch.broadcast_tensors(self.loc, value)
        ct = _compute_dtype(value.dtype)
        x, m, s = value.to(ct), loc.to(ct), _as_ct(self.sigma, ct)
        log_atom0 = log_ndtr(-m / s)
        log_atom1 = log_ndtr((m - 1) / s)
        log_dens = -0.5 * ((x - m) / s) ** 2 - log_(s) - _HALF_LOG_2PI
        out = torch.where(x <= 0, log_atom0, torch.where(x >= 1, log_atom1, log_dens))
        return out.to(value.dtype)

    def prob_zero(self) -> torch.Tensor:
        """Mass of the atom at 0, ``Φ(-loc/σ)``."""
        ct = _compute_dtype(self.loc.dtype)
        return ndtr(-self.loc.to(ct) / _as_ct(self.sigma, ct)).to(self.loc.dtype)

    def prob_one(self) -> torch.Tensor:
        """Mass of the atom at 1, ``Φ((loc - 1)/σ)``."""
        ct = _compute_dtype(self.loc.dtype)
        return ndtr((self.loc.to(ct) - 1) / _as_ct(self.sigma, ct)).to(self.loc.dtype)

    def expected_l0(self) -> torch.Tensor:
        """``P(z > 0) = Φ(loc/σ)`` per gate: the expected-L0 regulariser (Yamada et al. 2020, eq. 5)."""
        return expected_l0(self.loc, self.sigma)

    def deterministic_gate(self) -> torch.Tensor:
        """The test-time gate ``clamp(loc, 0, 1)`` (Yamada et al. 2020, Sec. 3)."""
        return self.loc.clamp(0, 1)

    @property
    def mean(self):
        # E z = P(1) + ∫_0^1 x N(x; m, s²) dx = P(1) + m [Φ(b) - Φ(a)] + s [φ(a) - φ(b)],
        # a = -m/s, b = (1-m)/s
        ct = _compute_dtype(self.loc.dtype)
        m, s = self.loc.to(ct), _as_ct(self.sigma, ct)
        a, b = -m / s, (1 - m) / s
        phi = lambda t: torch.exp(-0.5 * t * t - _HALF_LOG_2PI)  # noqa: E731
        out = ndtr(-b) + m * (ndtr(b) - ndtr(a)) + s * (phi(a) - phi(b))
        return out.to(self.loc.dtype)


class GaussianRelaxedBernoulliEstimator(relaxit_core.EstimatorBase):
    r"""Gaussian-relaxed Bernoulli (stochastic gates, STG): ``z = clamp(loc + sigma * eps, 0, 1)``, pathwise.

    Yamada et al. (2020), eq. (3): each gate is a Gaussian clipped to ``[0, 1]``, with noise
    ``eps ~ N(0, 1)`` drawn independently per element; its law has atoms at 0 and 1 (see
    :class:`GaussianRelaxedBernoulli`, whose ``log_prob`` is w.r.t. Lebesgue measure plus
    unit point masses at 0 and 1).  The expected-L0 regulariser of their eq. (5),
    ``P(z > 0) = Phi(loc / sigma)``, is ``distribution(loc=...).expected_l0()`` (or
    :func:`expected_l0`).  ``estimate`` draws ``num_samples`` gate vectors and
    differentiates through them (one objective evaluation on ``[S, *batch]`` samples).
    The samples are not exactly discrete, so the estimator is not ``HARD``: gates inside
    ``(0, 1)`` scale their inputs.  ``sigma`` may also be given to ``distribution()`` /
    ``estimate()`` as an optional per-element tensor overriding the config's number.

    Maths:
        :Law: a Gaussian clipped to :math:`[0, 1]` (Yamada et al. 2020, eq. 3):

            .. math::
                z_d = \min\bigl(1, \max(0, \mu_d + \sigma \varepsilon_d)\bigr), \qquad
                \varepsilon_d \sim \mathcal{N}(0, 1),

            with atoms :math:`P(z_d = 0) = \Phi(-\mu_d/\sigma)` and
            :math:`P(z_d = 1) = 1 - \Phi((1 - \mu_d)/\sigma)`.
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_\mu f(z_s)` (Yamada et al. 2020, eq. 3);
            the expected-:math:`L_0` regulariser is
            :math:`\mathbb{E}\|z\|_0 = \sum_d \Phi(\mu_d/\sigma)` (their eq. 5).
        :Gradient: :math:`\nabla_\mu \mathbb{E}[f(z)]` under the gate law itself (unbiased for it; the
            gates are not exactly binary).
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("gaussian_relaxed_bernoulli", sigma=0.5)
        >>> loc = torch.full((4,), 0.5, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 1).pow(2).sum(-1), num_samples=8, loc=loc)
        >>> out.surrogate.backward(); loc.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "gaussian_relaxed_bernoulli"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("loc", "sigma")
    optional_params: ClassVar[tuple[str, ...]] = ("sigma",)
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB})
    reference: ClassVar[str] = (
        "Yamada, Lindenbaum, Negahban & Kluger (2020), Feature Selection using Stochastic Gates, "
        "ICML, eq. (3) (clipped Gaussian gate) and eq. (5) (expected L0 = Phi(mu / sigma))"
    )
    conformance_configs = ({}, {"sigma": 0.05})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GaussianRelaxedBernoulliEstimator`."""

        name: Literal["gaussian_relaxed_bernoulli"] = "gaussian_relaxed_bernoulli"
        sigma: float = Field(0.5, gt=0, le=1e3, description="Standard deviation σ of the Gaussian noise (0.5 in the paper).")

    def build_distribution(self, loc, sigma=None):
        return GaussianRelaxedBernoulli(loc, sigma=self.config.sigma if sigma is None else sigma)

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        shape = tuple(batch_shape)
        if extreme:
            n = max(1, int(torch.Size(shape).numel()))
            loc = (30.0 * torch.tensor([1.0, -1.0], dtype=dtype).repeat((n + 1) // 2)[:n]).reshape(shape)
        else:
            loc = torch.sigmoid(torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)
        return {"loc": loc.to(device)}


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GaussianRelaxedBernoulliEstimator]
