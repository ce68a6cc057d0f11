"""Decoupled straight-through Gumbel-softmax: separate forward and backward temperatures.

References:
    Shah, Yan, Mozer & Liu (2024), *Improving Discrete Optimisation Via Decoupled
    Straight-Through Gumbel-Softmax*, arXiv:2410.13331 (v2: *... Decoupled Straight-Through
    Estimator*) — the forward temperature ``τ_f`` controls the stochasticity of the forward
    (hard) sample, i.e. exploration, and the backward temperature ``τ_b`` the dispersion of
    the gradient over categories.
    Jang, Gu & Poole (2017), ICLR — eq. (1) Gumbel-max, eq. (2) Gumbel-softmax, Sec. 2.2 ST-GS.

What ``tau_forward`` changes
----------------------------
An argmax is invariant to a positive scaling, so ``argmax((θ + g)/τ_f)`` does not depend on
``τ_f``: a forward temperature written that way has no effect at all (the bug this module
avoids).  Here ``τ_f`` tempers the *logits* of the forward sample, as the paper's
"forward-pass stochasticity" requires:

- forward: ``D = one_hot(argmax(θ/τ_f + g))``, exactly one-hot with law
  ``Categorical(softmax(θ/τ_f))`` — ``τ_f < 1`` sharpens it (less exploration), ``τ_f > 1``
  flattens it; at ``τ_f = 1`` (the default) it is ``Categorical(softmax(θ))``;
- backward: the gradient of ``softmax((θ/τ_f + g)/τ_b)``, with the same noise ``g``:
  ST-GS at temperature ``τ_b`` for the tempered logits (it carries the chain factor ``1/τ_f``).

With ``τ_f = 1`` the estimator equals ``gumbel_softmax`` with ``hard=True, tau=τ_b``.  The
law's ``logits``/``probs``, ``log_prob`` (the PMF of the hard value), ``enumerate_support``
and KL are those of ``Categorical(softmax(θ/τ_f))``, the law the samples actually have, and
``estimate`` estimates the gradient of ``E_{D ~ Categorical(softmax(θ/τ_f))}[f(D)]``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.distributions import constraints

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import as_logits, gumbel_like
from relaxit_plugins._straight_through_categorical import OneHotStraightThrough, one_hot_argmax

__all__ = ["DecoupledSTGumbelSoftmax", "DecoupledSTGumbelSoftmaxEstimator"]


class DecoupledSTGumbelSoftmax(OneHotStraightThrough):
    r"""One-hot ``Categorical(softmax(logits))`` with an ST-GS ``rsample`` at backward temperature ``temperature``.

    This law takes the *forward-law* logits ``ℓ = θ / τ_f`` (the estimator divides the user's
    logits by ``τ_f``): forward ``D = one_hot(argmax(ℓ + g))``, backward the gradient of
    ``softmax((ℓ + g) / τ_b)``; ``rsample = D + (y_b - stop_gradient(y_b))``.
    ``tau_forward`` is kept for the record only (it is already in ``logits``).  Both
    temperatures are numbers or tensors of shape ``[..., 1]`` broadcast over the categories.

    Example:
        >>> d = DecoupledSTGumbelSoftmax(logits=torch.zeros(4, requires_grad=True), temperature=2.0, tau_forward=0.5)
        >>> z = d.rsample((2,))
        >>> z.sum(-1).tolist(), z.requires_grad
        ([1.0, 1.0], True)
    """

    extra_attrs = ("temperature", "tau_forward")

    def _surrogate(self, hard, noise):
        return _soft(self.raw_logits + noise, self.temperature)

    def rsample(self, sample_shape=torch.Size()):
        # as the base class, but the perturbed logits ℓ + g are formed once, with gradient
        logits = self.raw_logits
        x = logits + gumbel_like(self._extended_shape(torch.Size(sample_shape)), logits)
        hard = one_hot_argmax(x.detach())
        soft = _soft(x, self.temperature)
        return hard + (soft - soft.detach())


def _soft(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(x / τ_b)`` in at least float32, rounded to ``x``'s dtype: in float16 ``x / τ_b``
    overflows at small ``τ_b`` (NaN samples at ``τ_b = 1e-3``)."""
    wide = torch.promote_types(x.dtype, torch.float32)
    return (x.to(wide) * (1.0 / temperature)).softmax(-1).to(x.dtype)


class DecoupledSTGumbelSoftmaxEstimator(relaxit_core.EstimatorBase):
    r"""Decoupled ST-GS (Shah et al. 2024): forward temperature τ_f tempers the one-hot sample's law, backward temperature τ_b the ST-GS gradient.

    Forward: ``D = one_hot(argmax(θ/τ_f + g))``, exactly one-hot with law
    ``Categorical(softmax(θ/τ_f))`` (``Categorical(softmax(θ))`` at the default ``τ_f = 1``).
    Backward: the gradient of ``softmax((θ/τ_f + g)/τ_b)`` with the same Gumbel noise ``g``.
    ``log_prob`` is the PMF of the hard value under ``Categorical(softmax(θ/τ_f))``.  Biased.
    See the module docstring for why ``τ_f`` acts on the law (an argmax ignores a temperature).
    One objective evaluation per sample; ``num_samples`` samples are averaged.
    ``tau_forward`` and ``tau_backward`` may also be given to ``distribution()`` /
    ``estimate()`` as optional tensors, one temperature per batch element (shape broadcast
    with ``logits.shape[:-1]``), overriding the config's numbers.

    Maths:
        :Law: :math:`D = \operatorname{onehot}\bigl(\arg\max_i (\theta_i/\tau_f + g_i)\bigr)
            \sim \operatorname{Categorical}(\operatorname{softmax}(\theta/\tau_f))`, :math:`g` i.i.d. Gumbel
            (Jang et al. 2017, eq. 1).
        :Estimator: straight-through with a separate backward temperature (Shah et al. 2024;
            Jang et al. 2017, eq. 2 and Sec. 2.2):

            .. math::
                \hat g = \Bigl(\frac{\partial y}{\partial \theta}\Bigr)^{\!\top} \nabla_D f(D), \qquad
                y = \operatorname{softmax}\bigl((\theta/\tau_f + g)/\tau_b\bigr) .
        :Gradient: biased for :math:`\nabla_\theta \mathbb{E}[f(D)]`; :math:`\tau_f = \tau_b` is ST-GS.
        :Cost: :math:`S` objective evaluations.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("decoupled_st_gumbel_softmax", tau_forward=1.0, tau_backward=2.0)
        >>> logits = torch.zeros(2, 5, requires_grad=True)
        >>> out = est.estimate(lambda z: z[..., 0].sum(-1), num_samples=4, logits=logits)
        >>> out.samples.shape, out.value.shape
        (torch.Size([4, 2, 5]), torch.Size([]))
    """

    name: ClassVar[str] = "decoupled_st_gumbel_softmax"
    family: ClassVar[str] = "categorical"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs", "tau_forward", "tau_backward")
    optional_params: ClassVar[tuple[str, ...]] = ("tau_forward", "tau_backward")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.RSAMPLE, C.LOG_PROB, C.HARD, C.ENUMERATE_SUPPORT, C.KL}
    )
    reference: ClassVar[str] = (
        "Shah, Yan, Mozer & Liu (2024), Improving Discrete Optimisation Via Decoupled "
        "Straight-Through Gumbel-Softmax, arXiv:2410.13331; Jang, Gu & Poole (2017), ICLR, "
        "eqs. 1-2 and Sec. 2.2"
    )
    conformance_configs = ({}, {"tau_forward": 0.5, "tau_backward": 2.0})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`DecoupledSTGumbelSoftmaxEstimator`."""

        name: Literal["decoupled_st_gumbel_softmax"] = "decoupled_st_gumbel_softmax"
        tau_forward: Temperature = Field(
            1.0, description="Forward temperature τ_f: hard samples follow Categorical(softmax(logits/τ_f)).",
        )
        tau_backward: Temperature = Field(
            1.0, description="Backward temperature τ_b of the Gumbel-softmax whose gradient is used.",
        )

    def build_distribution(self, logits=None, probs=None, tau_forward=None, tau_backward=None):
        param_dtype = (logits if logits is not None else probs).dtype
        # scheduled temperatures: 0-dim tensors from the step buffer, broadcast like given ones
        if tau_forward is None and "tau_forward" in self._schedules:
            tau_forward = self.current_temperature("tau_forward")
        if tau_backward is None and "tau_backward" in self._schedules:
            tau_backward = self.current_temperature("tau_backward")
        tau_f = self.config.tau_forward if tau_forward is None else tau_forward
        tau_b = self.config.tau_backward if tau_backward is None else tau_backward
        tensors = [t for t in (tau_forward, tau_backward) if t is not None]
        if tensors:  # per-element temperatures: broadcast them over the K categories
            param = logits if logits is not None else probs
            if torch.distributions.Distribution._validate_args and not all(bool((t > 0).all()) for t in tensors):
                raise ValueError(f"{self.name}: 'tau_forward' and 'tau_backward' must be positive")
            batch = torch.broadcast_shapes(param.shape[:-1], *(t.shape for t in tensors))
            shape = batch + param.shape[-1:]
            logits = logits.expand(shape) if logits is not None else None
            probs = probs.expand(shape) if probs is not None else None
            if tau_forward is not None:
                tau_f = tau_forward.to(param.dtype).expand(batch).unsqueeze(-1)
            if tau_backward is not None:
                tau_b = tau_backward.to(param.dtype).expand(batch).unsqueeze(-1)
        if isinstance(tau_f, torch.Tensor) or tau_f != 1.0:
            if logits is None:
                if torch.distributions.Distribution._validate_args and not bool(constraints.simplex.check(probs).all()):
                    raise ValueError(f"{self.name}: `probs` must lie on the simplex")
                logits = as_logits(probs, 1)
            # divided in at least float32 and kept finite in the parameters' dtype (float16
            # overflows at small τ_f; a saturated logit still dominates its row)
            big = torch.finfo(param_dtype).max / 4
            logits = (logits.to(torch.promote_types(logits.dtype, torch.float32)) / tau_f).clamp(-big, big)
            logits, probs = logits.to(param_dtype), None
        return DecoupledSTGumbelSoftmax(probs=probs, logits=logits, temperature=tau_b, tau_forward=tau_f)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [DecoupledSTGumbelSoftmaxEstimator]
