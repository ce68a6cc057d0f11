"""relaxit 1.x's ``GeneralizedGumbelSoftmax`` and ``GeneralizedGumbelSoftmaxNP``, over the
registered ``generalized_gumbel_softmax`` law."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from relaxit_core.distributions import simplex

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, scalar_or_tensor

__all__ = ["GeneralizedGumbelSoftmax", "GeneralizedGumbelSoftmaxNP"]


class GeneralizedGumbelSoftmax(Adapter):
    r"""Generalized Gumbel-softmax (Joo et al. 2020): weights over ``values`` and the relaxed value.

    relaxit 1.x's class over
    ``relaxit.get("generalized_gumbel_softmax", hard=hard).distribution(probs=..., values=values, tau=tau)``.
    As in 1.x, ``rsample()`` returns the weights ``softmax((logits + g)/τ)`` over ``values``
    (one-hot forward with ``hard=True``), ``rsample_value()`` the relaxed value
    ``Σ_k w_k v_k`` — the registered law's sample, drawn with the same noise — and
    ``weights_to_values`` maps one to the other.  This law is the law of the weights:
    batch shape ``probs.shape[:-1]``, event shape ``(K,)``.  ``log_prob`` takes one-hot
    weights and returns the probability of the selected value under the discrete law being
    relaxed (1.x's ``Σ_k w_k log π_k`` there); relaxed weights have no density here and raise.
    ``probs`` are normalised over the last dimension (as 1.x did); ``values`` must be strictly
    increasing integers (the registered law's family).

    Args:
        values: the support ``[K]`` or ``[..., K]``.
        probs: category probabilities (give this or ``logits``).
        logits: category logits.
        tau: temperature τ > 0, a number or one temperature per batch element.
        hard: straight-through (forward exactly one-hot) when ``True``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "generalized_gumbel_softmax"

    def __init__(self, values: torch.Tensor, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                 tau: torch.Tensor = torch.tensor(0.5), hard: bool = False, validate_args: bool | None = None):
        if (probs is None) == (logits is None):
            raise ValueError("GeneralizedGumbelSoftmax: pass either `probs` or `logits`, but not both")
        param = as_tensor(probs if probs is not None else logits)
        self.values = as_tensor(values, param)
        self.tau, self.hard = scalar_or_tensor(tau, param), bool(hard)
        self._hard_est = estimator(self.registry_name, hard=True)
        est = self._hard_est if self.hard else estimator(self.registry_name, hard=False)
        if probs is not None:
            self._args = {"probs": param / param.sum(-1, keepdim=True)}
        else:
            self._args = {"logits": param}
        self._adopt(built(validate_args, lambda: est.distribution(values=self.values, tau=self.tau, **self._args)))

    def _adopt(self, law) -> None:
        self.law = law
        k = law.values.shape[-1]
        super(Adapter, self).__init__(law.batch_shape, torch.Size((k,)), validate_args=False)
        self._validate_args = law._validate_args

    @property
    def probs(self):
        return self.law.probs

    @property
    def logits(self):
        return self.law.logits

    @property
    def support(self):
        return constraints.one_hot if self.hard else simplex

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return False

    def weights_to_values(self, gumbel_weights: torch.Tensor) -> torch.Tensor:
        """``Σ_k w_k v_k``: soft or one-hot weights to values."""
        return (gumbel_weights * self.law.values).sum(-1)

    def rsample(self, sample_shape=torch.Size()):
        return self.law.rsample_weights(torch.Size(sample_shape))

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_value(self, sample_shape=torch.Size()):
        """The relaxed value of one draw (the registered law's ``rsample``)."""
        return self.weights_to_values(self.rsample(sample_shape))

    def sample_value(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample_value(sample_shape)

    def log_prob(self, value):
        one_hot = (value == 0) | (value == 1)
        if not bool(one_hot.all()) or not bool((value.sum(-1) == 1).all()):
            raise ValueError(
                "GeneralizedGumbelSoftmax.log_prob takes one-hot weights (it is the probability of the "
                "selected value); relaxed weights have no density here"
            )
        discrete = self._hard_est.distribution(values=self.law.values, **self._law_args())
        return discrete.log_prob(self.weights_to_values(value))

    def _law_args(self):
        law = self.law
        return {"probs": law.probs} if "probs" in law.__dict__ else {"logits": law.logits}

    @property
    def mean(self):
        """With ``hard=True`` the one-hot weights' mean, the category probabilities."""
        if not self.hard:
            raise NotImplementedError("the mean of relaxed Gumbel-softmax weights has no closed form")
        return self.law.probs.expand(self.batch_shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "law"})
        GeneralizedGumbelSoftmax._adopt(new, self.law.expand(torch.Size(batch_shape)))
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, values=(), probs=None, logits=None, tau=()):
        param = torch.Size(probs if probs is not None else logits)
        t = torch.Size(tau) if torch.Size(tau).numel() != 1 else torch.Size()
        return torch.broadcast_shapes(param[:-1], torch.Size(values)[:-1], t), param[-1:]


class GeneralizedGumbelSoftmaxNP(GeneralizedGumbelSoftmax):
    """Generalized Gumbel-softmax of a law given as an object with ``log_prob`` or ``prob``.

    relaxit 1.x's class: the probabilities of ``dist`` at ``values`` (its ``log_prob``, else
    its ``prob``), optionally cut after the smallest prefix of ``values`` whose cumulative
    probability exceeds ``eta`` (the longest such prefix over the batch), renormalised over
    the kept values — the mass of ``dist`` outside them is dropped, as in 1.x
    (``relaxit_plugins.generalized_gumbel_softmax.truncate`` chooses the support for a
    given dropped mass instead).  The law is then :class:`~relaxit.distributions.GeneralizedGumbelSoftmax`'s.

    Args:
        dist: a distribution with ``log_prob(values)`` or ``prob(values)``.
        values: the candidate support ``[K]`` (strictly increasing integers).
        tau: temperature τ > 0.
        eta: optional cumulative-probability cut-off.
        hard: straight-through when ``True``.
    """

    def __init__(self, dist, values: torch.Tensor, tau: torch.Tensor = torch.tensor(0.5), eta: float | None = None,
                 hard: bool = False):
        if hasattr(dist, "log_prob"):
            log_p = dist.log_prob(values)
        elif hasattr(dist, "prob"):
            log_p = dist.prob(values).log()
        else:
            raise TypeError("GeneralizedGumbelSoftmaxNP: `dist` must implement `.log_prob(values)` or `.prob(values)`")
        if eta is not None:
            cum = log_p.exp().cumsum(-1)
            keep = (cum <= eta).sum(-1) + 1  # the prefix up to the first value past eta
            n = int(keep.max().clamp(max=log_p.shape[-1]))
            values, log_p = values[..., :n], log_p[..., :n]
        self.dist, self.eta = dist, eta
        super().__init__(values=values, logits=log_p, tau=tau, hard=hard)
