r"""SIMPLE: exact k-subset samples forward, the gradient of the exact marginals backward.

Ahmed, Zeng, Niepert & Van den Broeck (2023), *SIMPLE: A Gradient Estimator for k-Subset
Sampling*, ICLR (arXiv 2210.01941).  The law is the k-subset exponential family

.. math::
    p_θ(z) = \frac{\exp(θ·z)}{Z(θ)}\, \mathbb 1\Bigl[\textstyle\sum_i z_i = k\Bigr],
    \qquad Z(θ) = e_k(e^{θ_1}, …, e^{θ_n}),

independent ``Bernoulli(logits=θ)`` variables conditioned on exactly ``k`` ones.  Forward, an
exact sample ``z ~ p_θ``; backward, the gradient of the loss is passed through the exact
marginals ``μ(θ) = E_θ[z] = ∇_θ log Z(θ)``:

.. math::
    \widehat{∇_θ}\, ℓ(z) = \frac{∂μ(θ)}{∂θ}^{\!\top} ∇_z ℓ(z),
    \qquad \frac{∂μ}{∂θ} = \operatorname{Cov}_θ(z),

written as ``z + (μ - stop_gradient(μ))`` (the authors' ``(samples - marginals).detach() +
marginals``).  For ``ℓ`` linear in ``z``, ``ℓ(z) = c·z``, the estimate ``Cov_θ(z) c`` is the
exact gradient of ``E_θ[c·z] = c·μ(θ)`` for every sample; otherwise it is biased (the paper's
"proxy for the true gradient").

``μ`` and ``log Z`` come from the log-space dynamic program of
:mod:`relaxit_plugins._ksubset` (Θ(B·n·min(k, n−k)), one vectorised step per item), the
backward pass multiplies by ``Cov_θ(z)`` with the expectation-semiring (ratio) tables of the
same DP, ``(Cov_θ(z) g)_i = μ_i (g_i + E[g·z_{-i} | z_i = 1] - g·μ)``,
and samples are drawn exactly by inverse-CDF steps over the same prefix table.  (The authors' code
draws the forward sample by Gumbel top-k, whose law is the Plackett–Luce set law, not
``p_θ``; here forward samples follow ``p_θ`` exactly, so ``log_prob`` describes them.)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.errors import ParameterError
from relaxit_core.surrogate import straight_through
from relaxit_plugins._ksubset import KSubset, sample_and_marginals
from relaxit_plugins.gumbel_topk import KSubsetEstimatorBase

__all__ = ["SimpleKSubset", "SimpleEstimator"]


class SimpleKSubset(KSubset):
    """The k-subset law whose ``rsample`` is SIMPLE: the exact sample forward, the exact
    marginals' gradient backward (``log_prob`` is the PMF of the hard sample)."""

    has_rsample = True

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SimpleKSubset, _instance)
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()):
        hard, mu = sample_and_marginals(self.logits, self.k, torch.Size(sample_shape))
        return straight_through(hard, mu)


def _law_for(name: str, k: int, logits: torch.Tensor, law=KSubset):
    if logits.dim() < 1 or logits.shape[-1] < k:
        raise ParameterError(
            f"{name}: k={k} needs at least k items in the last dimension of `logits`, got shape {tuple(logits.shape)}"
        )
    return law(logits, k)


class SimpleEstimator(KSubsetEstimatorBase):
    r"""SIMPLE (Ahmed et al. 2023): exact k-hot samples forward, the gradient of the exact marginals backward.

    Law: ``p(z) ∝ exp(θ·z) 1[Σz = k]`` (independent Bernoullis conditioned on ``k`` ones).
    The forward sample is exact; the backward pass is ``Cov_θ(z) ∇_z ℓ(z)``, the gradient of
    ``ℓ`` pushed through ``μ(θ) = E_θ[z]`` (see :mod:`relaxit_plugins.simple`).  Exact for
    objectives linear in ``z``, biased otherwise; ``num_samples`` objective evaluations.
    Cost: ``Θ(B·n·min(k, n−k))`` for the marginals and the sampler, once per call.

    Maths:
        :Law: :math:`p_\theta(z) = \exp(\theta^\top z - \log Z(\theta))\,\mathbb 1[\textstyle\sum_i z_i = k]`,
            :math:`Z(\theta) = e_k(e^{\theta_1}, \dots, e^{\theta_n})` (independent Bernoullis
            conditioned on :math:`k` ones); exact samples :math:`z_s \sim p_\theta`.
        :Estimator: the exact marginals' Jacobian applied to the downstream gradient
            (Ahmed et al. 2023, the SIMPLE estimator; equation number not checked here):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S} \frac{\partial \mu(\theta)}{\partial \theta}^{\!\top} \nabla_z f(z_s),
                \qquad \mu(\theta) = \mathbb E_\theta[z] = \nabla_\theta \log Z(\theta),
                \qquad \frac{\partial \mu}{\partial \theta} = \operatorname{Cov}_\theta(z).
        :Gradient: biased in general; exact (for every sample) when :math:`f` is linear in
            :math:`z`, :math:`f(z) = c^\top z`: :math:`\hat g = \operatorname{Cov}_\theta(z)\, c = \nabla_\theta\, c^\top \mu(\theta)`.
        :Cost: :math:`S` objective evaluations; one log-space dynamic program,
            :math:`\Theta(B\,n\,\min(k, n-k))`, for the sampler, :math:`\log Z` and :math:`\mu`, and
            one of the same cost for the backward pass.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("simple", k=2)
        >>> logits = torch.zeros(3, 6, requires_grad=True)
        >>> out = est.estimate(lambda z: (z * torch.arange(6.0)).sum(-1), num_samples=4, logits=logits)
        >>> out.samples.sum(-1).unique().tolist(), out.value.shape
        ([2.0], torch.Size([3]))
    """

    name: ClassVar[str] = "simple"
    family: ClassVar[str] = "subset"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT, C.KL})
    reference: ClassVar[str] = (
        "Ahmed, Zeng, Niepert & Van den Broeck (2023), SIMPLE: A Gradient Estimator for k-Subset "
        "Sampling, ICLR (arXiv 2210.01941): exact k-subset sampling forward, gradient of the "
        "exact marginals dmu/dtheta backward, log-space dynamic program for log Z and mu"
    )
    conformance_configs = ({}, {"k": 3})
    example_config: ClassVar[dict] = {"k": 3}

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`SimpleEstimator`."""

        name: Literal["simple"] = "simple"
        k: int = Field(1, ge=1, le=1_000_000, description="Subset size: the number of ones in each sample.")

    def build_distribution(self, logits):
        return _law_for(self.name, self.config.k, logits, SimpleKSubset)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [SimpleEstimator]
