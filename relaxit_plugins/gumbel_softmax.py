"""Gumbel-softmax (Concrete) relaxation of a categorical variable, with straight-through ``hard``.

References:
    Jang, Gu & Poole (2017), *Categorical Reparameterization with Gumbel-Softmax*, ICLR —
    eq. (1) Gumbel-max, eq. (2) the Gumbel-softmax sample, eq. (3) its density, Sec. 2.2
    straight-through.
    Maddison, Mnih & Teh (2017), *The Concrete Distribution*, ICLR — Definition 1 and the
    Concrete density, Sec. 3.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.distributions import constraints, register_kl

import relaxit_core
from relaxit_core.schedules import Temperature, log_temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import CategoricalLogitsDistribution, categorical_kl, gumbel_like, simplex
from relaxit_core.surrogate import straight_through

__all__ = ["GumbelSoftmax", "StraightThroughGumbelSoftmax", "GumbelSoftmaxEstimator"]


class GumbelSoftmax(CategoricalLogitsDistribution):
    r"""Concrete / Gumbel-softmax law on the simplex of ``K`` categories.

    Sample (Jang et al. 2017, eq. 2): ``y = softmax((logits + g) / λ)``, ``g`` i.i.d.
    standard Gumbel.  ``log_prob`` is the density w.r.t. Lebesgue measure on the first
    ``K - 1`` coordinates (Jang et al. 2017, eq. 3; Maddison et al. 2017, Definition 1):

    .. math::
        \log p(y) = \log\Gamma(K) + (K-1)\log λ + \sum_k (\ell_k - (λ+1)\log y_k)
                    - K \operatorname{logsumexp}_k(\ell_k - λ \log y_k)

    computed in log space with ``y`` clamped to the dtype's ``tiny``, so it stays finite
    at ``λ = 0.05`` and logits ±30 (torch's ``RelaxedOneHotCategorical`` gives NaN there).

    Example:
        >>> d = GumbelSoftmax(logits=torch.zeros(2, 4), temperature=0.5)
        >>> d.rsample((3,)).shape
        torch.Size([3, 2, 4])
    """

    support = simplex  # the sum's tolerance follows the dtype
    has_rsample = True
    extra_attrs = ("temperature",)

    def _soft(self, sample_shape):
        logits = self.unnormalized_logits
        g = gumbel_like(self._extended(sample_shape), logits)
        return ((g + logits) / self.temperature).softmax(-1)

    def rsample(self, sample_shape=torch.Size()):
        return self._soft(sample_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        k = value.shape[-1]
        lam = self.temperature
        log_y = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        logits = self.logits
        return (
            math.lgamma(k) + (k - 1) * log_temperature(lam)
            + (logits - (lam + 1) * log_y).sum(-1)
            - k * (logits - lam * log_y).logsumexp(-1)
        )


class StraightThroughGumbelSoftmax(GumbelSoftmax):
    """Straight-through Gumbel-softmax (ST-GS): forward one-hot ``argmax(logits + g)``,
    exactly Categorical(softmax(logits)) by the Gumbel-max trick (Jang et al. 2017, eq. 1);
    backward through the soft sample (Sec. 2.2).

    ``log_prob`` is the categorical PMF of the one-hot value; ``enumerate_support`` gives
    the rows of ``eye(K)``.

    Example:
        >>> d = StraightThroughGumbelSoftmax(logits=torch.zeros(4), temperature=0.5)
        >>> d.rsample().sum().item()
        1.0
    """

    support = constraints.one_hot
    has_enumerate_support = True

    def rsample(self, sample_shape=torch.Size()):
        soft = self._soft(sample_shape)
        index = soft.argmax(-1, keepdim=True)
        hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
        return straight_through(hard, soft)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            probs = self.probs.expand(self.batch_shape + self.event_shape)
            index = torch.multinomial(probs.reshape(-1, probs.shape[-1]), int(torch.Size(sample_shape).numel()), True)
            index = index.T.reshape(self._extended(sample_shape)[:-1])
            return torch.nn.functional.one_hot(index, probs.shape[-1]).to(probs.dtype)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return (logits * value).sum(-1)

    def entropy(self):
        return -(self.probs * self.logits).sum(-1)

    def enumerate_support(self, expand=True):
        k = self.event_shape[0]
        values = torch.eye(k, dtype=self._param.dtype, device=self._param.device)
        values = values.view((k,) + (1,) * len(self.batch_shape) + (k,))
        return values.expand((k,) + self.batch_shape + (k,)) if expand else values

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        return self.probs * (1 - self.probs)


@register_kl(StraightThroughGumbelSoftmax, StraightThroughGumbelSoftmax)
def _kl_st_gumbel_softmax(p, q):
    """KL of the hard (categorical) laws."""
    return categorical_kl(p.logits.log_softmax(-1), q.logits.log_softmax(-1))  # 0 log 0 = 0 at masked categories


class GumbelSoftmaxEstimator(relaxit_core.EstimatorBase):
    r"""Gumbel-softmax / Concrete relaxation of a categorical variable (pathwise); ``hard=True`` is ST-GS.

    ``z = softmax((logits + g) / tau)`` with Gumbel noise ``g`` (Jang et al. 2017, eq. 2;
    Maddison et al. 2017); with ``hard=True`` the forward value is the one-hot
    ``argmax(logits + g)`` and the gradient that of the soft sample (Sec. 2.2).  Biased for
    the discrete objective.

    Maths:
        :Law: with i.i.d. Gumbel noise :math:`g`, the one-hot :math:`D = \operatorname{onehot}(\arg\max(\theta + g))
            \sim \operatorname{Categorical}(\operatorname{softmax}(\theta))` (Jang et al. 2017, eq. 1) and its
            relaxation, the Concrete / Gumbel-softmax law (eq. 2):

            .. math::
                y = \operatorname{softmax}\bigl((\theta + g)/\tau\bigr) .
        :Estimator: pathwise, :math:`\hat g = \frac1S \sum_s \nabla_\theta f(y_s)`; with ``hard=True``
            (ST-GS, Jang et al. 2017, Sec. 2.2) the forward value is :math:`D` and
            :math:`\hat g = (\partial y / \partial\theta)^\top \nabla_D f(D)`.
        :Gradient: :math:`\nabla_\theta \mathbb{E}[f(y)]` of the relaxed objective: biased for
            :math:`\nabla_\theta \mathbb{E}[f(D)]`; the bias vanishes as :math:`\tau \to 0` while the variance grows.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("gumbel_softmax", tau=0.5, hard=True)
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "gumbel_softmax"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Jang, Gu & Poole (2017), Categorical Reparameterization with Gumbel-Softmax, ICLR, "
        "eqs. 1-3 and Sec. 2.2; Maddison, Mnih & Teh (2017), The Concrete Distribution, ICLR"
    )
    conformance_configs = ({}, {"hard": True}, {"tau": 0.05})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GumbelSoftmaxEstimator`."""

        name: Literal["gumbel_softmax"] = "gumbel_softmax"
        tau: Temperature = Field(
            1.0, description="Temperature λ of the relaxation.")
        hard: bool = Field(False, description="Straight-through: forward one-hot, backward soft.")

    @classmethod
    def capabilities_for(cls, config):
        if config.hard:
            return cls.capabilities
        return frozenset({C.RSAMPLE, C.LOG_PROB})

    def build_distribution(self, logits=None, probs=None):
        law = StraightThroughGumbelSoftmax if self.config.hard else GumbelSoftmax
        return law(probs=probs, logits=logits, temperature=self.current_temperature("tau"))


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GumbelSoftmaxEstimator]
