"""relaxit 1.x's ``StochasticTimesSmooth``, over the registered ``stochastic_times_smooth`` law."""

from __future__ import annotations

from relaxit.distributions._adapter import ProbsLogitsAdapter

__all__ = ["StochasticTimesSmooth"]


class StochasticTimesSmooth(ProbsLogitsAdapter):
    """Stochastic times smooth unit ``h = b sqrt(p)``, ``b ~ Bernoulli(sqrt(p))`` (Bengio et al. 2013, Sec. 3.3).

    relaxit 1.x's class, now ``relaxit.get("stochastic_times_smooth").distribution(probs=..., logits=...)``.
    Samples are ``0`` or ``sqrt(p)`` (as 1.x's ``rsample``; its ``sample`` drew ``Bernoulli(p)``,
    another law); ``log_prob`` is the PMF of that two-atom law (1.x returned the Bernoulli PMF,
    which scores values the law never takes).

    Args:
        probs: probabilities (give this or ``logits``).
        logits: log-odds.
        validate_args: torch's argument validation flag.
    """

    registry_name = "stochastic_times_smooth"
