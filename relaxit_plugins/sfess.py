r"""SFESS: the score-function estimator for k-subset sampling, with a leave-one-out baseline.

Wijk, Vinuesa & Azizpour (2025), *SFESS: Score Function Estimators for k-Subset Sampling*,
ICLR (arXiv 2407.16058).  For the k-subset law ``p_θ(z) ∝ exp(θ·z) 1[Σz = k]`` (independent
Bernoullis conditioned on ``k`` ones) the score is explicit:

.. math::
    ∇_θ \log p_θ(z) = z - μ(θ), \qquad μ(θ) = E_θ[z] = ∇_θ \log Z(θ),

and, with ``S`` samples and the leave-one-out baseline ``b_s = (1/(S-1)) Σ_{s' ≠ s} f(z_{s'})``
(the paper's control variate; Kool et al. 2019, eq. 8),

.. math::
    \widehat{∇_θ} E_θ[f(z)] = \frac1S \sum_{s=1}^{S} \bigl(f(z_s) - b_s\bigr)\,\bigl(z_s - μ(θ)\bigr),

unbiased for any ``f`` — it only evaluates ``f``, which need not be differentiable in ``z``.
SFESS writes ``log Z = Σ softplus(θ_i) + log PB_k``, the probability that independent
Bernoullis have ``k`` ones, by the discrete Fourier transform of the Poisson-binomial
(Fernandez & Williams 2010); here ``log Z`` comes from the log-space dynamic program of
:mod:`relaxit_plugins._ksubset`, which is exact in log space where the DFT loses ``PB_k``
below the rounding level of the largest count probability (the tests check the two agree).

Two details differ from the authors' code, on purpose: samples are drawn *exactly* from
``p_θ`` (their code draws Gumbel top-k sets, whose law is Plackett–Luce, and scores them with
``log p_θ``), and the baseline leaves the sample's own value out (so the estimate is unbiased).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.surrogate import leave_one_out_baseline
from relaxit_plugins._ksubset import KSubset
from relaxit_plugins.simple import _law_for
from relaxit_plugins.gumbel_topk import KSubsetEstimatorBase

__all__ = ["SFESSEstimator"]


class SFESSEstimator(KSubsetEstimatorBase):
    r"""SFESS (Wijk et al. 2025): unbiased score-function gradients for the exact k-subset law, leave-one-out baseline.

    ``ĝ = (1/S) Σ_s (f(z_s) - b_s)(z_s - μ(θ))`` with ``z_s`` exact samples of
    ``p(z) ∝ exp(θ·z) 1[Σz = k]``, ``μ`` its exact marginals and ``b_s`` the mean of the other
    samples' values (``baseline="leave_one_out"``, the default, needs ``num_samples >= 2``) or
    ``0`` (``"none"``).  Unbiased; ``f`` is only evaluated, never differentiated in ``z``.
    Cost: ``num_samples`` objective evaluations, one dynamic program per call.

    Maths:
        :Law: :math:`p_\theta(z) = \exp(\theta^\top z - \log Z(\theta))\,\mathbb 1[\textstyle\sum_i z_i = k]`
            (the k-subset law of ``simple``), exact samples :math:`z_1, \dots, z_S`.
        :Estimator: the score function of the k-subset law with the leave-one-out control
            variate (Wijk et al. 2025, equation number not checked here; the baseline is RLOO,
            Kool et al. 2019, eq. 8):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S} \bigl(f(z_s) - b_s\bigr)\bigl(z_s - \mu(\theta)\bigr),
                \qquad b_s = \frac{1}{S-1} \sum_{j \ne s} f(z_j).
        :Gradient: unbiased, :math:`\mathbb E[\hat g] = \nabla_\theta \mathbb E_{p_\theta}[f(z)]`;
            :math:`f` is only evaluated.
        :Cost: :math:`S` objective evaluations; one dynamic program, :math:`\Theta(B\,n\,\min(k, n-k))`.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("sfess", k=2)
        >>> logits = torch.zeros(3, 6, requires_grad=True)
        >>> out = est.estimate(lambda z: (z[..., 0] > 0).double(), num_samples=4, logits=logits)
        >>> out.surrogate.sum().backward(); logits.grad.shape
        torch.Size([3, 6])
    """

    name: ClassVar[str] = "sfess"
    family: ClassVar[str] = "subset"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT, C.KL, C.UNBIASED}
    )
    reference: ClassVar[str] = (
        "Wijk, Vinuesa & Azizpour (2025), SFESS: Score Function Estimators for k-Subset Sampling, ICLR "
        "(arXiv 2407.16058): score z - mu(theta) of the conditional-Bernoulli k-subset law, leave-one-out "
        "control variate; Kool, van Hoof & Welling (2019), Buy 4 REINFORCE Samples, eq. 8"
    )
    conformance_configs = ({}, {"k": 2, "baseline": "none"})
    example_config: ClassVar[dict] = {"k": 3}

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`SFESSEstimator`."""

        name: Literal["sfess"] = "sfess"
        k: int = Field(1, ge=1, le=1_000_000, description="Subset size: the number of ones in each sample.")
        baseline: Literal["leave_one_out", "none"] = Field(
            "leave_one_out", description="Control variate: the mean of the other samples' values, or none."
        )

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.min_num_samples = 2 if self.config.baseline == "leave_one_out" else 1

    def build_distribution(self, logits):
        return _law_for(self.name, self.config.k, logits, KSubset)

    def baseline(self, f):
        return leave_one_out_baseline(f) if self.config.baseline == "leave_one_out" else None


@relaxit_core.hookimpl
def relaxit_estimators():
    return [SFESSEstimator]
