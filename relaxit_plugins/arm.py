"""ARM: the augment-REINFORCE-merge estimator for Bernoulli variables.

References:
    Yin & Zhou (2019), *ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
    Networks*, ICLR — Theorem 1, eq. (5)-(6) (the univariate and multivariate ARM gradient).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.estimator import Estimate
from relaxit_plugins._antithetic import antithetic_pairs, attach, check_even, trail

__all__ = ["ArmEstimator"]


class ArmEstimator(relaxit_core.EstimatorBase):
    r"""ARM (augment-REINFORCE-merge): unbiased antithetic estimator for independent Bernoulli variables.

    For ``b ~ Bernoulli(σ(φ))`` with logits ``φ`` and one uniform vector ``u`` (Yin & Zhou
    2019, Theorem 1 / eq. 6)::

        ∇_φ E[f(b)] = E_u[ (f(1[u > σ(-φ)]) - f(1[u < σ(φ)])) (u - 1/2) ]

    i.e. with the antithetic pair ``b = 1[u < σ(φ)]``, ``b̃ = 1[1 - u < σ(φ)]`` (each
    exactly ``Bernoulli(σ(φ))``), ``ĝ = (f(b̃) - f(b)) (u - 1/2)`` for every coordinate.

    ``num_samples`` counts objective evaluations and must be even (``>= 2``): it gives
    ``num_samples / 2`` independent pairs, evaluated in one batched objective call, and the
    estimate is the mean of their ARM estimates.  The returned samples are the ``b`` of every
    pair followed by their ``b̃``; ``value`` is the mean of the objective over all of them.
    The law is ``Bernoulli(logits)`` (``log_prob`` is the PMF).

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("arm")
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=2, logits=logits)
        >>> out.surrogate.backward(); out.samples.shape, logits.grad.shape
        (torch.Size([2, 3]), torch.Size([3]))
    """

    name: ClassVar[str] = "arm"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Yin & Zhou (2019), ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary "
        "Networks, ICLR, Theorem 1, eq. 5-6"
    )
    min_num_samples = 2
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ArmEstimator` (no options)."""

        name: Literal["arm"] = "arm"

    def build_distribution(self, logits):
        import pyro.distributions as pdist

        return pdist.Bernoulli(logits=logits)

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        num_samples = check_even(self.name, self._check_num_samples(num_samples))
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        logits = self.check_params(params)["logits"]
        samples, f, f_b, f_anti, _, _, lu = antithetic_pairs(self.name, objective, num_samples, logits, dist)
        u = torch.sigmoid(lu)
        diff = trail((f_anti - f_b).detach(), lu.dim())
        g_hat = (diff * (u - 0.5)).mean(0)
        surrogate = attach(f, logits, g_hat)
        return Estimate(surrogate, f.mean(0).detach(), samples)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ArmEstimator]
