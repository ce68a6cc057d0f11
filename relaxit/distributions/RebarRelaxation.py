"""relaxit 1.x's ``RebarRelaxation``, over the relaxation law of the registered ``rebar`` estimator."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, scalar_or_tensor

__all__ = ["RebarRelaxation"]


class RebarRelaxation(Adapter):
    r"""REBAR's relaxed Bernoulli ``z = σ(((λ²+λ+1)/(λ(λ+1))) logit θ + logit(u)/λ)`` on ``(0, 1)``.

    relaxit 1.x's class, now ``relaxit.get("rebar").relaxation(probs=theta, tau=lambd)``
    (the relaxation of Tucker et al. 2017's code; ``shifted=False`` there gives the plain
    ``σ((logit θ + logit u)/λ)`` that the ``rebar`` estimator evaluates).  One uniform per
    element (1.x drew one for the whole batch), and ``log_prob`` is the density of this law
    (1.x's omitted the factor ``(λ²+λ+1)/(λ+1)`` and so scored a different law).

    Args:
        theta: Bernoulli probabilities θ in ``[0, 1]``.
        lambd: temperature λ > 0, a number or a tensor broadcast with ``theta``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "rebar"

    def __init__(self, theta: torch.Tensor, lambd: torch.Tensor, validate_args: bool | None = None):
        theta = as_tensor(theta)
        self.theta, self.lambd = theta, scalar_or_tensor(lambd, theta)
        self._adopt(built(validate_args, lambda: estimator(self.registry_name).relaxation(probs=theta, tau=self.lambd)))

    @classmethod
    def infer_shapes(cls, theta=(), lambd=()):
        return torch.broadcast_shapes(torch.Size(theta), torch.Size(lambd)), torch.Size()
