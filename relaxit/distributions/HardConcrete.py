"""relaxit 1.x's ``HardConcrete``, over the registered ``hard_concrete`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator

__all__ = ["HardConcrete"]


class HardConcrete(Adapter):
    """Hard concrete gate (Louizos et al. 2018, eqs. 9-10) with per-element hyper-parameters.

    relaxit 1.x's class, now the law of ``relaxit.get("hard_concrete")``:
    ``HardConcrete(alpha, beta, xi, gamma)`` is
    ``relaxit.get("hard_concrete").distribution(log_alpha=alpha.log(), beta=beta, gamma=gamma, zeta=xi)``
    (1.x's ``alpha`` is the paper's α, its ``xi`` the paper's ζ); all four are tensors
    broadcast together, so they can be learned per gate.  One uniform is drawn per element
    (1.x drew one for the whole batch); ``log_prob`` is w.r.t. Lebesgue measure plus unit
    atoms at 0 and 1.

    Args:
        alpha: α > 0 (location; ``log_alpha = log(alpha)``).
        beta: temperature β > 0.
        xi: upper stretch limit ζ > 1.
        gamma: lower stretch limit γ < 0.
        validate_args: torch's argument validation flag.
    """

    registry_name = "hard_concrete"

    def __init__(self, alpha: torch.Tensor, beta: torch.Tensor, xi: torch.Tensor, gamma: torch.Tensor,
                 validate_args: bool | None = None):
        alpha = as_tensor(alpha)
        self.alpha, self.beta = alpha, as_tensor(beta, alpha)
        self.xi, self.gamma = as_tensor(xi, alpha), as_tensor(gamma, alpha)
        est = estimator(self.registry_name)
        self._adopt(built(validate_args, lambda: est.distribution(
            log_alpha=alpha.log(), beta=self.beta, gamma=self.gamma, zeta=self.xi)))

    @classmethod
    def infer_shapes(cls, alpha=(), beta=(), xi=(), gamma=()):
        return torch.broadcast_shapes(*(torch.Size(s) for s in (alpha, beta, xi, gamma))), torch.Size()
