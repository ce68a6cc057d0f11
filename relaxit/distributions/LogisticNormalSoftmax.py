"""relaxit 1.x's ``LogisticNormalSoftmax``, over the registered ``logistic_normal`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator

__all__ = ["LogisticNormalSoftmax"]


class LogisticNormalSoftmax(Adapter):
    """Logistic normal on the simplex: ``x = softmax(loc + scale * eps)``, ``eps ~ N(0, I_K)``.

    relaxit 1.x's class, now ``relaxit.get("logistic_normal").distribution(loc=loc, scale=scale)``
    (``loc``, ``scale`` of shape ``[..., K]``; a 0-dimensional pair is read as ``K = 1``, as
    1.x did).  ``log_prob`` is the density w.r.t. Lebesgue measure on the first ``K - 1``
    coordinates (1.x's raised: softmax has no Jacobian determinant on ``R^K``).

    Args:
        loc: mean of the Gaussian, ``[..., K]``.
        scale: its standard deviation, ``[..., K]``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "logistic_normal"

    def __init__(self, loc, scale, validate_args: bool | None = None):
        loc = as_tensor(loc)
        scale = as_tensor(scale, loc)
        if loc.dim() == 0 and scale.dim() == 0:
            loc, scale = loc.reshape(1), scale.reshape(1)
        est = estimator(self.registry_name)
        self._adopt(built(validate_args, lambda: est.distribution(loc=loc, scale=scale)))

    @property
    def loc(self):
        return self.law.loc

    @property
    def scale(self):
        return self.law.scale

    @classmethod
    def infer_shapes(cls, loc=(), scale=()):
        shape = torch.broadcast_shapes(torch.Size(loc), torch.Size(scale))
        return shape[:-1], shape[-1:]
