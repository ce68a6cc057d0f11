"""relaxit 1.x's ``InvertibleGaussian``, over the registered ``invertible_gaussian`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, plugin_module, scalar_or_tensor

__all__ = ["InvertibleGaussian"]


class InvertibleGaussian(Adapter):
    """Invertible Gaussian reparameterisation (Potapczynski et al. 2020, Sec. 3.1) on the ``K``-simplex.

    relaxit 1.x's class, now
    ``relaxit.get("invertible_gaussian").distribution(loc=loc, scale=scale, tau=temperature)``
    with ``δ = 1`` as in 1.x.  ``loc``, ``scale`` have shape ``[..., K-1]``; samples have
    ``K`` coordinates.  The batch shape is ``loc.shape[:-1]`` and the event shape ``(K,)``
    (1.x reported ``loc.shape`` and ``()``), so ``log_prob`` and ``kl_divergence`` have one
    value per simplex point: the joint density (1.x returned ``K - 1`` numbers that were not
    a density) and the exact KL, which depends on both temperatures (1.x's ignored them).
    A one-element ``temperature`` (1.x's ``torch.tensor([t])``) is a scalar; a larger tensor
    gives one temperature per batch element.

    Args:
        loc: Gaussian mean, ``[..., K-1]``.
        scale: Gaussian standard deviation, ``[..., K-1]``.
        temperature: τ > 0 of softmax++.
        validate_args: torch's argument validation flag.
    """

    registry_name = "invertible_gaussian"

    def __init__(self, loc, scale, temperature, validate_args: bool | None = None):
        loc = as_tensor(loc)
        scale = as_tensor(scale, loc)
        self.temperature = scalar_or_tensor(temperature, loc)
        est = estimator(self.registry_name)
        self._adopt(built(validate_args, lambda: est.distribution(loc=loc, scale=scale, tau=self.temperature)))

    @property
    def loc(self):
        return self.law.loc

    @property
    def scale(self):
        return self.law.scale

    def softmax_plus_plus(self, y: torch.Tensor, delta: float = 1) -> torch.Tensor:
        """softmax++ of ``y`` ``[..., K-1]`` at this law's temperature: the registered plugin's ``softmax_pp``."""
        t = self.law.temperature
        t = t.unsqueeze(-1) if isinstance(t, torch.Tensor) else t
        return plugin_module(self.registry_name).softmax_pp(y, t, delta)

    @classmethod
    def infer_shapes(cls, loc=(), scale=(), temperature=()):
        shape = torch.broadcast_shapes(torch.Size(loc), torch.Size(scale))
        t = torch.Size(temperature) if torch.Size(temperature).numel() != 1 else torch.Size()
        return torch.broadcast_shapes(shape[:-1], t), torch.Size((shape[-1] + 1,))
