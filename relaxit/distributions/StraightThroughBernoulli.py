"""relaxit 1.x's ``StraightThroughBernoulli``, over the registered ``straight_through_bernoulli`` law."""

from __future__ import annotations

from relaxit.distributions._adapter import ProbsLogitsAdapter

__all__ = ["StraightThroughBernoulli"]


class StraightThroughBernoulli(ProbsLogitsAdapter):
    """Straight-through Bernoulli: forward exactly 0/1, backward through ``probs`` (Bengio et al. 2013).

    relaxit 1.x's class, now ``relaxit.get("straight_through_bernoulli").distribution(probs=..., logits=...)``.
    ``log_prob`` is the Bernoulli PMF of the hard value.

    Args:
        probs: probabilities (give this or ``logits``).
        logits: log-odds.
        validate_args: torch's argument validation flag.
    """

    registry_name = "straight_through_bernoulli"
