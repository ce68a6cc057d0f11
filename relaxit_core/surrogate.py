"""Surrogate losses: value-preserving score-function terms and unbiased baselines."""

from __future__ import annotations

import torch

__all__ = ["magic_box", "score_function_surrogate", "leave_one_out_baseline", "straight_through"]


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """``exp(x - x.detach())``: equals 1 in the forward pass, has gradient ``dx`` (DiCE,
    Foerster et al. 2018, eq. 3)."""
    return torch.exp(x - x.detach())


def score_function_surrogate(
    f: torch.Tensor, log_q: torch.Tensor, baseline: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the first (sample) dimension of ``f + (f - b) * (log_q - log_q.detach())``.

    The forward value is exactly ``f.mean(0)``; the backward pass gives the
    score-function gradient ``mean_s (f_s - b_s) ∇ log q(z_s)`` (Williams 1992, eq. 11) to
    the law's parameters, and ``mean_s ∇φ f_s`` to the objective's own parameters.  The
    baseline ``b`` (detached) leaves the estimate unbiased when ``b_s`` does not depend on
    ``z_s``.

    Args:
        f: objective values, shape ``[S, *B]`` (may carry gradient to its own parameters).
        log_q: ``log q(z_s)`` summed over everything ``f`` reduced, shape ``[S, *B]``.
        baseline: broadcastable to ``f``, or ``None``.
    """
    weight = f.detach() if baseline is None else f.detach() - baseline.detach()
    return (f + weight * (log_q - log_q.detach())).mean(0)


def leave_one_out_baseline(f: torch.Tensor) -> torch.Tensor:
    """For each sample, the mean of the other samples' values (Kool et al. 2019, eq. 8).

    ``f`` has shape ``[S, *B]`` with ``S >= 2``; returns the same shape.
    """
    s = f.shape[0]
    return (f.sum(0, keepdim=True) - f) / (s - 1)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass
    (Bengio et al. 2013).

    Written as ``hard + (soft - soft.detach())`` so that the forward value is exactly
    ``hard`` (``soft + (hard - soft).detach()`` is not, in floating point).
    """
    return hard + (soft - soft.detach())
