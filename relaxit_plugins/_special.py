"""Special functions shared by the binary-gate plugins (not a plugin itself)."""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr as _torch_log_ndtr

__all__ = ["log_ndtr", "compute_dtype", "log_", "validating", "hyper_tensors"]

_HALF_LOG_2PI = 0.9189385332046727


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for the 16-bit dtypes (special functions and accuracy), else ``dtype``."""
    return torch.float32 if torch.finfo(dtype).bits < 32 else dtype


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """``log Φ(x)`` with a correct gradient in the far left tail.

    ``torch.special.log_ndtr``'s float32 backward returns 0, inf or a constant for
    ``x`` below about -100; there (below -10 in float32 and below -40 otherwise) this uses the
    asymptotic series ``log Φ(x) = -x²/2 - log(-x) - log(2π)/2 + log(1 - 1/x² + 3/x⁴ - 15/x⁶ + 105/x⁸)``,
    whose truncation error (``945/x¹⁰``) is below the dtype's resolution there.
    """
    t = -10.0 if torch.finfo(x.dtype).bits <= 32 else -40.0
    tail = x < t
    xt = torch.where(tail, x, torch.full_like(x, t))
    xm = torch.where(tail, torch.full_like(x, t), x)
    r = 1 / (xt * xt)
    series = torch.log1p(r * (-1 + r * (3 + r * (-15 + r * 105))))
    asym = -0.5 * xt * xt - (-xt).log() - _HALF_LOG_2PI + series
    return torch.where(tail, asym, _torch_log_ndtr(xm))


def log_(x):
    """``log x`` for a number (``math.log``) or a tensor (``torch.log``): hyper-parameters
    are numbers from a config or per-element tensors given to ``distribution()``."""
    return x.log() if isinstance(x, torch.Tensor) else math.log(x)


def validating(validate_args) -> bool:
    """Whether a law built with ``validate_args`` validates (torch's global default otherwise)."""
    from torch.distributions import Distribution

    return Distribution._validate_args if validate_args is None else bool(validate_args)


def hyper_tensors(main: torch.Tensor, owner: str, checks: dict, validate_args=None):
    """Broadcast per-element hyper-parameter tensors with the law's main parameter.

    ``checks`` maps a name to ``(value, predicate, text)``: ``value`` is a number (a config
    scalar, kept as it is) or a tensor (converted to ``main``'s dtype and device, keeping its
    gradient); ``predicate(value)`` is checked (for tensors only when validation is on) and
    a failure raises ``ValueError`` naming the argument and ``text``.  Returns ``(main, values)``
    with ``main`` and the tensor values expanded to their common batch shape.
    """
    values = {}
    for name, (value, ok, text) in checks.items():
        if isinstance(value, torch.Tensor):
            value = value.to(dtype=main.dtype, device=main.device)
            if validating(validate_args) and not bool(ok(value).all()):
                raise ValueError(f"{owner}: argument {name!r} must be {text}")
        else:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"{owner}: {name} must be {text}, got {value!r}")
            value = float(value)
        values[name] = value
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    if tensors:
        shape = torch.broadcast_shapes(main.shape, *(t.shape for t in tensors))
        main = main.expand(shape)
        values = {k: v.expand(shape) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
    return main, values
