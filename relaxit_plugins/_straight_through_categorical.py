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

from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.distributions.utils import lazy_property

from relaxit_core.distributions import as_logits, gumbel_like

__all__ = ["OneHotStraightThrough", "one_hot_argmax"]


def one_hot_argmax(x: torch.Tensor) -> torch.Tensor:
    """The one-hot encoding of ``argmax(x, -1)`` in ``x``'s dtype (no gradient)."""
    index = x.argmax(-1, keepdim=True)
    return torch.zeros_like(x).scatter_(-1, index, 1.0)


class OneHotStraightThrough(TorchDistribution):
    """Base law: one-hot samples from ``Categorical(softmax(logits))`` with a straight-through
    ``rsample`` supplied by each subclass (:meth:`_surrogate`).

    ``sample`` and the forward value of ``rsample`` are ``one_hot(argmax(logits + g))``;
    ``rsample`` returns ``hard + (soft - soft.detach())`` (exactly ``hard`` in the forward
    pass) with ``soft`` from :meth:`_surrogate`.  ``log_prob(value) = <value, log softmax(logits)>``,
    the PMF of the one-hot value.

    Given ``logits``, the law keeps them as given (:attr:`raw_logits`) and normalises them
    lazily (the ``logits`` property, ``logits - logsumexp(logits)``): argmax, softmax and the
    surrogates here are invariant to a shift of the logits, so ``rsample`` never pays for the
    normalisation nor differentiates through it.  Subclasses list their hyperparameters in
    ``extra_attrs``; :meth:`expand` and pickling keep them.
    """

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(constraints.real, 1)}
    support = constraints.one_hot
    has_rsample = True
    has_enumerate_support = True
    extra_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
        **extra: Any,
    ):
        if (probs is None) == (logits is None):
            raise ValueError(
                f"{type(self).__name__}: give exactly one of `probs` or `logits`, not "
                + ("both" if probs is not None else "neither")
            )
        for key in self.extra_attrs:
            setattr(self, key, extra.pop(key))
        if extra:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(extra)}")
        param = probs if probs is not None else logits
        if param.dim() < 1:
            raise ValueError(f"{type(self).__name__}: `logits`/`probs` need at least one dimension (categories)")
        if probs is not None:
            self.probs = probs
        else:
            self._unnormalized = logits
        self._param = param
        super().__init__(param.shape[:-1], param.shape[-1:], validate_args=validate_args)
        if logits is not None and self._validate_args:
            # torch validates only parameters present in __dict__; `logits` is lazy here.  A NaN
            # makes the sum NaN, so one reduction screens the common case (a NaN sum may also
            # come from +inf and -inf, which the full check then accepts).
            total = logits.sum()
            if bool(total != total) and not bool(self.arg_constraints["logits"].check(logits).all()):
                raise ValueError(
                    f"Expected parameter logits ({type(logits).__name__} of shape {tuple(logits.shape)}) of "
                    f"distribution {type(self).__name__} to satisfy the constraint {self.arg_constraints['logits']}"
                )

    @property
    def raw_logits(self) -> torch.Tensor:
        """The logits as given (unnormalised), or ``log probs``: what ``rsample`` uses."""
        raw = self.__dict__.get("_unnormalized")
        return raw if raw is not None else self.logits

    @lazy_property
    def logits(self) -> torch.Tensor:
        raw = self.__dict__.get("_unnormalized")
        if raw is not None:
            return raw - raw.logsumexp(-1, keepdim=True)
        return as_logits(self.probs, 1)

    @lazy_property
    def probs(self) -> torch.Tensor:
        return self.raw_logits.softmax(-1)

    @property
    def param_shape(self) -> torch.Size:
        return self._param.shape

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        param_shape = batch_shape + self.event_shape
        for key in ("probs", "logits", "_unnormalized"):
            if key in self.__dict__:
                setattr(new, key, self.__dict__[key].expand(param_shape))
        new._param = self._param.expand(param_shape)
        for key in self.extra_attrs:
            setattr(new, key, getattr(self, key))
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, **arg_shapes):
        shape = torch.Size(arg_shapes.get("logits", arg_shapes.get("probs")))
        return shape[:-1], shape[-1:]

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
    return (p.probs * (p.logits - q.logits)).sum(-1)
