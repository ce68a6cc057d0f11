"""Laws that carry their estimator into probabilistic programs.

A score-function estimator's law is the plain discrete law (``Bernoulli``,
``OneHotCategorical``): sampled at a guide site of one of Pyro's own ELBOs it gets Pyro's
score-function gradient and the estimator never runs.  :meth:`relaxit_core.EstimatorBase.distribution`
therefore returns such laws as instances of a subclass that

- carries the estimator that built it (:func:`carried_estimator`), which
  :class:`relaxit.pyro.EstimatorELBO` uses for the site, and
- warns once per estimator (:class:`~relaxit_core.EstimatorWarning`) when Pyro samples it at
  a site outside :func:`estimator_inference` (the context an estimator-aware ELBO runs the
  guide in).  A site that ``TraceEnum_ELBO`` enumerates is never sampled, so it does not warn.

The subclass adds no state to tensors; it keeps the estimator through ``expand`` and pickling.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relaxit_core.errors import EstimatorWarning

__all__ = ["carry_estimator", "carried_estimator", "estimator_inference", "inside_estimator_inference"]

_state = threading.local()


@contextmanager
def estimator_inference() -> Iterator[None]:
    """Context in which laws that carry an estimator are sampled by an estimator-aware
    inference algorithm (no :class:`~relaxit_core.EstimatorWarning`)."""
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth


def inside_estimator_inference() -> bool:
    """Whether the current thread is inside :func:`estimator_inference`."""
    return getattr(_state, "depth", 0) > 0


class _CarriesEstimator:
    """Mixin of the law subclasses made by :func:`carry_estimator`."""

    _relaxit_estimator: Any = None

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)  # type: ignore[misc]
        new._relaxit_estimator = self._relaxit_estimator
        return new

    def __call__(self, *args: Any, **kwargs: Any):
        # Pyro's sample statement draws a site's value by calling its law.
        if not inside_estimator_inference():
            _warn_once(self._relaxit_estimator)
        return super().__call__(*args, **kwargs)  # type: ignore[misc]

    def __reduce__(self):
        state = dict(self.__dict__)
        est = state.pop("_relaxit_estimator", None)
        return (_rebuild, (_base_class(type(self)), state, est))


def _base_class(cls: type) -> type:
    return next(c for c in cls.__mro__[1:] if c is not _CarriesEstimator and not issubclass(c, _CarriesEstimator))


def _rebuild(base: type, state: dict, estimator: Any):
    law = base.__new__(base)
    law.__dict__.update(state)
    return carry_estimator(law, estimator)


def _warn_once(estimator: Any) -> None:
    if estimator is None or getattr(estimator, "_warned_outside_inference", False):
        return
    try:
        estimator._warned_outside_inference = True
    except AttributeError:  # pragma: no cover - a frozen third-party object
        pass
    name = getattr(estimator, "name", type(estimator).__name__)
    warnings.warn(
        f"a law of the score-function estimator {name!r} is sampled by a Pyro inference algorithm "
        f"that does not know it: Pyro applies its own score-function gradient and {name!r} never "
        "runs. Train with relaxit.pyro.EstimatorELBO (or enumerate the site with TraceEnum_ELBO).",
        EstimatorWarning,
        stacklevel=4,
    )


_SUBCLASSES: dict[type, type] = {}


def carry_estimator(law: Any, estimator: Any) -> Any:
    """``law`` (changed in place to a subclass of its own class) carrying ``estimator``.

    Only Pyro laws (callable at a sample site) are changed; anything else is returned as is.
    """
    cls = type(law)
    if not callable(getattr(cls, "__call__", None)) or not hasattr(cls, "expand"):
        return law
    if not issubclass(cls, _CarriesEstimator):
        sub = _SUBCLASSES.get(cls)
        if sub is None:
            sub = type(cls.__name__, (_CarriesEstimator, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
            _SUBCLASSES[cls] = sub
        law.__class__ = sub
    law._relaxit_estimator = estimator
    return law


def carried_estimator(law: Any) -> Any:
    """The estimator a law (or the base of a wrapped law: ``to_event``, ``expand``, ``mask``)
    carries, or ``None``."""
    seen = 0
    while law is not None and seen < 16:
        est = getattr(law, "_relaxit_estimator", None)
        if est is not None:
            return est
        law = getattr(law, "base_dist", None)
        seen += 1
    return None
