"""REBAR: REINFORCE with the concrete relaxation as control variate (Bernoulli).

References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), *REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models*, NeurIPS — eq. (6)-(7) (the
    estimator), Appendix (the conditional relaxed sample ``z̃ ~ p(z | b)``), Sec. 3.3
    (``η`` and the temperature tuned by minimising the estimator's variance).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_plugins._relaxed_cv import law, relaxed_cv_estimate

__all__ = ["RebarEstimator"]


class RebarEstimator(relaxit_core.EstimatorBase):
    r"""REBAR: unbiased REINFORCE with a concrete-relaxation control variate, ``η`` and ``τ`` optionally learned.

    With ``z = logits + L`` (``L`` logistic), ``b = H(z) ~ Bernoulli(sigmoid(logits))``,
    ``z̃ ~ p(z | b)`` drawn with fresh noise (Tucker et al. 2017, Appendix) and
    ``σ_τ(z) = sigmoid(z / τ)``, the estimate of ``∇_logits E[f(b)]`` is (their eq. 7)::

        ĝ = [f(b) - η f(σ_τ(z̃))] ∇ log p(b) + η ∇ f(σ_τ(z)) - η ∇ f(σ_τ(z̃))

    unbiased for every ``η`` and ``τ``: ``E[f(σ_τ(z̃)) ∇ log p(b)] + E[∇ f(σ_τ(z̃))]``
    equals ``∇ E[f(σ_τ(z))]``.  The objective must therefore accept relaxed values in
    ``[0, 1]`` and be differentiable in them.

    ``learn=True`` makes ``eta`` and ``log_tau`` parameters of this module, trained in the
    same ``backward()`` by the gradient of the single-estimate variance ``Σ ĝ²``
    (Sec. 3.3: ``E[ĝ]`` does not depend on them, so ``∇ Var ĝ = E[∇ ĝ²]``); hand
    ``estimator.parameters()`` to an optimiser.  Nothing of that term reaches the logits'
    producer or the objective's parameters, which get ``ĝ`` and the Monte Carlo gradient
    ``mean_s ∂f(b_s)/∂φ`` respectively.

    ``num_samples = S``: the mean of ``S`` independent single-sample REBAR estimates.
    Cost: one objective call on ``3S`` inputs (``b``, ``σ_τ(z)``, ``σ_τ(z̃)``) and one
    backward pass through the two relaxed evaluations (twice with ``learn=True``:
    the variance gradient differentiates ``ĝ`` itself).  ``logits`` may be any tensor,
    leaf or not (e.g. an encoder's output).  Samples ``b`` are exactly 0/1; the law is
    ``Bernoulli(logits)`` (``log_prob`` is its PMF).

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("rebar", learn=True)
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=2, logits=logits)
        >>> out.surrogate.backward()
        >>> logits.grad.shape, est.eta.grad is not None
        (torch.Size([3]), True)
    """

    name: ClassVar[str] = "rebar"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), REBAR: Low-variance, unbiased "
        "gradient estimates for discrete latent variable models, NeurIPS, eq. 6-7, Appendix "
        "(conditional sample), Sec. 3.3 (variance objective)"
    )
    conformance_configs = ({}, {"learn": True, "tau": 0.1, "eta": 0.5})
    reductions: ClassVar[tuple[str, ...]] = ("mean",)

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`RebarEstimator`."""

        name: Literal["rebar"] = "rebar"
        tau: float = Field(0.5, gt=0, le=1e3, description="Temperature τ of the relaxation (initial value when learned).")
        eta: float = Field(1.0, ge=-1e3, le=1e3, description="Scale η of the control variate (initial value when learned).")
        learn: bool = Field(False, description="Learn η and log τ by minimising the estimator's variance (Sec. 3.3).")

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        eta = torch.tensor(float(self.config.eta))
        log_tau = torch.tensor(math.log(self.config.tau))
        if self.config.learn:
            self.eta = torch.nn.Parameter(eta)
            self.log_tau = torch.nn.Parameter(log_tau)
        else:
            self.register_buffer("eta", eta)
            self.register_buffer("log_tau", log_tau)

    @property
    def tau(self) -> torch.Tensor:
        """The current temperature ``exp(log_tau)``."""
        return self.log_tau.exp()

    def build_distribution(self, logits):
        return law("bernoulli", logits)

    def evaluations_per_sample(self, *, batch_ndim=0, **params):
        """Three objective rows per hard sample: ``b``, ``σ_λ(z)`` and ``σ_λ(z̃)``."""
        return 3

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        num_samples = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)  # argument checks and validation
        logits = self.check_params(params)["logits"]
        learned = [self.eta, self.log_tau] if self.config.learn else []
        return relaxed_cv_estimate(
            self.name, "bernoulli", objective, num_samples, logits,
            tau=self.log_tau.to(logits.dtype).exp(), eta=self.eta.to(logits.dtype),
            network=None, learned=learned, dist=dist,
        )


@relaxit_core.hookimpl
def relaxit_estimators():
    return [RebarEstimator]
