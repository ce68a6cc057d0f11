"""Binary Concrete (relaxed Bernoulli), with an optional straight-through hard forward pass.

References:
    Maddison, Mnih & Teh (2017), *The Concrete Distribution: A Continuous Relaxation of
    Discrete Random Variables*, ICLR — Sec. 3.3 (binary Concrete: ``X = sigmoid((log α + L)
    / λ)``, ``L ~ Logistic(0, 1)``) and the binary Concrete density of their Appendix.
    Jang, Gu & Poole (2017), *Categorical Reparameterization with Gumbel-Softmax*, ICLR —
    Sec. 2.2 (straight-through hard samples).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.distributions import constraints

import relaxit_core
from relaxit_core.schedules import Temperature, log_temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import BernoulliPMFLaw, BinaryLogitsDistribution, clamp_probs, logistic_like
from relaxit_core.surrogate import straight_through

__all__ = ["RelaxedBernoulli", "StraightThroughRelaxedBernoulli", "RelaxedBernoulliEstimator"]


class RelaxedBernoulli(BinaryLogitsDistribution):
    r"""Binary Concrete law on ``[0, 1]`` with temperature ``temperature``.

    Sample: ``x = sigmoid((logits + L) / λ)``, ``L ~ Logistic(0, 1)``, clamped to
    ``[eps, 1 - eps]`` of the dtype so that ``log_prob`` stays finite.

    ``log_prob`` is the density w.r.t. Lebesgue measure on ``(0, 1)`` (Maddison et al.
    2017): with ``y = logit(x)`` and ``u = λ y - logits``,
    ``log p(x) = log λ - u - 2 softplus(-u) - log x - log(1 - x)``, i.e. the logistic
    density of ``y`` times the Jacobian of ``sigmoid``.  It is finite at ``λ = 0.05`` and
    logits ±30, where torch's ``RelaxedBernoulli`` returns NaN.

    Example:
        >>> d = RelaxedBernoulli(logits=torch.zeros(3), temperature=0.5)
        >>> d.rsample((2,)).shape
        torch.Size([2, 3])
    """

    support = constraints.unit_interval
    has_rsample = True
    extra_attrs = ("temperature",)

    def rsample(self, sample_shape=torch.Size()):
        noise = logistic_like(self._extended(sample_shape), self._param)
        return clamp_probs(torch.sigmoid((self.logits + noise) / self.temperature))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        x = clamp_probs(value)
        log_x, log_1mx = x.log(), (-x).log1p()
        u = self.temperature * (log_x - log_1mx) - self.logits
        return log_temperature(self.temperature) - u - 2 * F.softplus(-u) - log_x - log_1mx


class StraightThroughRelaxedBernoulli(BernoulliPMFLaw, RelaxedBernoulli):
    """Straight-through binary Concrete: forward samples exactly 0/1 with ``P(1) = sigmoid(logits)``,
    backward through the relaxed sample (Jang et al. 2017, Sec. 2.2).

    ``log_prob`` is the Bernoulli PMF of the hard value (unlike Pyro's straight-through
    classes, which return the density of a hidden relaxed sample).  No state is kept on the
    returned tensors.

    Example:
        >>> d = StraightThroughRelaxedBernoulli(logits=torch.zeros(3), temperature=0.5)
        >>> sorted(set(d.rsample((100,)).flatten().tolist()))
        [0.0, 1.0]
    """

    def rsample(self, sample_shape=torch.Size()):
        noise = logistic_like(self._extended(sample_shape), self._param)
        t = self.logits + noise
        soft = clamp_probs(torch.sigmoid(t / self.temperature))
        return straight_through((t > 0).to(soft.dtype), soft)


class RelaxedBernoulliEstimator(relaxit_core.EstimatorBase):
    r"""Relaxed Bernoulli (binary Concrete), pathwise; ``hard=True`` for straight-through 0/1 samples.

    ``z = sigmoid((logits + L) / tau)`` with logistic noise ``L`` (Maddison et al. 2017,
    Sec. 3.3); with ``hard=True`` the forward value is ``1[logits + L > 0]`` (exactly
    Bernoulli) and the gradient that of the relaxed sample (Jang et al. 2017, Sec. 2.2).
    Biased for the discrete objective; the bias vanishes as ``tau -> 0`` while the variance
    grows.

    Maths:
        :Law: the binary Concrete (Maddison et al. 2017, Sec. 3.3): with :math:`L = \log u - \log(1 - u)`,
            :math:`u \sim \mathcal{U}(0, 1)`,

            .. math::
                z = \sigma\bigl((\theta + L)/\tau\bigr), \qquad
                b = \mathbf{1}[\theta + L > 0] \sim \operatorname{Bernoulli}(\sigma(\theta)) .
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_\theta f(z_s)`; with ``hard=True``
            (Jang et al. 2017, Sec. 2.2) the forward value is :math:`b` and
            :math:`\hat g = (\partial z/\partial\theta)^\top \nabla_b f(b)`.
        :Gradient: the gradient of the relaxed objective: biased for :math:`\nabla_\theta \mathbb{E}[f(b)]`;
            the bias vanishes as :math:`\tau \to 0` while the variance grows.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("relaxed_bernoulli", tau=0.5)
        >>> logits = torch.zeros(4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "relaxed_bernoulli"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Maddison, Mnih & Teh (2017), The Concrete Distribution, ICLR, Sec. 3.3; "
        "Jang, Gu & Poole (2017), Categorical Reparameterization with Gumbel-Softmax, ICLR, Sec. 2.2"
    )
    conformance_configs = ({}, {"hard": True}, {"tau": 0.05})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`RelaxedBernoulliEstimator`."""

        name: Literal["relaxed_bernoulli"] = "relaxed_bernoulli"
        tau: Temperature = Field(
            1.0, description="Temperature λ of the relaxation.")
        hard: bool = Field(False, description="Straight-through: forward 0/1, backward relaxed.")

    @classmethod
    def capabilities_for(cls, config):
        if config.hard:
            return cls.capabilities
        return frozenset({C.RSAMPLE, C.LOG_PROB})

    def build_distribution(self, logits=None, probs=None):
        law = StraightThroughRelaxedBernoulli if self.config.hard else RelaxedBernoulli
        return law(probs=probs, logits=logits, temperature=self.current_temperature("tau"))


@relaxit_core.hookimpl
def relaxit_estimators():
    return [RelaxedBernoulliEstimator]
