"""ReinMax: a second-order accurate straight-through estimator for categorical variables.

References:
    Liu, Zhao, Gao, Chen & Liu (2023), *Bridging Discrete and Backpropagation:
    Straight-Through and Beyond*, NeurIPS — Algorithm 2 (ReinMax); the analysis of ST as a
    first-order (forward Euler) approximation and of ReinMax as Heun's method.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_plugins._straight_through_categorical import OneHotStraightThrough

__all__ = ["ReinMaxCategorical", "ReinMaxEstimator"]


class ReinMaxCategorical(OneHotStraightThrough):
    r"""One-hot ``Categorical(softmax(logits))`` whose ``rsample`` backward pass is ReinMax.

    Algorithm 2 of Liu et al. (2023), with ``θ`` the logits and ``τ = temperature``:

    1. ``π₀ = softmax(θ)``; ``D ~ Categorical(π₀)`` one-hot;
    2. ``π₁ = (D + softmax(θ / τ)) / 2``, then ``π₁ = softmax(stop_gradient(log π₁ - θ) + θ)``
       (value ``π₁``, Jacobian ``diag(π₁) - π₁π₁ᵀ``);
    3. ``π₂ = 2 π₁ - π₀ / 2``; return ``D + π₂ - stop_gradient(π₂)``.

    So the gradient of ``f(D)`` is ``(2 (diag(π₁) - π₁π₁ᵀ) - ½ (diag(π₀) - π₀π₀ᵀ)) ∇f(D)``.
    The backward pass applies the two (symmetric) softmax Jacobians in closed form,
    ``J(π) g = π ⊙ (g - <π, g>)``, instead of differentiating through two softmaxes.

    ``log_prob`` is the categorical PMF of the one-hot value.

    Example:
        >>> d = ReinMaxCategorical(logits=torch.zeros(4, requires_grad=True), temperature=1.0)
        >>> z = d.rsample((2,))
        >>> z.sum(-1).tolist(), z.requires_grad
        ([1.0, 1.0], True)
    """

    extra_attrs = ("temperature",)

    def _surrogate(self, hard, noise):
        theta = self.raw_logits  # the gradient is invariant to a shift of θ
        with torch.no_grad():
            pi0 = theta.softmax(-1) if "probs" not in self.__dict__ else self.probs
            pi1 = 0.5 * (hard + (theta / self.temperature).softmax(-1))
        return _ReinMaxBackward.apply(theta, pi0.expand_as(pi1), pi1)


class _ReinMaxBackward(torch.autograd.Function):
    """Value 0; backward ``g -> 2 J(π₁) g - ½ J(π₀) g`` with ``J(π) g = π ⊙ (g - <π, g>)``
    (Algorithm 2, lines 4-6, in closed form; ``J`` is symmetric)."""

    @staticmethod
    def forward(ctx, theta, pi0, pi1):
        ctx.save_for_backward(pi0, pi1)
        ctx.theta_shape = theta.shape
        return torch.zeros_like(pi1)

    @staticmethod
    def backward(ctx, grad):
        pi0, pi1 = ctx.saved_tensors
        t1 = pi1 * grad
        t0 = pi0 * grad
        r1 = torch.addcmul(t1, pi1, t1.sum(-1, keepdim=True), value=-1.0)
        r0 = torch.addcmul(t0, pi0, t0.sum(-1, keepdim=True), value=-1.0)
        g = 2.0 * r1 - 0.5 * r0
        shape = ctx.theta_shape
        if g.shape != shape:  # sum over the sample dimensions theta was broadcast along
            g = g.sum_to_size(shape)
        return g, None, None


class ReinMaxEstimator(relaxit_core.EstimatorBase):
    r"""ReinMax (Liu et al. 2023): second-order accurate straight-through gradients for one-hot categorical samples.

    Forward: ``D ~ Categorical(softmax(logits))``, exactly one-hot.  Backward (Algorithm 2):
    the gradient estimate of ``f(D)`` is ``(2 J(π₁) - ½ J(π₀)) ∇_z f(D)`` with
    ``J(π) = diag(π) - π πᵀ``, ``π₀ = softmax(θ)`` and ``π₁ = (D + softmax(θ / τ)) / 2``.
    It approximates ``f(e_i) - f(e_j)`` by the trapezoidal (Heun) rule instead of ST's
    forward-Euler step, so at ``τ = 1`` its expectation is exact for objectives quadratic
    in each one-hot variable (Heun's rule is exact for quadratics; the tests check it); otherwise it is biased.
    One objective evaluation per sample; ``num_samples`` samples are averaged.

    Maths:
        :Law: :math:`D \sim \operatorname{Categorical}(\pi_0)`, one-hot, :math:`\pi_0 = \operatorname{softmax}(\theta)`.
        :Estimator: the trapezoidal (Heun) rule in place of straight-through's Euler step
            (Liu et al. 2023, Algorithm 2):

            .. math::
                \hat g = \Bigl(2 J(\pi_1) - \tfrac12 J(\pi_0)\Bigr) \nabla_D f(D), \qquad
                J(\pi) = \operatorname{diag}(\pi) - \pi\pi^\top, \quad
                \pi_1 = \tfrac12\bigl(D + \operatorname{softmax}(\theta/\tau)\bigr) .
        :Gradient: biased in general; second-order accurate (at :math:`\tau = 1` exact for objectives
            quadratic in each one-hot variable).
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("reinmax", tau=1.0)
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "reinmax"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Liu, Zhao, Gao, Chen & Liu (2023), Bridging Discrete and Backpropagation: "
        "Straight-Through and Beyond, NeurIPS, Algorithm 2"
    )
    conformance_configs = ({}, {"tau": 0.1})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ReinMaxEstimator`."""

        name: Literal["reinmax"] = "reinmax"
        tau: Temperature = Field(
            1.0, description="Temperature τ of softmax(θ/τ) in π₁ = (D + softmax(θ/τ))/2 (Algorithm 2); "
            "the paper recommends τ >= 1.",
        )

    def build_distribution(self, logits=None, probs=None):
        return ReinMaxCategorical(probs=probs, logits=logits, temperature=self.current_temperature("tau"))


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ReinMaxEstimator]
