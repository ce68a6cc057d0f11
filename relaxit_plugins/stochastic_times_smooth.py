"""Stochastic times smooth (STS) units of Bengio, Léonard & Courville (2013).

References:
    Bengio, Léonard & Courville (2013), *Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation*, arXiv:1308.3432 — Sec. 3.3
    (stochastic times smooth): ``h = b · f(a)`` with the smooth part ``f(a) = sqrt(sigm(a))``
    and the binary part ``b ~ Bernoulli(sqrt(sigm(a)))``, so that ``E[h] = sigm(a) = p``;
    the gradient flows through the smooth part, ``dh/da = b f'(a)``, with ``b`` held fixed.

``sample`` and ``rsample`` draw from the same law: ``h = b sqrt(p)``, i.e. ``sqrt(p)`` with
probability ``sqrt(p)`` and ``0`` otherwise.  (The old upstream package's ``sample`` drew
``Bernoulli(p)`` instead, a different law from its ``rsample``.)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch.distributions import constraints

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import BinaryLogitsDistribution, bernoulli_draw

__all__ = ["StochasticTimesSmooth", "StochasticTimesSmoothEstimator"]


class StochasticTimesSmooth(BinaryLogitsDistribution):
    r"""Law of the STS unit ``h = b sqrt(p)``, ``b ~ Bernoulli(sqrt(p))`` (Bengio et al. 2013, Sec. 3.3).

    Two atoms: ``h = sqrt(p)`` with probability ``sqrt(p)`` and ``h = 0`` with probability
    ``1 - sqrt(p)``; ``E[h] = p`` and ``Var[h] = p^{3/2} - p^2``.  ``rsample`` differentiates
    ``h`` through ``sqrt(p)`` with ``b`` held fixed; ``sample`` is the same draw without
    gradient.  ``sqrt(p)`` is computed as ``exp(logsigmoid(logits) / 2)`` from ``logits``.

    ``log_prob`` is the probability mass function, i.e. the density w.r.t. **counting
    measure on [0, 1]**: ``log(1 - sqrt p)`` at ``0``, ``log sqrt p`` at ``sqrt p``
    (compared exactly, as produced by ``sample``/``rsample`` of this law), and ``-inf`` at
    every other point of ``[0, 1]``.  Because the non-zero atom moves with ``p``, two STS
    laws with different parameters are mutually singular: ``log_prob`` serves scoring a law's
    own samples (and enumeration-free Monte Carlo checks), not KL divergences or an ELBO
    against a different law (a Bernoulli prior has its atom at 1, not at ``sqrt p``).

    Example:
        >>> d = StochasticTimesSmooth(probs=torch.tensor([0.25, 0.81]))
        >>> sorted(set(d.sample((1000,))[:, 0].tolist()))
        [0.0, 0.5]
        >>> d.log_prob(torch.tensor([0.5, 0.0])).exp()
        tensor([0.5000, 0.1000])
        >>> d.mean
        tensor([0.2500, 0.8100])
    """

    support = constraints.unit_interval
    has_rsample = True

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        # keep the parametrisation the law was built with, so that sqrt(p) is computed the
        # same way (bit for bit) by the expanded law
        key = "logits" if self._from_logits else "probs"
        new._param = getattr(new, key) if key in new.__dict__ else getattr(self, key).expand(new.batch_shape)
        setattr(new, key, new._param)
        return new

    @property
    def _from_logits(self) -> bool:
        return self._param is self.__dict__.get("logits")

    @property
    def sqrt_probs(self) -> torch.Tensor:
        """``sqrt(p)``, the non-zero value and its probability: ``exp(logsigmoid(logits) / 2)``
        when the law was given ``logits``, ``sqrt(probs)`` when given ``probs``."""
        if self._from_logits:
            return torch.exp(0.5 * F.logsigmoid(self.logits))
        p = self.probs
        # exact sqrt with a finite gradient at p = 0 (the sqrt's derivative there is infinite)
        safe = torch.where(p > 0, p, torch.ones_like(p))
        return torch.where(p > 0, safe.sqrt(), torch.zeros_like(p))

    def rsample(self, sample_shape=torch.Size()):
        a = self.sqrt_probs
        return bernoulli_draw(a.detach(), sample_shape) * a

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a, value = torch.broadcast_tensors(self.sqrt_probs, value)
        neg_inf = torch.full_like(a, -float("inf"))
        # logs of the two masses, with finite inputs (the masked branch must not produce NaN gradients)
        log_a = torch.where(a > 0, a, torch.ones_like(a)).log()
        log_a = torch.where(a > 0, log_a, neg_inf)
        one_minus = 1 - a
        log_1ma = torch.where(one_minus > 0, one_minus, torch.ones_like(a)).log()
        log_1ma = torch.where(one_minus > 0, log_1ma, neg_inf)
        at_zero = value == 0
        at_a = value == a
        both = at_zero & at_a  # sqrt(p) == 0: one atom of mass 1
        out = torch.where(at_a, log_a, neg_inf)
        out = torch.where(at_zero, log_1ma, out)
        return torch.where(both, torch.zeros_like(a), out)

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        p = self.probs
        return p * self.sqrt_probs - p * p


class StochasticTimesSmoothEstimator(relaxit_core.EstimatorBase):
    r"""Stochastic times smooth (STS): ``z = b * sqrt(p)``, ``b ~ Bernoulli(sqrt(p))``, gradient through ``sqrt(p)``.

    Bengio et al. (2013), Sec. 3.3: a binary stochastic part times a smooth part, chosen so
    that ``E[z] = p``; the backward pass holds ``b`` fixed and differentiates the smooth
    factor, a biased estimator of the gradient of ``E[objective(z)]``.  Samples take the two
    values ``0`` and ``sqrt(p)`` (not ``{0, 1}``), so the estimator is not ``HARD``.
    ``log_prob`` is the mass function, the density w.r.t. counting measure on ``[0, 1]``
    (see :class:`StochasticTimesSmooth`).  ``estimate`` draws ``num_samples`` samples (one
    objective evaluation) and differentiates through them.

    Maths:
        :Law: :math:`z = b \sqrt{p}`, :math:`b \sim \operatorname{Bernoulli}(\sqrt{p})`, so
            :math:`\mathbb{E}[z] = p` and :math:`z \in \{0, \sqrt{p}\}` (Bengio et al. 2013, Sec. 3.3).
        :Estimator: :math:`b` held fixed, the smooth factor differentiated (Bengio et al. 2013, Sec. 3.3):

            .. math::
                \hat g_p = \frac{\partial f}{\partial z}\, \frac{b}{2\sqrt{p}} .
        :Gradient: biased for :math:`\nabla_p \mathbb{E}[f(z)]`.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("stochastic_times_smooth")
        >>> logits = torch.zeros(4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "stochastic_times_smooth"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.LOG_PROB})
    reference: ClassVar[str] = (
        "Bengio, Léonard & Courville (2013), Estimating or Propagating Gradients Through Stochastic "
        "Neurons for Conditional Computation, arXiv:1308.3432, Sec. 3.3 (stochastic times smooth)"
    )

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`StochasticTimesSmoothEstimator` (no fields)."""

        name: Literal["stochastic_times_smooth"] = "stochastic_times_smooth"

    def build_distribution(self, logits=None, probs=None):
        return StochasticTimesSmooth(probs=probs, logits=logits)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [StochasticTimesSmoothEstimator]
