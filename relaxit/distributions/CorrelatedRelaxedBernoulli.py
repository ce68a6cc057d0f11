"""relaxit 1.x's ``CorrelatedRelaxedBernoulli``, over the registered ``correlated_relaxed_bernoulli`` law."""

from __future__ import annotations

import torch

from relaxit.distributions._adapter import Adapter, as_tensor, built, estimator, scalar_or_tensor

__all__ = ["CorrelatedRelaxedBernoulli", "covariance_to_correlation"]


def covariance_to_correlation(R: torch.Tensor, n: int) -> torch.Tensor:
    """The correlation matrix of a covariance ``R`` ``[..., n, n]``: ``R_ij / sqrt(R_ii R_jj)``,
    with an exact unit diagonal.  A ``[..., 1, 1]`` matrix ``[[c]]`` given for ``n`` variables is
    read as ``c I_n`` (one variance for every variable, no correlation), as relaxit 1.x's tests
    wrote it; its correlation is the identity."""
    if R.dim() < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"CorrelatedRelaxedBernoulli: R must be a square matrix [..., n, n], got shape {tuple(R.shape)}")
    eye = torch.eye(n, dtype=R.dtype, device=R.device)
    if R.shape[-2:] == (1, 1) and n > 1:
        R = R * eye
    if R.shape[-1] != n:
        raise ValueError(f"CorrelatedRelaxedBernoulli: R must be [..., {n}, {n}] for {n} variables, got {tuple(R.shape)}")
    d = R.diagonal(dim1=-2, dim2=-1)
    if torch.distributions.Distribution._validate_args and not bool((d > 0).all()):
        raise ValueError("CorrelatedRelaxedBernoulli: argument 'R' must have a positive diagonal (a covariance matrix)")
    inv = d.rsqrt()
    corr = R * inv.unsqueeze(-1) * inv.unsqueeze(-2)
    return corr * (1 - eye) + eye


class CorrelatedRelaxedBernoulli(Adapter):
    """Relaxed multivariate Bernoulli with a Gaussian copula (Wang & Yin 2020).

    relaxit 1.x's class, now
    ``relaxit.get("correlated_relaxed_bernoulli").distribution(probs=pi, corr=corr, tau=tau)``.
    1.x documented ``R`` as a covariance matrix; the copula uses only its correlation, so
    ``corr = R_ij / sqrt(R_ii R_jj)`` (:func:`~relaxit.distributions.CorrelatedRelaxedBernoulli.covariance_to_correlation`; with a diagonal
    other than 1, 1.x's uniforms were not uniform and its marginals not ``Bernoulli(pi)``).
    ``log_prob`` is the joint density of the event on ``[0, 1]^n`` (shape ``batch_shape``);
    1.x returned per-element Gaussian densities of another law.

    Args:
        pi: selection probabilities ``[..., n]``.
        R: covariance (or correlation) matrix ``[..., n, n]``.
        tau: temperature τ > 0, a number or a tensor broadcast with ``pi``.
        validate_args: torch's argument validation flag.
    """

    registry_name = "correlated_relaxed_bernoulli"

    def __init__(self, pi: torch.Tensor, R: torch.Tensor, tau: torch.Tensor, validate_args: bool | None = None):
        pi = as_tensor(pi)
        self.pi, self.R, self.tau = pi, as_tensor(R, pi), scalar_or_tensor(tau, pi)
        if pi.dim() < 1:
            raise ValueError("CorrelatedRelaxedBernoulli: pi needs an event dimension [..., n]")

        def make():
            corr = covariance_to_correlation(self.R, pi.shape[-1])
            return estimator(self.registry_name).distribution(probs=pi, corr=corr, tau=self.tau)

        self._adopt(built(validate_args, make))

    def log_prob(self, value):
        """The joint density of the event; a value with one entry in its last dimension is
        read as that value for every variable (relaxit 1.x scored values elementwise and
        accepted this)."""
        n = self.event_shape[0]
        if value.dim() >= 1 and value.shape[-1] == 1 and n > 1:
            value = value.expand(value.shape[:-1] + (n,))
        return self.law.log_prob(value)

    @property
    def corr(self):
        """The correlation matrix the law uses."""
        return self.law.corr

    @classmethod
    def infer_shapes(cls, pi=(), R=(), tau=()):
        pi, R = torch.Size(pi), torch.Size(R)
        batch = torch.broadcast_shapes(pi[:-1], R[:-2])
        t = torch.Size(tau) if torch.Size(tau).numel() != 1 else torch.Size()
        return torch.broadcast_shapes(batch + pi[-1:], t)[:-1], pi[-1:]
