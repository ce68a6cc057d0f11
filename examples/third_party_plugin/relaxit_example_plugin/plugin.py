"""REINFORCE with a constant baseline: a complete third-party relaxit plugin in one module.

Reference:
    Williams (1992), *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8(3-4), 229-256 — eq. (11): the REINFORCE
    update ``Δθ = α (r - b) ∂ ln g / ∂θ`` with a reinforcement baseline ``b`` that does not
    depend on the sampled action.

relaxit finds this module through the entry point declared in ``pyproject.toml``::

    [project.entry-points.relaxit]
    relaxit_example = "relaxit_example_plugin.plugin"

and asks it for its estimators through the :func:`relaxit_estimators` hook below.  The
module imports only ``relaxit_core`` (the framework), Pyro, torch and pydantic.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pyro.distributions as pdist
import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C

__all__ = ["ConstantBaselineReinforce", "relaxit_estimators"]


class ConstantBaselineReinforce(relaxit_core.EstimatorBase):
    r"""REINFORCE for independent Bernoulli variables with a constant baseline ``b``.

    It is unbiased for every constant ``b``, because ``E_q[∇θ log q(z)] = 0``; a ``b``
    close to ``E_q[f]`` lowers its variance.  ``log_prob`` is the Bernoulli probability
    mass function.

    Maths:
        :Law: :math:`z_s \sim \operatorname{Bernoulli}(\sigma(\theta))` i.i.d., :math:`s = 1, \dots, S`.
        :Estimator: the score function with a constant baseline :math:`b` (Williams 1992, eq. 11):

            .. math::
                \hat g = \frac{1}{S} \sum_{s=1}^{S} \bigl(f(z_s) - b\bigr)\, \nabla_\theta \log q_\theta(z_s),
                \qquad \nabla_\theta \log q_\theta(z) = z - \sigma(\theta).
        :Gradient: unbiased, :math:`\mathbb{E}[\hat g] = \nabla_\theta \mathbb{E}_{q_\theta}[f(z)]`.
        :Cost: :math:`S` (``num_samples``) objective evaluations, in one call on all samples.

    Example:
        >>> import torch
        >>> from relaxit_example_plugin import ConstantBaselineReinforce
        >>> est = ConstantBaselineReinforce(baseline=0.25)
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=8, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([3])
    """

    name: ClassVar[str] = "constant_baseline_reinforce"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Williams (1992), Simple Statistical Gradient-Following Algorithms for Connectionist "
        "Reinforcement Learning, Machine Learning 8, eq. 11"
    )
    conformance_configs = ({}, {"baseline": 0.5})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ConstantBaselineReinforce`."""

        name: Literal["constant_baseline_reinforce"] = "constant_baseline_reinforce"
        baseline: float = Field(
            0.0, ge=-1e6, le=1e6, description="The constant b subtracted from the objective."
        )

    def build_distribution(self, logits=None, probs=None):
        return pdist.Bernoulli(logits=logits, probs=probs)

    def baseline(self, f: torch.Tensor) -> torch.Tensor:
        """The constant ``b``, in the dtype and on the device of ``f``."""
        return torch.full((), self.config.baseline, dtype=f.dtype, device=f.device)


@relaxit_core.hookimpl
def relaxit_estimators():
    """The estimators this plugin provides."""
    return [ConstantBaselineReinforce]
