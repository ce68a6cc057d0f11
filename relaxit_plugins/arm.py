"""ARM: the augment-REINFORCE-merge estimator for Bernoulli variables.

References:
    Yin & Zhou (2019), *ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
    Networks*, ICLR — Theorem 1, eq. (5)-(6) (the univariate and multivariate ARM gradient).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

import relaxit_core
from relaxit_plugins._antithetic import AntitheticEstimator, trail

__all__ = ["ArmEstimator"]


class ArmEstimator(AntitheticEstimator):
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

    Maths:
        :Law: independent :math:`b_d \sim \operatorname{Bernoulli}(\sigma(\phi_d))`, drawn as
            :math:`b = \mathbf{1}[u < \sigma(\phi)]` with :math:`u \sim \mathcal{U}(0, 1)^D`.
        :Estimator: for each antithetic pair (Yin & Zhou 2019, Theorem 1, eq. 6), averaged over the
            :math:`P = S/2` pairs:

            .. math::
                \hat g = \bigl(f(\tilde b) - f(b)\bigr)\bigl(u - \tfrac12\bigr), \qquad
                \tilde b = \mathbf{1}[1 - u < \sigma(\phi)] .
        :Gradient: unbiased, :math:`\mathbb{E}[\hat g] = \nabla_\phi \mathbb{E}_{b}[f(b)]`.
        :Cost: :math:`S` (even, :math:`\ge 2`) objective evaluations in one batched call.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("arm")
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=2, logits=logits)
        >>> out.surrogate.backward(); out.samples.shape, logits.grad.shape
        (torch.Size([2, 3]), torch.Size([3]))
    """

    name: ClassVar[str] = "arm"
    reference: ClassVar[str] = (
        "Yin & Zhou (2019), ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary "
        "Networks, ICLR, Theorem 1, eq. 5-6"
    )

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ArmEstimator` (no options)."""

        name: Literal["arm"] = "arm"

    def pair_gradient(self, logits, f_b, f_anti, b, b_anti, lu):
        """ARM (Yin & Zhou 2019, eq. 5-6): ``(f(b̃) - f(b)) (u - 1/2)`` per pair."""
        u = torch.sigmoid(lu)
        diff = trail((f_anti - f_b).detach(), lu.dim())
        return (diff * (u - 0.5)).mean(0)

@relaxit_core.hookimpl
def relaxit_estimators():
    return [ArmEstimator]
