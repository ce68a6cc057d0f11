"""Shared pieces of ARM and DisARM: antithetic Bernoulli pairs from one uniform draw.

Not a plugin (declares no estimator); :mod:`relaxit_plugins.arm` and
:mod:`relaxit_plugins.disarm` use it.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as pdist
import torch

from relaxit_core.limits import find_limits

from relaxit_core.distributions import logistic_like
from relaxit_core.errors import ParameterError
from relaxit_core.estimator import Draw, Estimate, EstimatorBase, call_objective
from relaxit_core import Capability as C

__all__ = ["AntitheticEstimator", "antithetic_pairs", "check_even"]


def check_even(name: str, num_samples: int) -> int:
    """ARM and DisARM spend ``num_samples`` evaluations on ``num_samples / 2`` antithetic pairs."""
    if num_samples % 2:
        raise ParameterError(
            f"{name}: num_samples counts objective evaluations, two per antithetic pair; "
            f"it must be even, got {num_samples}"
        )
    return num_samples


def antithetic_pairs(name: str, objective, num_samples: int, logits: torch.Tensor, dist=None):
    """Draw ``P = num_samples / 2`` uniforms ``u`` and evaluate the objective once on
    ``[b; b̃]``, ``b = 1[u < σ(logits)]``, ``b̃ = 1[1 - u < σ(logits)]`` (both
    ``Bernoulli(σ(logits))``; written as ``logit u < logits`` and ``-logit u < logits``
    to stay exact at large ``|logits|``).

    Returns ``(samples, f, f_b, f_anti, b, b_anti, lu)`` with ``samples`` ``[2P, *batch]``,
    ``f`` the objective ``[2P, *B]`` and ``lu = logit u`` ``[P, *batch]``.
    """
    pairs = num_samples // 2
    theta = logits.detach()
    lu = logistic_like(torch.Size((pairs,)) + theta.shape, theta)
    b = (lu < theta).to(theta.dtype)
    b_anti = (-lu < theta).to(theta.dtype)
    samples = torch.cat([b, b_anti])
    f = call_objective(objective, samples, dist if dist is not None else pdist.Bernoulli(logits=theta), name)
    f_b, f_anti = f.split(pairs)
    return samples, f, f_b, f_anti, b, b_anti, lu


def trail(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``x`` with singleton dimensions appended up to ``ndim`` dimensions."""
    return x.reshape(x.shape + (1,) * (ndim - x.dim()))


def attach(f: torch.Tensor, logits: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    """``mean_s f + Σ (logits - logits.detach()) ĝ`` reduced to the objective's batch shape:
    forward value ``mean_s f``, gradient ``ĝ`` to ``logits`` and ``mean_s ∂f/∂φ`` to the
    objective's own parameters."""
    b_nd = f.dim() - 1
    term = (logits - logits.detach()) * g_hat.detach()
    if term.dim() > b_nd:
        term = term.sum(tuple(range(b_nd, term.dim())))
    return f.mean(0) + term


class AntitheticEstimator(EstimatorBase):
    """Shared declarations and ``estimate`` of ARM and DisARM: ``num_samples / 2`` antithetic
    pairs evaluated in one objective call; a subclass gives the per-pair gradient in
    :meth:`pair_gradient`."""

    family = "bernoulli"
    params = ("logits",)
    capabilities = frozenset({C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD})
    min_num_samples = 2
    reductions = ("mean",)

    def build_distribution(self, logits):
        return pdist.Bernoulli(logits=logits)

    def pair_gradient(self, logits, f_b, f_anti, b, b_anti, lu) -> torch.Tensor:
        """The gradient estimate w.r.t. ``logits`` averaged over the pairs."""
        raise NotImplementedError

    cost_samples: ClassVar[str] = "own"  # the costs must be at draw()'s antithetic pairs

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        num_samples = check_even(self.name, self._check_num_samples(num_samples))
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        logits = self.check_params(params)["logits"]
        samples, f, f_b, f_anti, b, b_anti, lu = antithetic_pairs(self.name, objective, num_samples, logits, dist)
        g_hat = self.pair_gradient(logits, f_b, f_anti, b, b_anti, lu)
        return Estimate(attach(f, logits, g_hat), f.mean(0).detach(), samples)

    def draw(self, num_samples=2, **params):
        """The ``num_samples / 2`` antithetic pairs ``[b; b̃]`` (phase one of :meth:`estimate`)."""
        num_samples = check_even(self.name, self._check_num_samples(num_samples))
        logits, limits = self._at_limits(params)
        theta = logits.detach()
        lu = logistic_like(torch.Size((num_samples // 2,)) + theta.shape, theta)
        b = (lu < theta).to(theta.dtype)
        b_anti = (-lu < theta).to(theta.dtype)
        samples = torch.cat([b, b_anti])
        return Draw(samples if limits is None else limits.fix(samples), lu)

    def _at_limits(self, params):
        """The logits to compute with and the :class:`~relaxit_core.limits.Limits` (``None``
        when all are finite): the non-finite rule that the core applies around
        :meth:`estimate`, applied here to the two phases too (``±inf`` logits are sampled as
        their limits, with a zero gradient; NaN raises ``ParameterError``)."""
        checked = self.check_params(params)
        limits = find_limits(self, checked)
        return (checked if limits is None else limits.params)["logits"], limits

    def from_costs(self, costs, draw, *, reduce="mean", **params):
        """The estimate from the costs ``[num_samples, *B]`` at ``draw.samples`` (phase two)."""
        self._check_reduce(reduce)
        logits, _ = self._at_limits(params)  # stand-ins: their entries' samples are the limits
        lu = draw.state
        pairs = lu.shape[0]
        if costs.shape[0] != 2 * pairs:
            raise ParameterError(f"{self.name}: expected costs for {2 * pairs} samples, got {costs.shape[0]}")
        b, b_anti = draw.samples.split(pairs)
        f_b, f_anti = costs.split(pairs)
        g_hat = self.pair_gradient(logits, f_b, f_anti, b, b_anti, lu)
        return Estimate(attach(costs, logits, g_hat), costs.mean(0).detach(), draw.samples)
