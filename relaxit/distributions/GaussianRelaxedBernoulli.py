"""relaxit 1.x's ``GaussianRelaxedBernoulli``, over the registered ``gaussian_relaxed_bernoulli`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator

__all__ = ["GaussianRelaxedBernoulli"]


class GaussianRelaxedBernoulli(Adapter):
    """Clipped Gaussian gate ``z = clamp(loc + scale * eps, 0, 1)`` (Yamada et al. 2020, eq. 3).

    relaxit 1.x's class, now the law of ``relaxit.get("gaussian_relaxed_bernoulli")``:
    ``GaussianRelaxedBernoulli(loc, scale)`` is
    ``relaxit.get("gaussian_relaxed_bernoulli").distribution(loc=loc, sigma=scale)``, with
    ``scale`` a per-element tensor broadcast with ``loc``.  Noise is drawn per element and
    the gradient reaches ``scale`` too; the support is ``[0, 1]`` and ``log_prob`` is taken
    w.r.t. Lebesgue measure plus unit atoms at 0 and 1.

    Args:
        loc: mean of the Gaussian before clipping.
        scale: its standard deviation (``> 0``), broadcast with ``loc``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "gaussian_relaxed_bernoulli"

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        loc = as_tensor(loc)
        self.loc = loc
        self.scale = as_tensor(scale, loc)
        self._adopt(built(validate_args, lambda: estimator(self.registry_name).distribution(loc=loc, sigma=self.scale)))

    @classmethod
    def infer_shapes(cls, loc=(), scale=()):
        return torch.broadcast_shapes(torch.Size(loc), torch.Size(scale)), torch.Size()
