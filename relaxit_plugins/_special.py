"""Special functions shared by the binary-gate plugins (not a plugin itself)."""

from __future__ import annotations

import torch
from torch.special import log_ndtr as _torch_log_ndtr

__all__ = ["log_ndtr", "compute_dtype"]

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
