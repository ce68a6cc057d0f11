"""RELAX: a learned control variate for REINFORCE (Bernoulli and categorical).

References:
    Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), *Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation*, ICLR — eq. (8) (the
    estimator), Algorithm 1 (variance objective), Algorithm 2 (discrete ``b = H(z)``),
    Appendix B (the conditional samples ``z̃ ~ p(z | b)`` for Bernoulli and categorical
    variables, and ``c_φ(z) = f(σ_λ(z)) + r_ρ(z)`` for discrete models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

import relaxit_core
from relaxit_core import Capability as C
from relaxit_plugins._relaxed_cv import law, relaxed_cv_estimate

__all__ = ["RelaxEstimator"]


class RelaxEstimator(relaxit_core.EstimatorBase):
    r"""RELAX: REINFORCE with a learned control-variate network, trained on the estimator's variance.

    With ``b = H(z)``, ``z`` the relaxed variable (Bernoulli: ``z = logits + L``, ``L``
    logistic; categorical: ``z = log p + G``, ``G`` Gumbel), ``z̃ ~ p(z | b)`` the
    conditional sample (Appendix B; the conditional Gumbel for categorical) and a
    differentiable ``c_φ``, the estimate of ``∇_logits E[f(b)]`` is (eq. 8, Algorithm 2)::

        ĝ = [f(b) - c_φ(z̃)] ∇ log p(b) + ∇ c_φ(z) - ∇ c_φ(z̃)

    unbiased for every ``φ``.  Here ``c_φ(z) = η f(σ_λ(z)) + r_ρ(z)`` (Appendix B's form for
    discrete models, with a learned scale ``η``): ``σ_λ`` is ``sigmoid(z/λ)`` or
    ``softmax(z/λ)`` and ``r_ρ`` is a one-hidden-layer tanh network of width ``hidden``
    applied to each coordinate of ``2 σ(z) - 1`` (Bernoulli) or ``2 softmax(z) - 1``
    (categorical) with shared weights and averaged over every coordinate the objective
    reduces — so it works for any shape, and its scale (hence its learning rate) does not
    grow with the number of coordinates.  Its output layer starts at zero, so an untrained
    RELAX is REBAR with ``η = eta``, ``λ = tau``.  ``relaxation=False`` drops the
    ``η f(σ_λ(z))`` term (``c_φ = r_ρ``, as in the paper's toy problem).

    ``φ = (η, log λ, ρ)`` are parameters of this module; in the same ``backward()`` they
    receive ``∂ Σ ĝ² / ∂φ``, the gradient of the single-estimate variance (Algorithm 1:
    ``E[ĝ]`` does not depend on ``φ``).  Hand ``estimator.parameters()`` to an optimiser.
    Nothing of that term reaches the logits' producer or the objective's parameters, which
    get ``ĝ`` and ``mean_s ∂f(b_s)/∂θ_f`` respectively.  ``logits`` may be any tensor,
    leaf or not.

    ``num_samples = S``: the mean of ``S`` independent single-sample RELAX estimates.
    Cost: one objective call on ``3S`` inputs (``b``, ``σ_λ(z)``, ``σ_λ(z̃)``; ``S`` without
    the relaxation term), the network on ``2S`` inputs, and two backward passes through
    them (the second differentiates ``ĝ`` for the variance objective).  Samples are exactly
    0/1 or one-hot (``family``, required); the law is ``Bernoulli(logits)`` or ``OneHotCategorical(logits)``
    (``log_prob`` is the PMF).

    Maths:
        :Law: :math:`b = H(z)` with the relaxed variable :math:`z = \theta + L` (Bernoulli, :math:`L`
            logistic) or :math:`z = \log p + G` (categorical, :math:`G` Gumbel); :math:`\tilde z \sim p(z \mid b)`
            (Grathwohl et al. 2018, Appendix B).
        :Estimator: REINFORCE with a learned control variate :math:`c_\phi` (Grathwohl et al. 2018,
            eq. 8 and Algorithm 2):

            .. math::
                \hat g = \bigl[f(b) - c_\phi(\tilde z)\bigr] \nabla_\theta \log p(b)
                + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z), \qquad
                c_\phi(z) = \eta f(\sigma_\lambda(z)) + r_\rho(z) .
        :Gradient: unbiased for every :math:`\phi = (\eta, \lambda, \rho)`, which follow
            :math:`\partial \sum \hat g^2 / \partial \phi` (Algorithm 1).
        :Cost: :math:`3S` objective evaluations (:math:`S` without the relaxation term), the network on
            :math:`2S` inputs and two backward passes.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("relax", family="categorical", hidden=8)
        >>> logits = torch.zeros(2, 4, requires_grad=True)
        >>> out = est.estimate(lambda z: (z[..., 0] - 0.45).pow(2).sum(-1), num_samples=2, logits=logits)
        >>> out.surrogate.backward()
        >>> logits.grad.shape, est.eta.grad is not None
        (torch.Size([2, 4]), True)
    """

    name: ClassVar[str] = "relax"
    family: ClassVar[str] = "bernoulli"
    families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Grathwohl, Choi, Wu, Roeder & Duvenaud (2018), Backpropagation through the Void: "
        "Optimizing control variates for black-box gradient estimation, ICLR, eq. 8, "
        "Algorithms 1-2, Appendix B"
    )
    example_config: ClassVar[dict] = {"family": "bernoulli"}
    """The config of the docs' generated example: ``family`` is required."""
    conformance_configs = (
        {"family": "bernoulli"},
        {"family": "categorical"},
        {"family": "bernoulli", "relaxation": False, "hidden": 4},
    )
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`RelaxEstimator`."""

        name: Literal["relax"] = "relax"
        family: Literal["bernoulli", "categorical"] = Field(
            description="The discrete law: independent Bernoulli or one-hot categorical (required)."
        )
        hidden: int = Field(16, ge=1, le=65536, description="Width of the control-variate network r_ρ.")
        relaxation: bool = Field(True, description="Include η f(σ_λ(z)) in the control variate (3 objective evaluations per sample).")
        tau: float = Field(0.5, gt=0, le=1e3, description="Initial temperature λ of the relaxation term.")
        eta: float = Field(1.0, ge=-1e3, le=1e3, description="Initial scale η of the relaxation term.")

        @field_validator("tau", mode="before")
        @classmethod
        def _tau_not_scheduled(cls, value):
            if isinstance(value, Mapping) or hasattr(value, "schedule"):
                raise ValueError(
                    "RELAX learns its temperature: tau is its initial value (a number) and cannot be a schedule"
                )
            return value

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        h = self.config.hidden
        gen = torch.Generator().manual_seed(0)  # deterministic initial network
        self.eta = torch.nn.Parameter(torch.tensor(float(self.config.eta)))
        self.log_tau = torch.nn.Parameter(torch.tensor(math.log(self.config.tau)))
        self.w1 = torch.nn.Parameter(torch.randn(h, generator=gen))
        self.b1 = torch.nn.Parameter(torch.randn(h, generator=gen) * 0.1)
        self.w2 = torch.nn.Parameter(torch.zeros(h))
        self.b2 = torch.nn.Parameter(torch.zeros(()))

    def network(self, z: torch.Tensor, keep_ndim: int) -> torch.Tensor:
        """``r_ρ(z)``: the per-coordinate network averaged over all dimensions from ``keep_ndim`` on."""
        dt = z.dtype
        x = 2 * (torch.sigmoid(z) if self.family == "bernoulli" else z.softmax(-1)) - 1
        h = torch.tanh(x.unsqueeze(-1) * self.w1.to(dt) + self.b1.to(dt))
        r = h @ self.w2.to(dt) + self.b2.to(dt)
        return r.mean(tuple(range(keep_ndim, r.dim()))) if r.dim() > keep_ndim else r

    def build_distribution(self, logits):
        return law(self.family, logits)

    def evaluations_per_sample(self, *, batch_ndim=0, **params):
        """Three objective rows per hard sample with the relaxation term (``b``, ``σ_λ(z)``,
        ``σ_λ(z̃)``), one without it."""
        return 3 if self.config.relaxation else 1

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        num_samples = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)  # argument checks and validation
        logits = self.check_params(params)["logits"]
        dt = logits.dtype
        relax = self.config.relaxation
        learned = [p for p in self.parameters() if p.requires_grad]
        if not relax:
            learned = [p for p in learned if p is not self.eta and p is not self.log_tau]
        return relaxed_cv_estimate(
            self.name, self.family, objective, num_samples, logits,
            tau=self.log_tau.to(dt).exp(), eta=self.eta.to(dt) if relax else None,
            network=self.network, learned=learned, dist=dist,
        )


@relaxit_core.hookimpl
def relaxit_estimators():
    return [RelaxEstimator]
