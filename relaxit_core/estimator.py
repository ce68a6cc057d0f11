"""The estimator protocol, its base class and the one shared ``estimate``."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from pydantic import ValidationError

from relaxit_core.capabilities import FAMILIES, Capability
from relaxit_core.config import EstimatorConfig, family_choices, require_family
from relaxit_core.errors import ConfigError, NonFiniteGradientWarning, ObjectiveError, ParameterError
from relaxit_core.inference import carry_estimator
from relaxit_core.limits import Limits, check_probs, find_limits, is_compiling
from relaxit_core.schedules import ScheduleBase, is_temperature_field
from relaxit_core.surrogate import score_function_surrogate

__all__ = ["Estimate", "Draw", "GradientEstimator", "EstimatorBase", "Objective"]

Objective = Callable[[torch.Tensor], torch.Tensor]
"""A loss: samples ``z`` of shape ``[S, *batch_shape, *event_shape]`` -> ``[S, *B]``."""

_SNAKE_HEAD = frozenset("abcdefghijklmnopqrstuvwxyz")
_SNAKE_TAIL = _SNAKE_HEAD | frozenset("0123456789_")


def _is_snake(name: str) -> bool:
    """``[a-z][a-z0-9_]*`` (a set test: no pattern compiled at import)."""
    return bool(name) and name[0] in _SNAKE_HEAD and all(c in _SNAKE_TAIL for c in name)


class Estimate(NamedTuple):
    """What :meth:`GradientEstimator.estimate` returns.

    Attributes:
        surrogate: shape ``B``; its forward value equals ``value`` and its ``backward()``
            puts the estimator's gradient estimate into the distribution parameters (and
            the Monte Carlo gradient into the objective's own parameters).
        value: shape ``B``, detached Monte Carlo mean of ``objective(z)`` (with
            ``reduce="logmeanexp"``, the multi-sample bound ``log mean_s exp(objective(z)_s)``).
        samples: the samples ``z`` the objective was evaluated on (first dimension ``S``).
    """

    surrogate: torch.Tensor
    value: torch.Tensor
    samples: torch.Tensor


class Draw(NamedTuple):
    """What :meth:`EstimatorBase.draw` returns: the samples at which to evaluate the costs, and
    whatever the estimator needs besides them to build its surrogate (``None`` for plain
    i.i.d. draws)."""

    samples: torch.Tensor
    state: Any = None


_IN_ESTIMATE: ContextVar[tuple[int, tuple[Any, ...]] | None] = ContextVar("relaxit_in_estimate", default=None)
"""While an estimator's ``estimate`` runs behind :func:`guard_estimate`: the estimator's id and
the (checked) keyword arguments it was given, so that its own ``distribution()`` and a nested
``super().estimate`` do not check those tensors again."""


def guard_estimate(fn: Callable[..., Estimate]) -> Callable[..., Estimate]:
    """Wrap an ``estimate`` method with the core's argument checks (applied automatically to
    every :class:`EstimatorBase` subclass that defines ``estimate``).

    Before the estimator runs: argument names and dtypes are checked, non-finite parameters
    follow the contract's rule (:mod:`relaxit_core.limits`: limits replaced by finite
    stand-ins, refused values raise :class:`~relaxit_core.ParameterError`), and the objective
    is wrapped so that it sees the limits and may not change its samples in place
    (:class:`~relaxit_core.ObjectiveError`).  Returned samples hold the limits.  A nested call
    (``super().estimate``) runs unguarded.
    """
    if getattr(fn, "__relaxit_guarded__", False):
        return fn

    @functools.wraps(fn)
    def estimate(self: Any, objective: Objective, *args: Any, **kwargs: Any) -> Estimate:
        if is_compiling():  # no host sync and no data-dependent branch while tracing
            return _run_guarded(fn, self, objective, args, kwargs, compiling=True)
        active = _IN_ESTIMATE.get()
        if active is not None and active[0] == id(self):  # super().estimate: checked already
            return fn(self, objective, *args, **kwargs)
        if _one_finite_tensor(self, kwargs):  # the common case: the same checks, less work
            if self._parameters or self._modules:
                protect_parameters(self, self.name)
            token = _IN_ESTIMATE.set((id(self), tuple(kwargs.values())))
            try:
                return fn(self, checked_objective(objective, self.name), *args, **kwargs)
            finally:
                _IN_ESTIMATE.reset(token)
        return _run_guarded(fn, self, objective, args, kwargs, compiling=False)

    estimate.__relaxit_guarded__ = True  # type: ignore[attr-defined]
    return estimate


_guarded = guard_estimate


def _run_guarded(fn: Callable[..., Estimate], self: Any, objective: Objective, args: tuple, kwargs: dict,
                 *, compiling: bool) -> Estimate:
    params = {k: kwargs[k] for k in getattr(self, "params", ()) if kwargs.get(k) is not None}
    limits: Limits | None = None
    if params and hasattr(self, "check_params"):
        checked = self.check_params(params)
        limits = find_limits(self, checked, num_samples=kwargs.get("num_samples"))
        if "probs" in checked:
            check_probs(self, checked)
        if limits is not None:
            kwargs = {**kwargs, **limits.params}
        elif any(checked[k] is not params[k] for k in checked):  # numbers given: pass the tensors made of them
            kwargs = {**kwargs, **checked}
    name = getattr(self, "name", type(self).__name__)
    wrapped = checked_objective(objective, name, limits, compiling=compiling)
    if compiling:
        out = fn(self, wrapped, *args, **kwargs)
    else:
        if isinstance(self, torch.nn.Module) and (self._parameters or self._modules):
            protect_parameters(self, name)
        token = _IN_ESTIMATE.set((id(self), tuple(kwargs.values())))
        try:
            out = fn(self, wrapped, *args, **kwargs)
        finally:
            _IN_ESTIMATE.reset(token)
    if limits is not None and isinstance(out, tuple) and len(out) == 3:
        out = Estimate(out[0], out[1], limits.fix(out[2]))
    return out


def _one_finite_tensor(self: Any, kwargs: dict) -> bool:
    """Whether a call is the common case that :func:`guard_estimate` checks with as little work
    as possible: an :class:`EstimatorBase` given exactly one of its tensor arguments (not
    ``probs``, whose values have their own check), a floating-point tensor whose name
    :meth:`EstimatorBase.check_params` has accepted before, with every entry finite (one sum
    read as a number: a finite sum proves every entry finite; one host sync).  Everything
    else (a number, a NaN, a limit, a sum that overflows, several arguments) goes through
    :func:`_run_guarded`'s full checks, which decide it exactly as before."""
    valid = getattr(self, "_valid_names", None)
    if not valid:  # not an EstimatorBase, or no call checked yet
        return False
    key = value = None
    for k in self.params:
        v = kwargs.get(k)
        if v is not None:
            if key is not None:
                return False
            key, value = k, v
    return (
        key is not None
        and key != "probs"
        and isinstance(value, torch.Tensor)
        and ((key, False),) in valid
        and value.is_floating_point()
        and not value.is_meta
        and math.isfinite(value.detach().sum().item())
    )


_PROTECTED: dict[int, weakref.ref] = {}  # id -> parameter with the hook (tensors compare elementwise: no WeakSet)


def protect_parameters(module: torch.nn.Module, name: str) -> None:
    """Make every trainable parameter of an estimator skip a non-finite update: a gradient hook
    replaces a gradient with a NaN or infinite entry by zeros and warns
    (:class:`~relaxit_core.NonFiniteGradientWarning`), so that one NaN objective cannot poison a
    learned control variate for every later call.  Installed once per parameter."""
    for pname, p in module.named_parameters():
        ref = _PROTECTED.get(id(p))
        if p.requires_grad and (ref is None or ref() is not p):
            p.register_hook(_FiniteGradient(name, pname))
            key = id(p)
            _PROTECTED[key] = weakref.ref(p, lambda _, key=key: _PROTECTED.pop(key, None))


class _FiniteGradient:
    def __init__(self, name: str, pname: str):
        self.name, self.pname = name, pname

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        if is_compiling():
            return torch.where(torch.isfinite(grad).all(), grad, torch.zeros_like(grad))
        if bool(torch.isfinite(grad).all()):
            return grad
        warnings.warn(
            f"{self.name}: its own parameter {self.pname!r} received a non-finite gradient (from a "
            "non-finite objective or score); that update is skipped (gradient set to 0)",
            NonFiniteGradientWarning, stacklevel=2,
        )
        return torch.zeros_like(grad)


@contextlib.contextmanager
def _validation(on: bool):
    prev = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(on)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(prev)


_IN_PLACE = (
    "{name}: the objective changed its samples z in place{op}, e.g. with z.mul_(...), z += ..., "
    "z[...] = ... or an out= argument; that would corrupt the gradient estimate and the "
    "returned samples. Compute on a copy instead (z = z.clone(), or out-of-place operations "
    "such as z * 2)"
)


def checked_objective(objective: Objective, name: str, limits: Limits | None = None, *,
                      compiling: bool = False) -> Objective:
    """``objective`` evaluated at the limits of ``limits``, refusing in-place changes of its
    samples: an objective that changes ``z`` in place (``z.mul_(2)``, ``z[..., 0] = 0``)
    would silently corrupt the score of ``z`` and the returned samples.  The check reads the
    tensor's version counter (O(1), no copy)."""
    if compiling:
        return limits.wrap(objective) if limits is not None else objective

    def call(z: torch.Tensor) -> Any:
        if limits is not None:
            z = limits.fix(z)
        version, grad_fn = z._version, z.grad_fn
        try:
            f = objective(z)
        except RuntimeError as exc:  # torch refuses in-place changes of a leaf that needs a gradient
            if z.is_leaf and z.requires_grad and "in-place operation" in str(exc):
                raise ObjectiveError(_IN_PLACE.format(name=name, op="")) from exc
            raise
        if not isinstance(f, torch.Tensor):
            raise ObjectiveError(f"{name}: the objective must return a tensor, got {type(f).__name__}")
        if not f.is_floating_point():
            raise ObjectiveError(
                f"{name}: the objective returned a {f.dtype} tensor; it must return a floating-point "
                "loss per sample (convert it, e.g. with .to(z.dtype))"
            )
        if z._version != version:
            op = ""
            if z.grad_fn is not None and z.grad_fn is not grad_fn:
                op = f" (autograd recorded {type(z.grad_fn).__name__})"
            raise ObjectiveError(_IN_PLACE.format(name=name, op=op))
        return f

    return call


def attach_limits(law: Any, name: str, stand_in: Any, limits: Limits) -> None:
    """Give ``law`` (built with arguments at a limit) :class:`LimitLogProb` as its ``log_prob``,
    and an ``expand`` that gives the expanded law the same (Pyro expands a law in a plate)."""
    law.log_prob = LimitLogProb(name, law, stand_in, limits)
    law.expand = LimitExpand(law, name, stand_in, limits)
    if stand_in is not None and (not law.event_shape or not limits._masks):
        law.entropy = LimitEntropy(stand_in, limits)


class LimitEntropy:
    """``entropy`` of a discrete law with Bernoulli-type entries at a limit: the stand-in law's,
    0 at those entries (a certain outcome; torch's ``Bernoulli.entropy`` is ``inf - inf = NaN``
    at logits ``±inf``).  Masked categories need nothing: their stand-in's probability is 0."""

    def __init__(self, stand_in: Any, limits: Limits):
        self.stand_in, self.limits = stand_in, limits

    def __call__(self) -> torch.Tensor:
        h = self.stand_in.entropy()
        for mask, _ in self.limits._masks:
            h = torch.where(mask, torch.zeros_like(h), h)
        return h


class LimitExpand:
    """``expand`` of a law with :class:`LimitLogProb`: the law's own ``expand``, then the
    expanded law gets ``LimitLogProb`` too (an instance's ``log_prob`` is not copied by torch's
    ``expand``: the PMF at a limit was NaN once a plate had expanded the law)."""

    def __init__(self, law: Any, name: str, stand_in: Any, limits: Limits):
        self.law, self.name, self.stand_in, self.limits = law, name, stand_in, limits

    def __call__(self, batch_shape: Any, _instance: Any = None) -> Any:
        new = type(self.law).expand(self.law, batch_shape, _instance)
        stand_in = None if self.stand_in is None else self.stand_in.expand(batch_shape)
        attach_limits(new, self.name, stand_in, self.limits)
        return new


class LimitLogProb:
    """``log_prob`` of a law whose logits hold limits (set by :meth:`EstimatorBase.distribution`).

    For a law with ``HARD`` samples it is the PMF: computed on the law with the finite
    stand-ins, with the limits' own mass (0 or ``-inf`` in log) at their entries.  For a
    relaxed law (``stand_in`` is ``None``) the limit has no density: it raises
    :class:`~relaxit_core.ParameterError`.
    """

    def __init__(self, name: str, law: Any, stand_in: Any, limits: Limits):
        self.name, self.law, self.stand_in, self.limits = name, law, stand_in, limits

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        names = ", ".join(map(repr, self.limits.names))
        if self.stand_in is None:
            raise ParameterError(
                f"{self.name}: log_prob of a relaxed law with infinite {names} (a limit) has no "
                "density under the law's base measure; give finite logits, or use a law with "
                "HARD samples (its log_prob is the PMF)"
            )
        lp = self.stand_in.log_prob(value)
        event = len(self.law.event_shape)
        for mask, limit in self.limits._masks:  # Bernoulli-type entries: elementwise
            if event:
                raise ParameterError(
                    f"{self.name}: log_prob at infinite {names} is not available for a law with "
                    f"event_shape {tuple(self.law.event_shape)}"
                )
            at = torch.where(value == limit.to(value.dtype), torch.zeros_like(lp), torch.full_like(lp, -math.inf))
            lp = torch.where(mask, at, lp)
        for key in self.limits.names:
            masked = getattr(self.limits, "row_masks", {}).get(key)
            if masked is None:
                continue
            if event != 1 or value.shape[-1:] != masked.shape[-1:]:
                raise ParameterError(
                    f"{self.name}: log_prob at -inf entries of {key!r} is available for one-hot "
                    "or k-hot samples only"
                )
            hit = (value * masked.to(value.dtype)).sum(-1) != 0
            lp = torch.where(hit, torch.full_like(lp, -math.inf), lp)
        return lp


@runtime_checkable
class GradientEstimator(Protocol):
    """What every estimator offers; see the contract for the exact semantics.

    :class:`EstimatorBase` implements it; a third party may also implement it directly
    on a :class:`torch.nn.Module`.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    params: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[EstimatorConfig]]
    config: EstimatorConfig

    def distribution(self, **params: Any) -> Any: ...

    def estimate(
        self, objective: Objective, *, num_samples: int = 1, reduce: str = "mean", **params: Any
    ) -> Estimate: ...

    def evaluations(self, num_samples: int | None = None, *, batch_ndim: int = 0, **params: Any) -> int: ...


class EstimatorBase(torch.nn.Module):
    """Base class of estimators: config handling, argument checks and a shared ``estimate``.

    A subclass declares the class attributes of the protocol (``name``, ``family``,
    ``capabilities``, ``params``, ``Config``, and ``reference``, the paper it implements),
    and implements :meth:`build_distribution`.  :meth:`estimate` is implemented here once
    for both kinds of estimator and may be overridden (control variates):

    - pathwise (``RSAMPLE`` in the instance's capabilities): ``rsample``, objective, mean;
    - score function (``SCORE_FUNCTION``): ``sample``, objective, ``log_prob`` and the
      value-preserving surrogate of :func:`relaxit_core.surrogate.score_function_surrogate`,
      with the baseline returned by :meth:`baseline`.

    Args:
        config: an instance of ``Config``, a mapping, or ``None``; keyword arguments
            update it.  Invalid values raise :class:`~relaxit_core.ConfigError`.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    families: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    params: ClassVar[tuple[str, ...]] = ()
    optional_params: ClassVar[tuple[str, ...]] = ()
    """Tensor arguments that may be left out (all others are required)."""
    limit_params: ClassVar[tuple[str, ...]] = ("logits",)
    """The tensor arguments that are logits, whose infinities denote limits (Bernoulli
    ``±inf``, categorical ``-inf``) that the core takes out before the estimator runs (see
    :mod:`relaxit_core.limits`); every other argument must be finite."""
    masks_natively: ClassVar[bool] = False
    """True when the estimator itself handles categorical ``-inf`` logits (masked categories)
    exactly, e.g. sampling without replacement that must stop at the unmasked ones: the core
    then checks them (``+inf``, NaN, fully masked rows still raise) but passes them on
    unchanged instead of replacing them by finite stand-ins."""
    integer_params: ClassVar[tuple[str, ...]] = ()
    """Tensor arguments that may be integer tensors (e.g. a support's ``values``); all others
    must be floating-point."""
    exclusive_params: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """Groups of alternative arguments of which exactly one is given; ``("logits", "probs")``
    is a group automatically when both are in ``params``."""
    Config: ClassVar[type[EstimatorConfig]] = EstimatorConfig
    reference: ClassVar[str] = ""
    """The paper (authors, year, title, venue) and equations the estimator implements."""
    min_num_samples: int = 1
    """The smallest ``num_samples`` that :meth:`estimate` accepts (set per instance when it
    depends on the config, e.g. 2 for a leave-one-out baseline)."""
    conformance_configs: ClassVar[tuple[Mapping[str, Any], ...]] = ({},)
    """Configs (as updates of the default) that the conformance kit checks.  Left out, it is
    the default config, or one config per family for an estimator serving several."""

    config: EstimatorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.families and "family" in cls.__dict__:
            cls.families = (cls.family,)
        if "exclusive_params" not in cls.__dict__ and {"logits", "probs"} <= set(cls.params):
            cls.exclusive_params = (("logits", "probs"),)
        if "estimate" in cls.__dict__:  # every estimate() runs behind the core's argument checks
            cls.estimate = guard_estimate(cls.__dict__["estimate"])
        if len(cls.families) > 1:
            # The contract: an estimator serving several families takes a required `family`
            # (a silent default once read categorical logits as independent bits).
            config = cls.__dict__.get("Config", cls.Config)
            if "family" in getattr(config, "model_fields", {}) and set(family_choices(config)) == set(cls.families):
                require_family(config, cls.families, cls.__name__)
            if "conformance_configs" not in cls.__dict__ and cls.conformance_configs == ({},):
                cls.conformance_configs = tuple({"family": f} for f in cls.families)
        fields = getattr(cls.Config, "model_fields", {})
        cls.temperature_fields = tuple(n for n, f in fields.items() if is_temperature_field(f))
        for field in cls.temperature_fields:  # est.tau: the current value, a float
            if not hasattr(cls, field):
                setattr(cls, field, property(
                    lambda self, _f=field: self.temperature(_f),
                    doc=f"The current value of the temperature field ``{field}`` (a float).",
                ))

    def __init__(self, config: EstimatorConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__()
        self.config = self.validate_config(config, **kwargs)
        family = getattr(self.config, "family", None)
        if family is not None:
            self.family = family  # instance attribute shadows the class-level default
        self.capabilities = frozenset(self.capabilities_for(self.config))
        self._schedules = {
            f: getattr(self.config, f) for f in self.temperature_fields
            if isinstance(getattr(self.config, f), ScheduleBase)
        }
        if self._schedules:
            self.register_buffer("schedule_step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------ schedules
    temperature_fields: ClassVar[tuple[str, ...]] = ()
    """The config fields declared with :data:`relaxit_core.schedules.Temperature`."""

    def step(self, n: int = 1) -> None:
        """Advance the step count of this estimator's temperature schedules by ``n``
        (in place; a no-op when no field is scheduled)."""
        if self._schedules:
            with torch.no_grad():
                self.schedule_step.add_(n)

    def current_temperature(self, field: str) -> float | torch.Tensor:
        """The value of temperature field ``field`` for the current step, as used by
        :meth:`distribution` and :meth:`estimate`: the config's number when the field is
        not scheduled, else a 0-dim tensor computed from the ``schedule_step`` buffer
        (no host synchronisation, so compiled code does not recompile as it changes)."""
        schedule = self._schedules.get(field)
        if schedule is None:
            return getattr(self.config, field)
        return schedule.tensor(self.schedule_step)

    def temperature(self, field: str) -> float:
        """The current value of temperature field ``field`` as a Python float (also
        available as the attribute ``est.<field>``)."""
        if field not in self.temperature_fields:
            raise AttributeError(f"{self.name} has no temperature field {field!r}")
        schedule = self._schedules.get(field)
        if schedule is None:
            return float(getattr(self.config, field))
        return schedule.value(int(self.schedule_step))

    # ----------------------------------------------------------------- configs
    @classmethod
    def validate_config(
        cls, config: EstimatorConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> EstimatorConfig:
        """Validate ``config`` (updated by ``kwargs``) into a ``Config`` instance."""
        if isinstance(config, cls.Config) and not kwargs:
            return config
        if isinstance(config, EstimatorConfig):
            data: dict[str, Any] = config.model_dump()
        elif config is None:
            data = {}
        elif isinstance(config, Mapping):
            data = dict(config)
        else:
            raise ConfigError(
                f"config for {cls.name!r} must be a {cls.Config.__name__}, a mapping or None, "
                f"not {type(config).__name__}"
            )
        data.update(kwargs)
        data.setdefault("name", cls.name)
        try:
            return cls.Config.model_validate(data)
        except ValidationError as exc:
            raise ConfigError.from_validation_error(exc, prefix=cls.name) from None

    @classmethod
    def capabilities_for(cls, config: EstimatorConfig) -> frozenset[Capability]:
        """The capabilities an instance with ``config`` has (default: the class's)."""
        return cls.capabilities

    def extra_repr(self) -> str:
        fields = self.config.model_dump(exclude={"name"})
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())

    # -------------------------------------------------------------- arguments
    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check argument names against ``params``; convert numbers to tensors."""
        names = tuple((k, v is None) for k, v in params.items())
        if names not in self._valid_names:  # the checks depend on the names only: once per set
            self._check_param_names(params)
            self._valid_names = self._valid_names | {names}
        out = {k: v if isinstance(v, torch.Tensor) else self._as_tensor(k, v)
               for k, v in params.items() if v is not None}
        for k, v in out.items():
            if not v.is_floating_point() or v.is_meta:
                self._check_tensor_kind(k, v)
        return out

    def _check_tensor_kind(self, key: str, value: torch.Tensor) -> None:
        """Refuse a meta tensor, and a non-floating one (other than an ``integer_params`` one)."""
        if value.is_meta:
            raise ParameterError(
                f"{self.name}: argument {key!r} is a 'meta' tensor (shape only, no values); "
                "sampling and estimating need values on a real device"
            )
        if value.is_complex():
            raise ParameterError(f"{self.name}: argument {key!r} is complex ({value.dtype}); it must be real floating-point")
        if key not in self.integer_params:
            raise ParameterError(
                f"{self.name}: argument {key!r} must be a floating-point tensor, got {value.dtype} "
                f"(convert it, e.g. {key}.float(); relaxit does not pick a dtype for you)"
            )

    def _check_param_names(self, params: Mapping[str, Any]) -> None:
        allowed = self.params
        unknown = [k for k in params if k not in allowed]
        if unknown:
            raise ParameterError(
                f"{self.name}: unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {self._describe_params()}"
            )
        grouped = set()
        for group in self.exclusive_params:
            given = [g for g in group if params.get(g) is not None]
            grouped.update(group)
            if len(given) != 1:
                what = "both" if given else "neither of"
                raise ParameterError(
                    f"{self.name}: got {what} {' and '.join(map(repr, given or group))}; "
                    f"give exactly one of {', '.join(map(repr, group))}"
                )
        missing = [
            p for p in allowed
            if p not in grouped and p not in self.optional_params and params.get(p) is None
        ]
        if missing:
            raise ParameterError(
                f"{self.name}: missing argument(s) {', '.join(map(repr, missing))}; "
                f"expected {self._describe_params()}"
            )

    _valid_names: frozenset[tuple[tuple[str, bool], ...]] = frozenset()
    """(name, is None) tuples of arguments that passed :meth:`check_params` (its checks depend on names only)."""

    def _as_tensor(self, key: str, value: Any) -> torch.Tensor:
        try:
            return torch.as_tensor(value, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ParameterError(
                f"{self.name}: argument {key!r} must be a tensor, got {type(value).__name__}"
            ) from exc

    def _describe_params(self) -> str:
        grouped = {p for g in self.exclusive_params for p in g}
        parts = [" or ".join(g) for g in self.exclusive_params]
        parts += [p + (" (optional)" if p in self.optional_params else "")
                  for p in self.params if p not in grouped]
        return ", ".join(parts)

    def distribution(self, **params: Any) -> torch.distributions.Distribution:
        """The law of this estimator's samples for the given tensor arguments.

        Infinite logits are the limits they denote (see :mod:`relaxit_core.limits`): samples
        hold the limit; ``log_prob`` is the PMF for a law with ``HARD`` samples and raises
        :class:`~relaxit_core.ParameterError` for a relaxed law (whose limit has no density).
        A score-function estimator's law carries the estimator (into a Pyro guide site, where
        :class:`relaxit.pyro.EstimatorELBO` runs it; see :mod:`relaxit_core.inference`).
        """
        checked = self.check_params(params)
        # checked already when estimate() calls it; while tracing, the law keeps the infinities
        limits = None
        if not (is_compiling() or self._checked_by_estimate(params)):
            limits = find_limits(self, checked)
            check_probs(self, checked)
        law = self._build(checked)
        if limits is not None and limits.names:
            stand_in = self._build(limits.params) if Capability.HARD in self.capabilities else None
            attach_limits(law, self.name, stand_in, limits)
        if self._carries_estimator and not is_compiling():
            law = carry_estimator(law, self)  # see relaxit_core.inference
        return law

    def _checked_by_estimate(self, params: Mapping[str, Any]) -> bool:
        active = _IN_ESTIMATE.get()
        return active is not None and active[0] == id(self) and all(
            any(v is g for g in active[1]) for v in params.values() if isinstance(v, torch.Tensor))

    def _build(self, checked: dict[str, torch.Tensor]) -> torch.distributions.Distribution:
        try:
            return self.build_distribution(**checked)
        except RuntimeError as exc:  # broadcasting failures from torch
            if any(v.numel() == 0 for v in checked.values()):
                # torch's validation of an event constraint cannot reshape an empty batch;
                # there is nothing to validate in it
                with _validation(False):
                    try:
                        return self.build_distribution(**checked)
                    except RuntimeError:
                        pass
            shapes = {k: tuple(v.shape) for k, v in checked.items()}
            raise ParameterError(f"{self.name}: arguments do not fit together {shapes}: {exc}") from exc
        except ValueError as exc:  # an argument's constraint (torch's validation, the law's own checks)
            if isinstance(exc, ParameterError):
                raise
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in checked.items())
            raise ParameterError(f"{self.name}: {exc} (arguments: {shapes})") from exc

    @property
    def _carries_estimator(self) -> bool:
        """Score-function laws carry their estimator into Pyro programs (pathwise ones need not)."""
        return Capability.SCORE_FUNCTION in self.capabilities and Capability.RSAMPLE not in self.capabilities

    def build_distribution(self, **params: torch.Tensor) -> torch.distributions.Distribution:
        """Build the law from checked tensor arguments (implemented by each estimator)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_distribution")

    # --------------------------------------------------------------- estimate
    reductions: ClassVar[tuple[str, ...]] = ("mean", "logmeanexp")
    """The values of ``estimate(..., reduce=...)`` this estimator supports.  An estimator that
    overrides :meth:`estimate` declares its own (usually ``("mean",)``)."""

    @_guarded
    def estimate(
        self, objective: Objective, *, num_samples: int = 1, reduce: str = "mean", **params: Any
    ) -> Estimate:
        """Estimate the gradient of the expected objective with ``num_samples`` samples.

        ``reduce="mean"`` (the default): ``objective(z)`` is a loss per sample, shape
        ``[S, *B]``; ``value`` is its mean over samples and ``surrogate`` carries the
        gradient estimate of ``d/dθ E_q[objective(z)]``.

        ``reduce="logmeanexp"``: ``objective(z)`` returns per-sample log-weights
        ``log w_s`` (e.g. ``log p(x, z_s) - log q(z_s)``); ``value`` is the multi-sample
        bound ``log (1/S) Σ_s exp(log w_s)`` (IWAE, Burda et al. 2016, eq. 8) — a quantity to
        *maximise* — and ``surrogate`` carries the gradient estimate of
        ``d/dθ E_{z_1..S ~ q}[log (1/S) Σ_s w_s]``.  Pathwise estimators differentiate the
        bound through the samples; score-function ones treat the ``S`` samples as one joint
        sample (no baseline), which is unbiased; ``vimco`` adds its per-sample control variates.

        See :class:`Estimate` for the returned fields.
        """
        num_samples = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        if Capability.RSAMPLE in self.capabilities:
            z = dist.rsample((num_samples,))
            f = call_objective(objective, z, dist, self.name)
            total = reduce_samples(f, reduce)
            return Estimate(total, total.detach(), z)
        if Capability.SCORE_FUNCTION in self.capabilities:
            z = dist.sample((num_samples,))
            f = call_objective(objective, z, dist, self.name)
            log_q = reduce_log_prob(dist.log_prob(z), f.dim())
            if reduce == "mean":
                surrogate = self.score_surrogate(f, log_q)
            else:  # one joint sample of S draws: its score is the sum of the draws' scores
                total = reduce_samples(f, reduce)
                surrogate = score_function_surrogate(total.unsqueeze(0), log_q.sum(0, keepdim=True))
            # value from the objective alone (a non-finite score must not leak into it)
            return Estimate(surrogate, reduce_samples(f.detach(), reduce), z)
        raise NotImplementedError(
            f"{self.name} has neither RSAMPLE nor SCORE_FUNCTION; it must override estimate()"
        )

    # -------------------------------------------- two phases: draw, then costs
    cost_samples: ClassVar[str | None] = None
    """Whether the estimator builds its surrogate from costs given at its samples
    (:meth:`draw`, then :meth:`from_costs`), so that a caller can evaluate many estimators'
    samples in one batched program run (e.g. :class:`relaxit.pyro.EstimatorELBO`):

    - ``None``: no; only :meth:`estimate` (it evaluates the objective where it needs to,
      e.g. at relaxed values).
    - ``"own"``: the samples must come from :meth:`draw` (e.g. antithetic pairs).
    - ``"any"``: any i.i.d. draws of the law serve, including draws made elsewhere (a Pyro
      guide's own sampling) with parameters that carry the sample dimension (each sample
      drawn from its own law, e.g. conditioned on other variables): a score-function
      surrogate with a baseline that never uses a sample's own cost."""

    preferred_reduce: ClassVar[str] = "mean"
    """The reduction the estimator is meant for (``"logmeanexp"``: a multi-sample bound)."""

    def draw(self, num_samples: int = 1, **params: Any) -> Draw:
        """Phase one of :meth:`estimate`: the samples at which the costs are wanted,
        shape ``[num_samples, *batch_shape, *event_shape]``."""
        if self.cost_samples is None:
            raise NotImplementedError(f"{self.name} has no two-phase form; use estimate()")
        num_samples = self._check_num_samples(num_samples)
        return Draw(self.distribution(**params).sample((num_samples,)))

    def from_costs(self, costs: torch.Tensor, draw: Draw, *, reduce: str = "mean", **params: Any) -> Estimate:
        """Phase two of :meth:`estimate`: the :class:`Estimate` from the costs ``[S, *B]``
        at ``draw.samples`` (the values ``objective(draw.samples)`` would return).

        The default serves score-function estimators whose gradient is
        ``mean_s (f_s - b_s) ∇ log q(z_s)`` with :meth:`baseline` (through
        :meth:`score_surrogate`, as :meth:`estimate`); ``reduce`` as in
        :meth:`estimate`.  With ``cost_samples == "any"`` the parameters may carry the
        sample dimension (shape ``[S, *batch_shape, ...]``)."""
        if self.cost_samples is None:
            raise NotImplementedError(f"{self.name} has no two-phase form; use estimate()")
        self._check_reduce(reduce)
        z = draw.samples
        log_q = reduce_log_prob(self.distribution(**params).log_prob(z), costs.dim())
        if reduce == "mean":
            surrogate = self.score_surrogate(costs, log_q)  # the same learning signal as estimate()
        else:  # one joint sample of S draws: its score is the sum of the draws' scores
            total = reduce_samples(costs, reduce)
            surrogate = score_function_surrogate(total.unsqueeze(0), log_q.sum(0, keepdim=True))
        return Estimate(surrogate, reduce_samples(costs.detach(), reduce), z)  # value: the costs alone

    def evaluations(self, num_samples: int | None = None, *, batch_ndim: int = 0, **params: Any) -> int:
        """The objective rows that one :meth:`estimate` call evaluates.

        A "row" is one entry of the leading sample dimension of a ``z`` passed to the
        objective, so estimators can be compared at an equal number of objective evaluations
        (the unit in which ``num_samples`` is counted differs between estimators: ARM and
        DisARM count evaluations, RELAX and REBAR hard samples that cost three evaluations
        each).  Counted for a call that builds a gradient (under ``torch.no_grad()`` some
        estimators evaluate less).

        Args:
            num_samples: as in :meth:`estimate`; default ``min_num_samples``.
            batch_ndim: how many leading batch dimensions the objective keeps (``B`` in
                ``[S, *B]``); only estimators whose cost grows with the number of variables in
                one objective event (IndeCateR) read it.
            params: the tensor arguments of :meth:`estimate`; only estimators whose cost
                depends on their shapes need them.

        The default is ``num_samples`` rows; estimators that evaluate more override
        :meth:`evaluations_per_sample` (or this method).

        Example:
            >>> import relaxit
            >>> relaxit.get("rebar").evaluations(4)
            12
        """
        n = self.min_num_samples if num_samples is None else self._check_num_samples(num_samples)
        if isinstance(batch_ndim, bool) or not isinstance(batch_ndim, int) or batch_ndim < 0:
            raise ParameterError(f"{self.name}: batch_ndim must be an integer >= 0, got {batch_ndim!r}")
        return n * self.evaluations_per_sample(batch_ndim=batch_ndim, **params)

    def evaluations_per_sample(self, *, batch_ndim: int = 0, **params: Any) -> int:
        """Objective rows per unit of ``num_samples`` (default 1); see :meth:`evaluations`."""
        return 1

    def _check_reduce(self, reduce: str) -> None:
        if reduce not in self.reductions:
            raise ParameterError(
                f"{self.name}: reduce={reduce!r} is not supported; allowed: {', '.join(map(repr, self.reductions))}"
            )

    def score_surrogate(self, f: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """The score-function surrogate of ``reduce="mean"`` from the objective values ``f``
        and ``log q(z)``, both ``[S, *B]``: by default
        :func:`~relaxit_core.surrogate.score_function_surrogate` with :meth:`baseline`.
        Override it for learning signals that are not ``f - b`` (e.g. normalised advantages),
        keeping the forward value ``f.mean(0)``."""
        return score_function_surrogate(f, log_q, self.baseline(f.detach()))

    def baseline(self, f: torch.Tensor) -> torch.Tensor | None:
        """A baseline for the score-function surrogate, independent of each sample's own
        score (default: none).  ``f`` is the detached objective, shape ``[S, *B]``."""
        return None

    def _check_num_samples(self, num_samples: int, minimum: int | None = None) -> int:
        minimum = self.min_num_samples if minimum is None else minimum
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < minimum:
            raise ParameterError(
                f"{self.name}: num_samples must be an integer >= {minimum}, got {num_samples!r}"
            )
        return num_samples

    # --------------------------------------------------------- conformance
    def example_params(
        self,
        batch_shape: tuple[int, ...] = (),
        *,
        event_size: int = 3,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        extreme: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Example tensor arguments, used by the conformance kit and the docs.

        The default serves estimators whose arguments are ``logits``/``probs``: for
        ``family`` ``"bernoulli"`` logits of shape ``batch_shape``, otherwise of shape
        ``batch_shape + (event_size,)``.  ``extreme=True`` gives logits of ±30.
        Estimators with other arguments (or constraints between config and shapes)
        override it; it is an instance method so that it can read ``self.config``.
        """
        if "logits" not in self.params:
            raise NotImplementedError(f"{type(self).__name__} must implement example_params")
        fam = self.family
        shape = tuple(batch_shape) + (() if fam == "bernoulli" else (event_size,))
        if extreme:
            n = max(1, int(torch.Size(shape).numel()))
            signs = torch.tensor([1.0, -1.0], dtype=dtype).repeat((n + 1) // 2)[:n]
            logits = (30.0 * signs).reshape(shape)
        else:
            logits = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        return {"logits": logits.to(device)}

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def check_declaration(cls) -> None:
        """Raise :class:`TypeError` when the class attributes break the protocol."""
        problems = []
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _is_snake(name):
            problems.append(f"name must be a snake_case string, got {name!r}")
        for fam in cls.families or (getattr(cls, "family", None),):
            if fam not in FAMILIES:
                problems.append(f"family {fam!r} is not one of {FAMILIES}")
        caps = getattr(cls, "capabilities", None)
        if not isinstance(caps, frozenset) or not all(isinstance(c, Capability) for c in caps):
            problems.append("capabilities must be a frozenset of Capability")
        if not cls.params or not all(isinstance(p, str) for p in cls.params):
            problems.append("params must be a non-empty tuple of str")
        if not (isinstance(cls.Config, type) and issubclass(cls.Config, EstimatorConfig)):
            problems.append("Config must subclass EstimatorConfig")
        else:
            field = cls.Config.model_fields.get("name")
            if field is None or field.default != name:
                problems.append(f"Config.name must default to {name!r}")
            if len(cls.families) > 1:
                try:
                    require_family(cls.Config, cls.families, cls.__name__)
                except TypeError as exc:
                    problems.append(str(exc).removeprefix(f"{cls.__name__}: "))
        if problems:
            raise TypeError(f"{cls.__name__}: " + "; ".join(problems))


def call_objective(objective: Objective, z: torch.Tensor, dist: Any, name: str) -> torch.Tensor:
    """Call ``objective(z)`` and check that it returns ``[S, *B]`` with ``B`` a prefix of the
    law's ``batch_shape`` (``dist`` is the law, or its ``batch_shape`` itself)."""
    f = objective(z)
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{name}: the objective must return a tensor, got {type(f).__name__}")
    batch = tuple(dist if isinstance(dist, tuple) else dist.batch_shape)
    shape = tuple(f.shape)
    if len(shape) < 1 or shape[0] != z.shape[0] or shape[1:] != batch[: len(shape) - 1]:
        raise ValueError(
            f"{name}: the objective returned shape {shape}; expected [S, *B] with S = "
            f"{z.shape[0]} and B a prefix of batch_shape {batch} (reduce the trailing batch "
            "dimensions that belong to one event, and keep the sample dimension)"
        )
    return f


def reduce_samples(f: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce the sample dimension of ``f``: ``"mean"`` or ``"logmeanexp"``."""
    if reduce == "mean":
        return f.mean(0)
    if reduce == "logmeanexp":
        return f.logsumexp(0) - math.log(f.shape[0])
    raise ValueError(f"unknown reduce {reduce!r}; allowed: 'mean', 'logmeanexp'")


def reduce_log_prob(log_q: torch.Tensor, ndim: int) -> torch.Tensor:
    """Sum the trailing batch dimensions of ``log_q`` so that it has ``ndim`` dimensions."""
    extra = log_q.dim() - ndim
    if extra > 0:
        log_q = log_q.sum(tuple(range(ndim, log_q.dim())))
    return log_q
