"""Temperature schedules (re-exported from :mod:`relaxit_core.schedules`).

Any temperature field of an estimator config takes a number or a schedule mapping::

    est = relaxit.get("gumbel_softmax", hard=True,
                      tau={"schedule": "exponential", "start": 1.0, "end": 0.5,
                           "rate": 1e-4, "every": 1000})   # Jang et al. (2017)
    for batch in data:
        ...
        optimizer.step()
        relaxit.schedules.step(model)   # advances every estimator inside the model
    est.tau                              # the current temperature (a float)

See :mod:`relaxit_core.schedules` for the formulas.
"""

from relaxit_core.schedules import (
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    LinearSchedule,
    Schedule,
    ScheduleBase,
    Temperature,
    step,
)

__all__ = [
    "ScheduleBase",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "CosineSchedule",
    "Schedule",
    "Temperature",
    "step",
]
