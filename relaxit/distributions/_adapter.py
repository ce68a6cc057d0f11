"""The base of the relaxit 1.x adapters: a Pyro law that delegates to a registered law.

An adapter keeps relaxit 1.x's class name, constructor signature and attribute names, and
builds the law of a registered estimator (``relaxit.get(name, ...).distribution(...)``);
sampling, scoring, shapes, support, ``expand`` and KL are the registered law's.  Nothing
here implements any law: an adapter is right wherever the registry's law is right.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import register_kl

__all__ = ["Adapter", "estimator", "plugin_module", "as_tensor", "scalar_or_tensor", "built"]


def built(validate_args: bool | None, make):
    """``make()`` with torch's argument validation set to ``validate_args`` (``None``: as it is),
    so that the registered law validates (or not) as relaxit 1.x's ``validate_args`` asked."""
    from torch.distributions import Distribution

    if validate_args is None:
        return make()
    old = Distribution._validate_args
    Distribution.set_default_validate_args(bool(validate_args))
    try:
        return make()
    finally:
        Distribution.set_default_validate_args(old)


def estimator(name: str, **config: Any):
    """The registered estimator ``name`` (through the facade, so through the registry).

    One instance per ``(name, config)`` is kept: the adapters only call its ``distribution()``
    (or ``relaxation()``), which reads the config and changes nothing, so a 1.x program that
    builds a law at every step does not validate the same config at every step."""
    return _cached_estimator(name, tuple(sorted(config.items())))


@functools.lru_cache(maxsize=128)
def _cached_estimator(name: str, config: tuple):
    import relaxit

    return relaxit.get(name, **dict(config))


def plugin_module(name: str):
    """The module of the plugin that registered ``name`` (for its public helpers, e.g. the
    Laplace bridge of ``logistic_normal``), found through the registry."""
    return importlib.import_module(type(estimator(name)).__module__)


def as_tensor(value: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """``value`` as a floating tensor (relaxit 1.x accepted numbers where it documented tensors);
    a tensor keeps its gradient, and its dtype when floating."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.to(like.dtype if like is not None else torch.get_default_dtype())
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(value, dtype=dtype, device=device)


def scalar_or_tensor(value: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """A hyper-parameter tensor: one with a single element becomes 0-dimensional (relaxit 1.x
    wrote temperatures as ``torch.tensor([t])``, which then broadcasts against any batch)."""
    t = as_tensor(value, like)
    return t.reshape(()) if t.numel() == 1 else t


class Adapter(TorchDistribution):
    """A relaxit 1.x class name over the registered law ``self.law``.

    Subclasses build the law in ``__init__`` and call ``_adopt``.  Everything a law does
    (``rsample``, ``sample``, ``log_prob``, ``enumerate_support``, ``mean``, ``variance``,
    ``entropy``, ``support``, shapes, ``expand``, pickling, ``kl_divergence`` between two
    adapters) is the registered law's.
    """

    registry_name: ClassVar[str] = ""
    """The registry key of the estimator whose law this class adapts."""
    arg_constraints: ClassVar[dict] = {}  # the registered law validates its own arguments
    has_rsample = True

    def _adopt(self, law) -> None:
        self.law = law
        super().__init__(law.batch_shape, law.event_shape, validate_args=False)
        self._validate_args = law._validate_args

    # ------------------------------------------------------------------ the law's
    @property
    def support(self):
        return self.law.support

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return bool(self.law.has_enumerate_support)

    def rsample(self, sample_shape=torch.Size()):
        return self.law.rsample(torch.Size(sample_shape))

    def sample(self, sample_shape=torch.Size()):
        return self.law.sample(torch.Size(sample_shape))

    def log_prob(self, value):
        return self.law.log_prob(value)

    def enumerate_support(self, expand: bool = True):
        return self.law.enumerate_support(expand)

    @property
    def mean(self):
        return self.law.mean

    @property
    def variance(self):
        return self.law.variance

    def entropy(self):
        return self.law.entropy()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "law"})
        new._adopt(self.law.expand(torch.Size(batch_shape)))
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(law={self.law!r})"


class ProbsLogitsAdapter(Adapter):
    """An adapter of a law parametrised by ``probs`` or ``logits`` (1.x's Bernoulli-type
    classes): ``__init__(probs=None, logits=None, validate_args=None)``, with both readable
    from the registered law."""

    def __init__(self, probs: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                 validate_args: bool | None = None):
        est = estimator(self.registry_name)
        self._adopt(built(validate_args, lambda: est.distribution(probs=probs, logits=logits)))

    @property
    def probs(self):
        return self.law.probs

    @property
    def logits(self):
        return self.law.logits

    @classmethod
    def infer_shapes(cls, probs=None, logits=None):
        return torch.Size(probs if probs is not None else logits), torch.Size()


@register_kl(Adapter, Adapter)
def _kl_adapters(p: Adapter, q: Adapter) -> torch.Tensor:
    """KL between two adapters: the KL between their registered laws."""
    return torch.distributions.kl_divergence(p.law, q.law)
