"""Gumbel-Rao: the Rao-Blackwellised straight-through Gumbel-softmax estimator.

References:
    Paulus, Maddison & Krause (2021), *Rao-Blackwellizing the Straight-Through Gumbel-Softmax
    Gradient Estimator*, ICLR — the Gumbel-Rao estimator ``E[∇_ST-GS | D]``, its variance
    reduction (Theorem 1), its Monte Carlo version with ``K`` conditional draws, and the
    sampling of Gumbels conditioned on the argmax.
    Maddison, Tarlow & Minka (2014), *A* Sampling*, NeurIPS (truncated Gumbels; the max of
    Gumbels with locations θ is ``Gumbel(logsumexp θ)`` independent of the argmax).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import exponential_like
from relaxit_plugins._straight_through_categorical import OneHotStraightThrough

__all__ = ["GumbelRaoCategorical", "GumbelRaoEstimator", "conditional_gumbel"]


def _log_term(logits: torch.Tensor, hard: torch.Tensor, num: int) -> torch.Tensor:
    """``log(E_j + E_i p_j [j != i])`` for ``num`` draws ``E ~ Exp(1)``: ``[num, ..., K]``."""
    e = exponential_like((num,) + tuple(hard.shape), logits)
    index = hard.argmax(-1, keepdim=True)
    e_i = e.gather(-1, index.expand((num,) + tuple(index.shape)))
    return torch.addcmul(e, e_i, logits.exp() * (1 - hard)).log()


def conditional_gumbel(logits: torch.Tensor, hard: torch.Tensor, num: int) -> torch.Tensor:
    r"""``num`` draws of standard Gumbel noise ``G`` conditioned on ``argmax(logits + G) = D``.

    ``logits`` (normalised here by ``logsumexp``) and ``hard = D`` one-hot have shape
    ``[..., K]``; returns ``[num, ..., K]`` without gradient.  With ``E_j`` i.i.d. ``Exp(1)``,
    ``θ`` the normalised logits and ``p = exp(θ)``, the perturbed logits ``X = θ + G`` given
    ``D = e_i`` are (Paulus et al. 2021; Maddison et al. 2014):

    - ``X_i = -log E_i`` (the maximum is ``Gumbel(logsumexp θ) = Gumbel(0)``, independent of ``D``);
    - ``X_j = -log(E_i + E_j / p_j) = θ_j - log(E_j + E_i p_j)`` for ``j ≠ i`` (a Gumbel with
      location ``θ_j`` truncated below ``X_i``).

    The second form never overflows (``p_j ≤ 1``).
    """
    logits = logits.detach()
    logits = logits - logits.logsumexp(-1, keepdim=True)
    hard = hard.detach()
    # the chosen entry's θ_i through a where, not hard * θ: a masked category (θ_j = -inf) has
    # hard_j = 0, and 0 * -inf is NaN
    return -_log_term(logits, hard, num) - torch.where(hard.bool(), logits, torch.zeros_like(logits))


class GumbelRaoCategorical(OneHotStraightThrough):
    r"""One-hot ``Categorical(softmax(logits))`` whose ``rsample`` backward pass is Gumbel-Rao.

    Forward: ``D = one_hot(argmax(θ + g))``.  Backward: the gradient of
    ``(1/M) Σ_m softmax((θ + G_m) / τ)``, ``G_1..G_M`` i.i.d. draws of the Gumbel noise
    conditioned on ``argmax(θ + G) = D`` (:func:`conditional_gumbel`), taken in ``θ`` with the
    noise held fixed — a Monte Carlo estimate of ``E[∇_ST-GS | D]`` (Paulus et al. 2021),
    vectorised over the ``M = num_conditional`` draws.

    The paper writes the derivative as a total derivative through ``θ`` and ``G_m``; we hold
    the noise fixed, which is what makes the estimator the conditional expectation of ST-GS
    (same mean, lower variance: Theorem 1) and reduce to ST-GS in law at ``M = 1``.

    ``log_prob`` is the categorical PMF of the one-hot value.

    Example:
        >>> d = GumbelRaoCategorical(logits=torch.zeros(4, requires_grad=True), temperature=0.5, num_conditional=10)
        >>> z = d.rsample((2,))
        >>> z.sum(-1).tolist(), z.requires_grad
        ([1.0, 1.0], True)
    """

    extra_attrs = ("temperature", "num_conditional")

    def _surrogate(self, hard, noise):
        # θ + G_m, see conditional_gumbel (θ unnormalised: X_i = logsumexp θ - log E_i)
        theta = self.raw_logits
        log_p = theta.detach().log_softmax(-1)
        # hard * log_p through a where: a masked category (-inf) has hard = 0, and 0 * -inf is NaN
        x = (theta - torch.where(hard.bool(), log_p, torch.zeros_like(log_p))) - _log_term(log_p, hard, self.num_conditional)
        return (x * (1.0 / self.temperature)).softmax(-1).mean(0)


class GumbelRaoEstimator(relaxit_core.EstimatorBase):
    r"""Gumbel-Rao (Paulus et al. 2021): straight-through Gumbel-softmax Rao-Blackwellised over ``num_conditional`` conditional Gumbel draws.

    Forward: ``D ~ Categorical(softmax(logits))``, exactly one-hot (Gumbel-max).  Backward:
    ``∂/∂θ (1/M) Σ_m softmax((θ + G_m)/τ)`` with ``G_m`` Gumbel noise drawn conditionally
    on the sampled ``D``.  Its expectation equals that of ST-GS
    (``gumbel_softmax`` with ``hard=True``) at the same ``τ``, with lower variance
    (Theorem 1); biased for the discrete objective like ST-GS.  One objective evaluation per
    sample (the ``M`` conditional draws cost only softmaxes); ``num_samples`` samples are
    averaged.

    Maths:
        :Law: :math:`D = \operatorname{onehot}(\arg\max(\theta + g)) \sim
            \operatorname{Categorical}(\operatorname{softmax}(\theta))` (Gumbel-max).
        :Estimator: ST-GS Rao-Blackwellised over :math:`M` Gumbel draws conditioned on :math:`D`
            (Paulus et al. 2021, the Gumbel-Rao estimator, Theorem 1):

            .. math::
                \hat g = \Bigl(\frac{\partial}{\partial\theta} \frac1M \sum_{m=1}^{M}
                \operatorname{softmax}\bigl((\theta + G_m)/\tau\bigr)\Bigr)^{\!\top} \nabla_D f(D),
                \qquad G_m \sim \text{Gumbel} \mid \arg\max(\theta + G_m) = D .
        :Gradient: :math:`\mathbb{E}[\hat g] = \mathbb{E}[\hat g_{\text{ST-GS}}]` with lower variance
            (Theorem 1): biased for :math:`\nabla_\theta \mathbb{E}[f(D)]`, like ST-GS.
        :Cost: :math:`S` objective evaluations (the :math:`M` draws cost softmaxes only).

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("gumbel_rao", tau=0.5, num_conditional=10)
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "gumbel_rao"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Paulus, Maddison & Krause (2021), Rao-Blackwellizing the Straight-Through "
        "Gumbel-Softmax Gradient Estimator, ICLR, the Gumbel-Rao estimator and Theorem 1"
    )
    conformance_configs = ({}, {"num_conditional": 1, "tau": 0.05})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GumbelRaoEstimator`."""

        name: Literal["gumbel_rao"] = "gumbel_rao"
        tau: Temperature = Field(
            1.0, description="Temperature τ of the Gumbel-softmax in the backward pass.")
        num_conditional: int = Field(
            10, ge=1, le=100_000,
            description="Number M of conditional Gumbel draws averaged per hard sample (M = 1 is ST-GS in law).",
        )

    def build_distribution(self, logits=None, probs=None):
        return GumbelRaoCategorical(
            probs=probs, logits=logits, temperature=self.current_temperature("tau"), num_conditional=self.config.num_conditional
        )


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GumbelRaoEstimator]
