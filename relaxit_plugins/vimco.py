"""VIMCO: score-function gradients of the multi-sample bound with per-sample
leave-one-out control variates.

Reference:
    Mnih & Rezende (2016), *Variational Inference for Monte Carlo Objectives*, ICML —
    eq. (2) (the K-sample estimate ``Î = (1/K) Σ_k w_k``; the bound is ``L = E log Î``),
    eq. (5) (its gradient ``Σ_j L̂ ∇ log Q(h^j) + Σ_j w̃_j ∇ log w_j``),
    eq. (10) (the per-sample learning signal ``L̂(h^j | h^{-j}) = L̂(h^{1:K}) - L̂(h^{-j})``,
    where ``L̂(h^{-j})`` replaces ``w_j`` by the geometric mean of the other weights,
    ``log ŵ_{-j} = (1/(K-1)) Σ_{i≠j} log w_i``) and eq. (11) (the VIMCO estimator).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.surrogate import leave_one_out_baseline, score_function_surrogate
from relaxit_plugins._multisample import (
    LAWS,
    bernoulli_evaluate,
    bernoulli_mean_estimate,
    bernoulli_score_gradient,
    call_objective,
    reduce_log_prob,
    with_score,
)

__all__ = ["VimcoEstimator", "vimco_signals"]


def vimco_signals(log_w: torch.Tensor, *, bound: torch.Tensor | None = None) -> torch.Tensor:
    """VIMCO's learning signals ``L - L_{-j}`` for each sample ``j`` (Mnih & Rezende 2016,
    eq. 10), detached.

    ``log_w`` has shape ``[K, *B]`` (``K >= 2``); ``L = log (1/K) Σ_k w_k`` and ``L_{-j}`` is
    the same bound with ``log w_j`` replaced by the mean of the other log-weights (the
    geometric mean of the other weights), which does not depend on sample ``j``.  ``bound``:
    ``L`` when the caller has computed it already (``log_w.logsumexp(0) - log K``).
    """
    log_w = log_w.detach()
    k = log_w.shape[0]
    bound = log_w.logsumexp(0) - math.log(k) if bound is None else bound.detach()
    geo = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # [K, *B]: mean of the others
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).reshape((k, k) + (1,) * (log_w.dim() - 1))
    # replaced[j, i] = log w_i for i != j, geo_j for i == j
    replaced = torch.where(eye, geo.unsqueeze(1), log_w.unsqueeze(0))
    loo_bound = replaced.logsumexp(1) - math.log(k)
    return bound.unsqueeze(0) - loo_bound


class VimcoEstimator(relaxit_core.EstimatorBase):
    r"""VIMCO (Mnih & Rezende 2016): the multi-sample bound with leave-one-out control variates.

    With ``reduce="logmeanexp"`` (VIMCO proper), ``objective(z)`` returns per-sample
    log-weights ``log w_k`` (e.g. ``log p(x, z_k) - log q(z_k)``), ``value`` is the bound
    ``L = log (1/K) Σ_k w_k`` (to maximise; the log of eq. 2's estimate) and the
    surrogate's gradient is

    ``Σ_j (L - L_{-j}) ∇θ log q(z_j) + Σ_j w̃_j ∇ log w_j``,  ``w̃_j = w_j / Σ_k w_k``

    (eqs. 5, 10–11), where ``L_{-j}`` replaces ``log w_j`` by the mean of the other
    log-weights.  The second term flows through the objective by autograd (so a
    ``log q(z)`` computed inside the objective from the same parameters gets its
    pathwise part, and the objective's own parameters get ``Σ_j w̃_j ∇φ log w_j``).

    With ``reduce="mean"`` (the default of ``estimate``) the objective is a per-sample
    loss and the bound is its plain mean; VIMCO's construction then reduces exactly to
    the leave-one-out baseline (``L - L_{-j} = (f_j - mean_{i≠j} f_i)/K``): this is RLOO
    (Kool et al. 2019), the same estimate as ``reinforce`` with
    ``baseline="leave_one_out"``.

    ``num_samples`` is ``K >= 2``; one call costs ``K`` objective evaluations in one
    batched call.  Families: ``"bernoulli"`` (law ``Bernoulli(logits)``) and
    ``"categorical"`` (law ``OneHotCategorical(logits)``), ``family`` required;
    ``log_prob`` is the PMF.

    Maths:
        :Law: :math:`z_1, \dots, z_K \sim q_\theta` i.i.d. (:math:`K = S \ge 2`), Bernoulli or one-hot
            categorical (``family``).
        :Estimator: the multi-sample bound :math:`L = \log \frac1K \sum_k w_k` (Mnih & Rezende 2016,
            eq. 2) with leave-one-out control variates (eqs. 5, 10-11):

            .. math::
                \hat g = \sum_{j=1}^{K} \bigl(L - L_{-j}\bigr) \nabla_\theta \log q_\theta(z_j)
                + \sum_{j=1}^{K} \tilde w_j \nabla \log w_j, \qquad
                \tilde w_j = \frac{w_j}{\sum_k w_k},

            where :math:`L_{-j}` replaces :math:`\log w_j` by the mean of the other log-weights.
            With ``reduce="mean"`` this is RLOO.
        :Gradient: unbiased for :math:`\nabla_\theta \mathbb{E}[L]`.
        :Cost: :math:`K` objective evaluations in one batched call.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("vimco", family="bernoulli")
        >>> logits = torch.zeros(4, requires_grad=True)
        >>> out = est.estimate(lambda z: -(z - 0.3).pow(2).sum(-1), num_samples=5,
        ...                    reduce="logmeanexp", logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([4])
    """

    name: ClassVar[str] = "vimco"
    family: ClassVar[str] = "bernoulli"
    families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives, ICML, "
        "eqs. 2, 5, 10-11"
    )
    example_config: ClassVar[dict] = {"family": "bernoulli"}
    """The config of the docs' generated example: ``family`` is required."""
    conformance_configs = ({"family": "bernoulli"}, {"family": "categorical"})
    reductions: ClassVar[tuple[str, ...]] = ("mean", "logmeanexp")
    min_num_samples: int = 2

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`VimcoEstimator`."""

        name: Literal["vimco"] = "vimco"
        family: Literal["bernoulli", "categorical"] = Field(
            description="The discrete law: independent Bernoulli or one-hot categorical (required)."
        )

    def build_distribution(self, logits=None, probs=None):
        return LAWS[self.family](probs=probs, logits=logits)

    cost_samples: ClassVar[str] = "any"  # any i.i.d. draws serve (e.g. a Pyro guide's particles)
    preferred_reduce: ClassVar[str] = "logmeanexp"

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        num_samples = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        logits = params.get("logits")
        if self.family == "bernoulli" and isinstance(logits, torch.Tensor) and params.get("probs") is None:
            # score z - σ(logits): finite at ±inf, no log_prob pass over [S, *batch].  The core's
            # guard has checked the logits (finite, or limits replaced by stand-ins): no law is
            # built, its batch_shape is logits.shape.
            if reduce == "mean":  # RLOO
                return bernoulli_mean_estimate(objective, logits, num_samples, self.name)
            p, z, f = bernoulli_evaluate(objective, logits, num_samples, self.name)
            fd = f.detach()
            bound = f.logsumexp(0) - math.log(num_samples)
            g = bernoulli_score_gradient(vimco_signals(fd, bound=bound), z, p)
            return relaxit_core.Estimate(with_score(bound, logits, g), bound.detach(), z)
        dist = self.distribution(**params)
        z = dist.sample((num_samples,))
        f = call_objective(objective, z, dist, self.name)
        return self.from_costs(f, relaxit_core.Draw(z), reduce=reduce, **params)

    def from_costs(self, costs, draw, *, reduce="mean", **params):
        """The estimate from the objective's values ``costs`` ``[K, *B]`` at ``draw.samples``
        (see :meth:`estimate`); the parameters may carry the sample dimension."""
        self._check_reduce(reduce)
        z, f = draw.samples, costs
        if f.shape[0] < 2:
            raise relaxit_core.ParameterError(f"{self.name}: needs at least 2 samples, got {f.shape[0]}")
        log_q = reduce_log_prob(self.distribution(**params).log_prob(z), f.dim())
        if reduce == "mean":
            surrogate = score_function_surrogate(f, log_q, leave_one_out_baseline(f.detach()))
            return relaxit_core.Estimate(surrogate, f.detach().mean(0), z)  # value: the objective alone
        bound = f.logsumexp(0) - math.log(f.shape[0])
        signal = vimco_signals(f)
        surrogate = bound + (signal * (log_q - log_q.detach())).sum(0)
        return relaxit_core.Estimate(surrogate, bound.detach(), z)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [VimcoEstimator]
