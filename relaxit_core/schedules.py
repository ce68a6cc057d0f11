"""Temperature schedules: a temperature field may be a number or a schedule mapping.

Any temperature field of an estimator config (``tau``, ``tau_forward``, ``tau_backward``,
...) is declared with :data:`Temperature` and accepts either a positive number or a
mapping such as::

    {"schedule": "exponential", "start": 1.0, "end": 0.5, "rate": 1e-4, "every": 1000}

which is Jang, Gu & Poole's (2017, Sec. 4.1) annealing ``τ = max(0.5, exp(−r t))``
recomputed every ``N`` steps.  The four schedules, with ``t`` the estimator's step count
rounded down to a multiple of ``every`` and ``u = min(t / steps, 1)``:

=================  =========================================================
``constant``       ``start``
``linear``         ``start + (end − start) · u``
``exponential``    ``max(end, start · exp(−rate · t))``
``cosine``         ``end + (start − end) · (1 + cos(π u)) / 2``
=================  =========================================================

A schedule is a frozen pydantic model (it is part of the estimator's frozen config, of
its JSON schema and of its YAML/JSON dump).  The step count is state of the estimator: a
buffer ``schedule_step`` saved in its ``state_dict``, advanced by
:meth:`relaxit_core.EstimatorBase.step` (or :func:`step` for every estimator inside a
module tree); the current value is the attribute named after the field (``est.tau``).
Inside ``distribution()`` and ``estimate()`` the scheduled value is computed as a 0-dim
tensor from that buffer (:meth:`ScheduleBase.tensor`), so a compiled training step does
not recompile when the step count changes.

A plugin declares a schedulable field as::

    from relaxit_core.schedules import Temperature

    class Config(relaxit_core.EstimatorConfig):
        tau: Temperature = Field(1.0, description="Temperature of the relaxation.")

and reads the current value with ``self.current_temperature("tau")`` (a float when the
field is a number, a 0-dim tensor when it is scheduled).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, WrapValidator, model_validator

from relaxit_core.config import MODEL_CONFIG, fill_attribute_docstrings

__all__ = [
    "ScheduleBase",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "CosineSchedule",
    "Schedule",
    "Temperature",
    "TEMPERATURE_MAX",
    "is_temperature_field",
    "log_temperature",
    "as_temperature",
    "step",
]

TEMPERATURE_MAX = 1e3
"""The largest temperature a field (or a schedule's ``start``/``end``) accepts."""

_Positive = Annotated[float, Strict(), Field(gt=0, le=TEMPERATURE_MAX)]


class ScheduleBase(BaseModel):
    """Base class of the schedules: frozen, unknown fields forbidden."""

    model_config: ClassVar[ConfigDict] = ConfigDict(MODEL_CONFIG, strict=True)

    schedule: str
    start: _Positive
    """The value at step 0."""
    every: int = Field(1, ge=1)
    """The value changes every ``every`` steps: ``t`` is rounded down to a multiple of it."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fill_attribute_docstrings(cls)  # the fields' descriptions (see relaxit_core.config)

    def _t(self, t: int) -> int:
        return (int(t) // self.every) * self.every

    def value(self, t: int) -> float:
        """The value at step ``t`` (a non-negative integer), as a Python float."""
        if int(t) < 0:
            raise ValueError(f"schedule step must be >= 0, got {t}")
        return float(self._value(float(self._t(t))))

    def _value(self, t: float) -> float:  # pragma: no cover - each subclass implements it
        raise NotImplementedError

    def tensor(self, step: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The value at the step count ``step`` (an integer tensor), as a 0-dim tensor.

        No host synchronisation and no Python value depending on ``step``, so it traces
        into one ``torch.compile`` graph that stays valid as ``step`` changes.  ``dtype``
        defaults to float64 (float32 on MPS, which has no float64).
        """
        if dtype is None:
            dtype = torch.float32 if step.device.type == "mps" else torch.float64
        t = torch.div(step, self.every, rounding_mode="floor").mul(self.every).to(dtype)
        return self._tensor(t)

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


fill_attribute_docstrings(ScheduleBase)


class ConstantSchedule(ScheduleBase):
    """``start`` at every step (useful to switch a config between fixed and scheduled)."""

    schedule: Literal["constant"] = "constant"

    def _value(self, t):
        return self.start

    def _tensor(self, t):
        return torch.full_like(t, self.start)


class _Ramp(ScheduleBase):
    end: _Positive
    """The value from step ``steps`` on."""
    steps: int = Field(ge=1)
    """The number of steps from ``start`` to ``end``."""

    def _u(self, t):
        return min(t / self.steps, 1.0)


class LinearSchedule(_Ramp):
    """``start + (end − start) · min(t / steps, 1)``."""

    schedule: Literal["linear"] = "linear"

    def _value(self, t):
        return self.start + (self.end - self.start) * self._u(t)

    def _tensor(self, t):
        return self.start + (self.end - self.start) * (t / self.steps).clamp(max=1.0)


class CosineSchedule(_Ramp):
    """``end + (start − end) · (1 + cos(π · min(t / steps, 1))) / 2`` (cosine annealing,
    Loshchilov & Hutter 2017, eq. 5, without restarts)."""

    schedule: Literal["cosine"] = "cosine"

    def _value(self, t):
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * self._u(t)))

    def _tensor(self, t):
        u = (t / self.steps).clamp(max=1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + torch.cos(math.pi * u))


class ExponentialSchedule(ScheduleBase):
    """``max(end, start · exp(−rate · t))``; Jang et al. (2017) use ``start=1, end=0.5``,
    ``rate`` ∈ {1e-5, 1e-4}, ``every`` ∈ {500, 1000}."""

    schedule: Literal["exponential"] = "exponential"
    end: _Positive
    """The floor the value decays to."""
    rate: float = Field(ge=0, le=1e3)
    """The decay rate ``r`` per step."""

    @model_validator(mode="after")
    def _end_below_start(self) -> ExponentialSchedule:
        if self.end > self.start:
            raise ValueError(f"exponential schedule: end ({self.end}) must be <= start ({self.start})")
        return self

    def _value(self, t):
        return max(self.end, self.start * math.exp(-self.rate * t))

    def _tensor(self, t):
        return (self.start * torch.exp(-self.rate * t)).clamp(min=self.end)


Schedule = Annotated[
    Union[ConstantSchedule, LinearSchedule, ExponentialSchedule, CosineSchedule],
    Field(discriminator="schedule"),
]
"""Any schedule, validated from a mapping by its ``schedule`` key."""


class _TemperatureMarker:
    """Metadata that marks a config field as a (schedulable) temperature."""

    def __repr__(self) -> str:
        return "Temperature"


TEMPERATURE_MARK = _TemperatureMarker()

@functools.cache
def _adapter(kind: str) -> TypeAdapter:
    # built on first use (a config that is never given a schedule never builds that one)
    return TypeAdapter(Schedule if kind == "schedule" else _Positive)


def _validate_temperature(value: Any, handler: Any) -> float | ScheduleBase:
    # Dispatch on the input's kind so that errors name the field itself
    # (``gumbel_softmax.tau: Input should be greater than 0``), not a union branch.
    if isinstance(value, (Mapping, ScheduleBase)):
        return _adapter("schedule").validate_python(value)
    return _adapter("number").validate_python(value)


Temperature = Annotated[
    Union[_Positive, Schedule], WrapValidator(_validate_temperature), TEMPERATURE_MARK
]
"""Type of a temperature field, which takes a number in ``(0, 1e3]`` or a :data:`Schedule` mapping."""


def is_temperature_field(field: Any) -> bool:
    """Whether a pydantic ``FieldInfo`` was declared with :data:`Temperature`."""
    return any(m is TEMPERATURE_MARK for m in getattr(field, "metadata", ()))


def as_temperature(value: Any, owner: str = "temperature") -> float | torch.Tensor:
    """A law's temperature argument: a positive number (returned as a float) or a 0-dim
    tensor from a schedule (returned as is; its value is not read, so no host sync)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{owner}: a tensor temperature must be 0-dim, got shape {tuple(value.shape)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}: temperature must be a positive number, got {value!r}")
    return float(value)


def log_temperature(value: float | torch.Tensor) -> float | torch.Tensor:
    """``log`` of a temperature that is a number (``math.log``) or a scheduled 0-dim tensor."""
    return value.log() if isinstance(value, torch.Tensor) else math.log(value)


def step(module: torch.nn.Module, n: int = 1) -> None:
    """Advance by ``n`` the step count of every estimator inside ``module`` (itself
    included), e.g. an ``EstimatorELBO``, a :mod:`relaxit.nn` layer or a whole model.

    An estimator shared by several parents is advanced once; an estimator without a
    schedule ignores it.
    """
    from relaxit_core.estimator import EstimatorBase

    for m in module.modules():
        if isinstance(m, EstimatorBase):
            m.step(n)
