"""Declared capabilities of an estimator (what its law and its ``estimate`` can do)."""

from __future__ import annotations

import enum

__all__ = ["Capability", "FAMILIES"]


class Capability(str, enum.Enum):
    """What an estimator can do.

    The class-level ``capabilities`` of an estimator is everything it can do under some
    config; an instance's ``capabilities`` is what it does under its own config.  The
    conformance kit (:mod:`relaxit_core.testing`) chooses its checks from these.
    """

    RSAMPLE = "rsample"
    """The law has a reparameterised ``rsample`` (pathwise gradients)."""
    SCORE_FUNCTION = "score_function"
    """``estimate`` uses ``log_prob`` of non-reparameterised samples (REINFORCE-type)."""
    LOG_PROB = "log_prob"
    """The law has a ``log_prob`` under the measure fixed by the contract for its support."""
    KL = "kl"
    """``torch.distributions.kl_divergence`` is registered for two laws of this estimator."""
    ENUMERATE_SUPPORT = "enumerate_support"
    """The law has a finite support listed by ``enumerate_support`` (torch's order)."""
    UNBIASED = "unbiased"
    """``E[d surrogate / d theta]`` equals the exact gradient of the discrete objective."""
    HARD = "hard"
    """Forward samples are exactly discrete (0/1, one-hot, k-hot or integer values)."""

    def __str__(self) -> str:  # "rsample", not "Capability.RSAMPLE", in tables and errors
        return self.value


#: The discrete targets an estimator may serve (see the contract).
FAMILIES: tuple[str, ...] = ("bernoulli", "categorical", "subset", "simplex", "integer")
