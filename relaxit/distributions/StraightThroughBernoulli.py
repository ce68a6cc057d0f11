"""relaxit 1.x's ``StraightThroughBernoulli``, over the registered ``straight_through_bernoulli`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, built, estimator

__all__ = ["StraightThroughBernoulli"]


class StraightThroughBernoulli(Adapter):
    """Straight-through Bernoulli: forward exactly 0/1, backward through ``probs`` (Bengio et al. 2013).

    relaxit 1.x's class, now ``relaxit.get("straight_through_bernoulli").distribution(probs=..., logits=...)``.
    ``log_prob`` is the Bernoulli PMF of the hard value.

    Args:
        probs: probabilities (give this or ``logits``).
        logits: log-odds.
        validate_args: torch's argument validation flag.
    """

    registry_name = "straight_through_bernoulli"

    def __init__(self, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                 validate_args: bool | None = None):
        est = estimator(self.registry_name)
        self._adopt(built(validate_args, lambda: est.distribution(probs=probs, logits=logits)))

    @property
    def probs(self):
        return self.law.probs

    @property
    def logits(self):
        return self.law.logits

    @classmethod
    def infer_shapes(cls, probs=None, logits=None):
        return torch.Size(probs if probs is not None else logits), torch.Size()
