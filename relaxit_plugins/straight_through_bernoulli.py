"""The straight-through Bernoulli estimator of Bengio, Léonard & Courville (2013).

References:
    Bengio, Léonard & Courville (2013), *Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation*, arXiv:1308.3432 — the
    straight-through estimator: sample ``h = 1[u < p]`` in the forward pass and back-propagate
    as if ``dh/dp = 1``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.distributions import BernoulliPMFLaw, bernoulli_draw
from relaxit_core.surrogate import straight_through

__all__ = ["StraightThroughBernoulli", "StraightThroughBernoulliEstimator"]


class StraightThroughBernoulli(BernoulliPMFLaw):
    r"""Bernoulli law whose ``rsample`` is exactly 0/1 with ``P(1) = p`` and whose gradient
    is the identity to ``p`` (Bengio et al. 2013, the straight-through estimator).

    ``rsample`` returns ``hard + (p - p.detach())`` with ``hard ~ Bernoulli(p)``: the
    forward value is exactly ``hard``, and ``d rsample / d p = 1`` (so ``d/d logits =
    p (1 - p)`` when the law is given by ``logits``).  ``sample`` has the same law, without
    gradient.  ``log_prob`` is the Bernoulli probability mass function of the value; nothing
    is stored on the returned tensors, so ``log_prob(z.clone())`` equals ``log_prob(z)``.
    (Pyro's own straight-through classes return the density of a hidden relaxed sample
    instead.)  In a Pyro program, enumerate such a site in the model, or use the plain
    ``Bernoulli`` in the guide: Pyro's ELBO is wrong when a reparameterised site is
    enumerated in the guide.

    Example:
        >>> p = torch.tensor([0.2, 0.7], requires_grad=True)
        >>> d = StraightThroughBernoulli(probs=p)
        >>> z = d.rsample((1000,))
        >>> sorted(set(z.flatten().tolist()))
        [0.0, 1.0]
        >>> z.sum().backward(); p.grad  # identity: 1000 samples, each d z / d p = 1
        tensor([1000., 1000.])
        >>> d.log_prob(torch.tensor([1.0, 0.0])).exp()
        tensor([0.2000, 0.3000], grad_fn=<ExpBackward0>)
    """

    has_rsample = True

    def rsample(self, sample_shape=torch.Size()):
        p = self.probs
        hard = bernoulli_draw(p.detach(), sample_shape)
        return straight_through(hard, p)


class StraightThroughBernoulliEstimator(relaxit_core.EstimatorBase):
    r"""Straight-through Bernoulli: forward exactly ``Bernoulli(p)``, backward ``dz/dp = 1``.

    Bengio et al. (2013), straight-through estimator: the hard sample ``z = 1[u < p]`` is used as is in the
    forward pass, and the backward pass treats the threshold as the identity, so the
    gradient reaching ``p`` is ``d objective / d z``.  Biased (exact only for objectives
    linear in ``z``), low variance.  ``log_prob`` is the Bernoulli PMF and
    ``enumerate_support`` gives ``0, 1``, so the law can be enumerated in a Pyro model.
    ``estimate`` draws ``num_samples`` hard samples (one objective evaluation).

    Maths:
        :Law: :math:`z = \mathbf{1}[u < p] \sim \operatorname{Bernoulli}(p)`, :math:`u \sim \mathcal{U}(0, 1)`.
        :Estimator: the threshold treated as the identity in the backward pass (Bengio et al. 2013,
            Sec. 4, the straight-through estimator):

            .. math::
                \hat g_p = \frac{\partial f}{\partial z}\Big|_{z}, \qquad
                \text{i.e. } \frac{\partial z}{\partial p} := 1 .
        :Gradient: biased; exact only for objectives linear in :math:`z`.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("straight_through_bernoulli")
        >>> logits = torch.zeros(4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "straight_through_bernoulli"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT, C.KL})
    reference: ClassVar[str] = (
        "Bengio, Léonard & Courville (2013), Estimating or Propagating Gradients Through Stochastic "
        "Neurons for Conditional Computation, arXiv:1308.3432 (the straight-through estimator)"
    )

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`StraightThroughBernoulliEstimator` (no fields)."""

        name: Literal["straight_through_bernoulli"] = "straight_through_bernoulli"

    def build_distribution(self, logits=None, probs=None):
        return StraightThroughBernoulli(probs=probs, logits=logits)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [StraightThroughBernoulliEstimator]
