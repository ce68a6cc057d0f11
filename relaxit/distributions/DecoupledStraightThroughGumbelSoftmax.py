"""relaxit 1.x's ``DecoupledStraightThroughGumbelSoftmax``, over the registered ``decoupled_st_gumbel_softmax`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, scalar_or_tensor

__all__ = ["DecoupledStraightThroughGumbelSoftmax"]


class DecoupledStraightThroughGumbelSoftmax(Adapter):
    """Decoupled straight-through Gumbel-softmax (Shah et al. 2024): one-hot forward, separate temperatures.

    relaxit 1.x's class, now ``relaxit.get("decoupled_st_gumbel_softmax").distribution(logits=...,
    tau_forward=temperature_forward, tau_backward=temperature_backward)``.  The forward
    temperature tempers the law of the one-hot sample, ``Categorical(softmax(logits / τ_f))``
    (1.x's had no effect: an argmax ignores a positive factor); the backward temperature is
    that of the Gumbel-softmax whose gradient is used.  ``log_prob`` is the PMF of that
    categorical law, and ``enumerate_support`` has torch's layout ``[K, *batch_shape, K]``
    (1.x's put the support after the batch dimensions).

    Args:
        temperature_forward: τ_f > 0.
        temperature_backward: τ_b > 0.
        logits: event logits ``[..., K]`` (give this or ``probs``).
        probs: event probabilities.
        validate_args: torch's argument validation flag.
    """

    registry_name = "decoupled_st_gumbel_softmax"

    def __init__(self, temperature_forward, temperature_backward, logits=None, probs=None,
                 validate_args: bool | None = None):
        if (probs is None) == (logits is None):
            raise ValueError("DecoupledStraightThroughGumbelSoftmax: pass `probs` or `logits`, but not both of them")
        param = as_tensor(probs if probs is not None else logits)
        self.temperature_forward = scalar_or_tensor(temperature_forward, param)
        self.temperature_backward = scalar_or_tensor(temperature_backward, param)
        est = estimator(self.registry_name)
        key = "probs" if probs is not None else "logits"
        self._adopt(built(validate_args, lambda: est.distribution(
            **{key: param}, tau_forward=self.temperature_forward, tau_backward=self.temperature_backward)))

    @property
    def logits(self):
        return self.law.logits

    @property
    def probs(self):
        return self.law.probs

    @classmethod
    def infer_shapes(cls, temperature_forward=(), temperature_backward=(), logits=None, probs=None):
        shape = torch.Size(logits if logits is not None else probs)
        ts = [torch.Size(t) for t in (temperature_forward, temperature_backward) if torch.Size(t).numel() != 1]
        return torch.broadcast_shapes(shape[:-1], *ts), shape[-1:]
