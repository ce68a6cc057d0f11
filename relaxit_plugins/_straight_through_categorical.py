"""Shared law of the straight-through categorical family (``st_categorical``, ``gumbel_rao``,
``reinmax``, ``decoupled_st_gumbel_softmax``).

Every law here has exactly one-hot forward samples ``D`` drawn from ``Categorical(softmax(logits))``
by the Gumbel-max trick (``D = one_hot(argmax(logits + g))``, ``g`` i.i.d. standard Gumbel;
Gumbel 1954, Maddison et al. 2014), and differs only in the surrogate whose gradient the
backward pass uses.  Following the contract for straight-through laws, ``log_prob`` is the
probability mass function of the hard value, ``enumerate_support`` lists the rows of
``eye(K)`` and ``kl_divergence`` between two such laws is the categorical KL.

This is a private helper module of the family; the plugin modules import it, nothing else does.
"""

from __future__ import annotations


import torch
from torch.distributions import constraints, register_kl

from relaxit_core.distributions import CategoricalLogitsDistribution, categorical_kl, gumbel_like

__all__ = ["OneHotStraightThrough", "one_hot_argmax"]


def one_hot_argmax(x: torch.Tensor) -> torch.Tensor:
    """The one-hot encoding of ``argmax(x, -1)`` in ``x``'s dtype (no gradient)."""
    index = x.argmax(-1, keepdim=True)
    return torch.zeros_like(x).scatter_(-1, index, 1.0)


class OneHotStraightThrough(CategoricalLogitsDistribution):
    """Base law: one-hot samples from ``Categorical(softmax(logits))`` with a straight-through
    ``rsample`` supplied by each subclass (:meth:`_surrogate`).

    ``sample`` and the forward value of ``rsample`` are ``one_hot(argmax(logits + g))``;
    ``rsample`` returns ``hard + (soft - soft.detach())`` (exactly ``hard`` in the forward
    pass) with ``soft`` from :meth:`_surrogate`.  ``log_prob(value) = <value, log softmax(logits)>``,
    the PMF of the one-hot value.

    The core's :class:`~relaxit_core.distributions.CategoricalLogitsDistribution` keeps the
    logits as given (:attr:`raw_logits`) and normalises them lazily: argmax, softmax and the
    surrogates here are invariant to a shift of the logits, so ``rsample`` never pays for the
    normalisation nor differentiates through it.  Subclasses list their hyperparameters in
    ``extra_attrs``; ``expand`` and pickling keep them.
    """

    support = constraints.one_hot
    has_rsample = True
    has_enumerate_support = True

    @property
    def raw_logits(self) -> torch.Tensor:
        """The logits as given (unnormalised), or ``log probs``: what ``rsample`` uses."""
        return self.unnormalized_logits

    def _hard(self, sample_shape) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot Gumbel-max samples ``one_hot(argmax(logits + g))`` of shape
        ``sample_shape + batch_shape + event_shape`` and the Gumbel noise ``g`` (no gradient)."""
        logits = self.raw_logits.detach()
        g = gumbel_like(self._extended_shape(torch.Size(sample_shape)), logits)
        return one_hot_argmax(logits + g), g

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self._hard(sample_shape)[0]

    def _surrogate(self, hard: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The tensor whose gradient the backward pass of ``rsample`` uses (with ``hard`` and
        the Gumbel ``noise`` of the forward sample)."""
        raise NotImplementedError

    def rsample(self, sample_shape=torch.Size()):
        hard, noise = self._hard(sample_shape)
        soft = self._surrogate(hard, noise)
        return hard + (soft - soft.detach())

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return (logits * value).sum(-1)

    def enumerate_support(self, expand=True):
        k = self.event_shape[0]
        values = torch.eye(k, dtype=self._param.dtype, device=self._param.device)
        values = values.view((k,) + (1,) * len(self.batch_shape) + (k,))
        return values.expand((k,) + self.batch_shape + (k,)) if expand else values

    def entropy(self):
        return -(self.probs * self.logits).sum(-1)

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return one_hot_argmax(self.probs)

    @property
    def variance(self):
        return self.probs * (1 - self.probs)


@register_kl(OneHotStraightThrough, OneHotStraightThrough)
def _kl_one_hot_straight_through(p, q):
    """KL of the two categorical laws of the hard values: ``sum_k p_k (log p_k - log q_k)``."""
    return categorical_kl(p.logits.log_softmax(-1), q.logits.log_softmax(-1))  # 0 log 0 = 0 at masked categories
