"""relaxit 1.x's ``GumbelSoftmaxTopK``, over the registered ``gumbel_topk`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, scalar_or_tensor

__all__ = ["GumbelSoftmaxTopK"]


class GumbelSoftmaxTopK(Adapter):
    """``K`` draws without replacement as a (relaxed) k-hot vector (Gumbel top-k; Kool et al. 2019).

    relaxit 1.x's class, now ``relaxit.get("gumbel_topk", k=K, hard=hard).distribution(logits=..., tau=tau)``.
    ``probs`` are read as positive weights (the law uses ``log probs``; they need not sum to
    one), never as logits (1.x perturbed the probabilities themselves).  The batch shape is
    ``probs.shape[:-1]`` and the event shape ``(n,)`` (1.x reported ``probs.shape`` and
    ``()``); with ``hard=True`` (the default) and ``K <= 7`` ``log_prob`` is the exact
    probability of the k-subset (1.x returned per-coordinate Bernoulli log-likelihoods).
    ``K`` is one integer for the whole law; ``tau`` a number or one temperature per batch
    element.

    Args:
        probs: positive item weights ``[..., n]`` (give this or ``logits``).
        logits: item logits ``[..., n]``.
        K: subset size (an integer or a one-element tensor).
        tau: temperature τ > 0.
        hard: forward exactly k-hot (straight-through) when ``True``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "gumbel_topk"

    def __init__(self, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                 K: torch.Tensor = torch.tensor(1), tau: torch.Tensor = torch.tensor(0.1), hard: bool = True,
                 validate_args: bool | None = None):
        if (probs is None) == (logits is None):
            raise ValueError("GumbelSoftmaxTopK: pass `probs` or `logits`, but not both of them")
        param = as_tensor(probs if probs is not None else logits)
        if isinstance(K, torch.Tensor) and K.numel() != 1:
            raise ValueError(f"GumbelSoftmaxTopK: K must be one integer, got a tensor of shape {tuple(K.shape)}")
        k = int(K)
        self.K, self.tau, self.hard = torch.as_tensor(k), scalar_or_tensor(tau, param), bool(hard)
        est = estimator(self.registry_name, k=k, hard=self.hard)

        def make():
            if probs is not None:
                if torch.distributions.Distribution._validate_args and not bool((param >= 0).all()):
                    raise ValueError("GumbelSoftmaxTopK: argument 'probs' must be non-negative weights")
                return est.distribution(logits=param.log(), tau=self.tau)
            return est.distribution(logits=param, tau=self.tau)

        self._adopt(built(validate_args, make))

    @property
    def logits(self):
        return self.law.logits

    @property
    def probs(self):
        return self.law.probs

    @classmethod
    def infer_shapes(cls, probs=None, logits=None, K=(), tau=()):
        shape = torch.Size(probs if probs is not None else logits)
        t = torch.Size(tau) if torch.Size(tau).numel() != 1 else torch.Size()
        return torch.broadcast_shapes(shape[:-1], t), shape[-1:]
