"""Straight-through categorical estimator (ST): one-hot sample forward, softmax backward.

References:
    Bengio, Léonard & Courville (2013), *Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation*, arXiv:1308.3432 — Sec. 4 (the
    straight-through estimator: back-propagate through the hard sampling step as if it were
    the identity on the probabilities).
    For categorical variables in this form (forward ``D ~ Categorical(π)``, backward through
    ``π = softmax(θ)``): Jang, Gu & Poole (2017), ICLR, Sec. 2.2 and Fig. 1 ("ST"), and
    Liu et al. (2023), NeurIPS (ST as a first-order approximation).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

import relaxit_core
from relaxit_core import Capability as C
from relaxit_plugins._straight_through_categorical import OneHotStraightThrough

__all__ = ["StraightThroughCategorical", "StraightThroughCategoricalEstimator"]


class StraightThroughCategorical(OneHotStraightThrough):
    r"""One-hot ``Categorical(softmax(logits))`` whose ``rsample`` is straight-through.

    Forward: ``D = one_hot(argmax(θ + g))`` (Gumbel-max, exactly ``Categorical(π)``,
    ``π = softmax(θ)``).  Backward: ``∂D/∂θ := ∂π/∂θ = diag(π) - π πᵀ``, i.e.
    ``rsample = D + (π - stop_gradient(π))``.  Given the parameters as ``probs``, the backward
    pass is the identity on ``probs``.

    The estimate for ``E[f(D)]`` is ``(diag(π) - π πᵀ) ∇f(D)``, with expectation
    ``Σ_d π_d (diag(π) - π πᵀ) ∇f(e_d)`` — biased unless ``f`` is linear.

    ``log_prob`` is the categorical PMF of the one-hot value.

    Example:
        >>> d = StraightThroughCategorical(logits=torch.zeros(4, requires_grad=True))
        >>> z = d.rsample((2,))
        >>> z.sum(-1).tolist(), z.requires_grad
        ([1.0, 1.0], True)
    """

    def _surrogate(self, hard, noise):
        return self.probs


class StraightThroughCategoricalEstimator(relaxit_core.EstimatorBase):
    r"""Straight-through categorical (Bengio et al. 2013): one-hot sample forward, softmax probabilities backward.

    ``z = D + (π - stop_gradient(π))`` with ``D ~ Categorical(π)`` one-hot and
    ``π = softmax(logits)``; the gradient estimate is ``(diag(π) - π πᵀ) ∇_z f(D)`` (one
    objective evaluation per sample; ``num_samples`` samples are averaged).  Forward samples
    are exactly one-hot with law ``Categorical(softmax(logits))``; ``log_prob`` is their PMF.
    Biased (exact only for objectives linear in ``z``), no hyperparameters.

    Maths:
        :Law: :math:`D \sim \operatorname{Categorical}(\pi)`, one-hot, :math:`\pi = \operatorname{softmax}(\theta)`.
        :Estimator: straight-through (Bengio et al. 2013, Sec. 4; categorical form as in Jang et al. 2017,
            Sec. 2.2): the forward value :math:`z = D + \pi - \operatorname{sg}(\pi)` gives

            .. math::
                \hat g = \bigl(\operatorname{diag}(\pi) - \pi\pi^\top\bigr) \nabla_D f(D) .
        :Gradient: biased; exact only for objectives linear in :math:`z`.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("st_categorical")
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "st_categorical"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Bengio, Léonard & Courville (2013), Estimating or Propagating Gradients Through "
        "Stochastic Neurons for Conditional Computation, arXiv:1308.3432, Sec. 4; categorical "
        "form as in Jang et al. (2017), Sec. 2.2, and Liu et al. (2023)"
    )
    conformance_configs = ({},)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`StraightThroughCategoricalEstimator` (no hyperparameters)."""

        name: Literal["st_categorical"] = "st_categorical"

    def build_distribution(self, logits=None, probs=None):
        return StraightThroughCategorical(probs=probs, logits=logits)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [StraightThroughCategoricalEstimator]
