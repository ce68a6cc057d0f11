"""Errors raised by relaxit.  Every one says what was wrong and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "RelaxitError",
    "UnknownEstimatorError",
    "ConfigError",
    "ParameterError",
    "ObjectiveError",
    "DuplicateEstimatorError",
    "PluginWarning",
    "NonFiniteGradientWarning",
    "EstimatorWarning",
]


class RelaxitError(Exception):
    """Base class of relaxit's errors."""


class UnknownEstimatorError(RelaxitError, KeyError):
    """No estimator is registered under the requested name.

    Subclasses :class:`KeyError` (and so :class:`LookupError`).  The message lists the
    closest registered names.
    """

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        close = difflib.get_close_matches(str(name), self.known, n=3, cutoff=0.5)
        msg = f"no estimator named {name!r} is registered."
        if close:
            msg += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        msg += f" Registered: {', '.join(self.known) or '(none)'}."
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class ConfigError(RelaxitError, ValueError):
    """A config failed validation.

    Keeps pydantic's field-level detail in :attr:`errors` (a list of dicts with ``loc``,
    ``msg``, ``type``), with each ``loc`` prefixed by the estimator name, and renders it as
    ``gumbel_softmax.tau: Input should be greater than 0``.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        self.errors = list(errors or [])
        lines = [message]
        for err in self.errors:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            lines.append(f"  {loc}: {err.get('msg', '')}" if loc else f"  {err.get('msg', '')}")
        super().__init__("\n".join(lines))

    @classmethod
    def from_validation_error(cls, exc: Any, prefix: str | None = None) -> ConfigError:
        """Wrap a :class:`pydantic.ValidationError`, prefixing each location with ``prefix``."""
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err.get("loc", ()))
            if prefix is not None:
                loc = (prefix, *loc)
            errors.append({"loc": loc, "msg": err.get("msg", ""), "type": err.get("type", "")})
        where = f" for estimator {prefix!r}" if prefix else ""
        return cls(f"invalid config{where} ({len(errors)} error(s)):", errors)


class ParameterError(RelaxitError, TypeError, ValueError):
    """Wrong tensor arguments to ``distribution`` or ``estimate``.

    Raised for an unknown argument name, both or neither of an either-or pair such as
    ``probs``/``logits``, or shapes that do not fit.  Subclasses both :class:`TypeError`
    (wrong arguments) and :class:`ValueError` (wrong values).
    """


class ObjectiveError(RelaxitError, TypeError, ValueError):
    """The objective given to ``estimate`` misbehaved: it returned something other than a
    floating-point tensor of shape ``[S, *B]``, or it changed its samples ``z`` in place
    (which would corrupt the gradient estimate and the returned samples).  Subclasses both
    :class:`TypeError` and :class:`ValueError`."""


class DuplicateEstimatorError(RelaxitError, ValueError):
    """Two providers registered estimators under one name."""


class NonFiniteGradientWarning(RuntimeWarning):
    """An estimator's own parameter (a learned control variate or temperature) received a
    non-finite gradient, e.g. from a NaN objective; that update was skipped (gradient set to 0)
    so that the estimator keeps working."""


class PluginWarning(UserWarning):
    """A plugin failed to load or returned something that is not an estimator; it is skipped."""


class EstimatorWarning(UserWarning):
    """An estimator's law is used where its estimator cannot run: e.g. a score-function law
    sampled at a guide site of one of Pyro's own ELBOs, which then applies Pyro's score
    function instead of the estimator (use :class:`relaxit.pyro.EstimatorELBO`)."""
