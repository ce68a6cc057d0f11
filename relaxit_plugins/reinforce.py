"""REINFORCE (score-function) estimator with unbiased baselines.

References:
    Williams (1992), *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8 — eq. (11) (the score-function gradient,
    with a reinforcement baseline ``b``).
    Kool, van Hoof & Welling (2019), *Buy 4 REINFORCE Samples, Get a Baseline for Free!*,
    ICLR Workshop — eq. (8) (the leave-one-out baseline, RLOO).
"""

from __future__ import annotations

import contextlib
import threading
from typing import ClassVar, Literal

import pyro.distributions as pdist
import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.limits import is_compiling
from relaxit_core.surrogate import leave_one_out_baseline
from relaxit_plugins._multisample import (
    Bernoulli,
    bernoulli_draw,
    bernoulli_probs,
    bernoulli_score_gradient,
    call_objective,
    with_score,
)

__all__ = ["ReinforceEstimator"]

_LAWS = {"bernoulli": Bernoulli, "categorical": pdist.OneHotCategorical}


class ReinforceEstimator(relaxit_core.EstimatorBase):
    r"""REINFORCE score-function estimator with none, moving-average or leave-one-out baselines.

    The gradient estimate is ``mean_s (f(z_s) - b_s) ∇θ log q(z_s)``, unbiased for any
    baseline ``b_s`` independent of ``z_s`` (Williams 1992, eq. 11).

    Baselines:

    - ``"none"``: ``b = 0``.
    - ``"moving_average"``: ``b`` is a bias-corrected exponential moving average (``decay``)
      of the objective over earlier calls; it is updated after the current estimate, so it
      never depends on the current samples.  Kept as buffers of the module.
    - ``"leave_one_out"`` (RLOO, Kool et al. 2019, eq. 8): ``b_s`` is the mean of the other
      ``S - 1`` samples' values; needs ``num_samples >= 2``.

    Cost: ``num_samples`` objective evaluations in one batched call.  For Bernoulli
    ``logits`` the estimate is formed directly from the score ``z - σ(logits)`` (finite at
    ``logits = ±inf``), as ``mean_s (f_s - b_s)(z_s - σ(logits))``, with no ``log_prob``
    pass over the samples.  Families:
    ``"bernoulli"`` (samples 0/1, law ``Bernoulli(logits)``) and ``"categorical"``
    (one-hot samples, law ``OneHotCategorical(logits)``); ``family`` is required.

    Maths:
        :Law: :math:`z_s \sim q_\theta` i.i.d.: :math:`\operatorname{Bernoulli}(\sigma(\theta))` or
            :math:`\operatorname{OneHotCategorical}(\operatorname{softmax}(\theta))` (``family``).
        :Estimator: the score function with a baseline (Williams 1992, eq. 11):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S} \bigl(f(z_s) - b_s\bigr) \nabla_\theta \log q_\theta(z_s),

            :math:`b_s = 0`, a moving average of earlier calls, or the leave-one-out mean
            :math:`b_s = \frac{1}{S-1}\sum_{j \ne s} f(z_j)` (RLOO, Kool et al. 2019, eq. 8).
        :Gradient: unbiased, :math:`\mathbb{E}[\hat g] = \nabla_\theta \mathbb{E}_{q_\theta}[f(z)]`, for each
            baseline.
        :Cost: :math:`S` objective evaluations in one batched call.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.build({"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"})
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=4, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([3])
    """

    name: ClassVar[str] = "reinforce"
    family: ClassVar[str] = "bernoulli"
    families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Williams (1992), Simple Statistical Gradient-Following Algorithms, Machine Learning 8, "
        "eq. 11; Kool, van Hoof & Welling (2019), Buy 4 REINFORCE Samples, Get a Baseline for "
        "Free!, ICLR Workshop, eq. 8"
    )
    example_config: ClassVar[dict] = {"family": "bernoulli", "baseline": "leave_one_out"}
    """The config of the docs' generated example: RLOO, the baseline to use by default."""
    conformance_configs = tuple(
        {"family": fam, "baseline": b}
        for fam in ("bernoulli", "categorical")
        for b in ("none", "moving_average", "leave_one_out")
    )

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ReinforceEstimator`."""

        name: Literal["reinforce"] = "reinforce"
        family: Literal["bernoulli", "categorical"] = Field(
            description="The discrete law: independent Bernoulli or one-hot categorical (required)."
        )
        baseline: Literal["none", "moving_average", "leave_one_out"] = Field(
            "none", description="Variance-reduction baseline (all keep the estimate unbiased)."
        )
        decay: float = Field(
            0.9, gt=0, lt=1, description="Decay of the moving-average baseline (ignored otherwise)."
        )

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.min_num_samples = 2 if self.config.baseline == "leave_one_out" else 1
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def build_distribution(self, logits=None, probs=None):
        return _LAWS[self.family](probs=probs, logits=logits)

    def estimate(self, objective, *, num_samples=1, reduce="mean", **params):
        if self.family != "bernoulli" or reduce != "mean" or params.get("logits") is None:
            return super().estimate(objective, num_samples=num_samples, reduce=reduce, **params)
        num_samples = self._check_num_samples(num_samples)
        dist = self.distribution(**params)
        p = bernoulli_probs(dist)
        z = bernoulli_draw(p, (num_samples,))
        f = call_objective(objective, z, dist, self.name)
        fd = f.detach()
        b = self.baseline(fd)
        weight = (fd if b is None else fd - b) / num_samples
        g = bernoulli_score_gradient(weight, z, p)
        surrogate = with_score(f.mean(0), dist.logits, g)
        return relaxit_core.Estimate(surrogate, surrogate.detach(), z)

    def baseline(self, f):
        kind = self.config.baseline
        if kind == "leave_one_out":
            return leave_one_out_baseline(f)
        if kind == "moving_average":
            decay = self.config.decay
            # Read and update the running mean atomically: an estimator shared by threads loses
            # no update (a process-wide lock, held for a few tensor ops; none while compiling).
            lock = contextlib.nullcontext() if is_compiling() else _EMA_LOCK
            with lock:
                ema = self.running_mean.to(f)
                n = self.num_updates.to(f.device)
                # Bias-corrected EMA of earlier calls (zero before the first update): no host sync.
                correction = 1 - torch.pow(torch.as_tensor(decay, dtype=f.dtype, device=f.device), n)
                b = torch.where(n > 0, ema / correction.clamp_min(torch.finfo(f.dtype).tiny), torch.zeros_like(ema))
                self.running_mean = (decay * ema + (1 - decay) * f.mean()).detach()
                self.num_updates = n + 1
            return b
        return None


_EMA_LOCK = threading.Lock()
"""Makes the moving-average baseline's read-and-update atomic across threads."""


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ReinforceEstimator]
