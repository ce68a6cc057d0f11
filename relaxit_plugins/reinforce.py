"""REINFORCE (score-function) estimator with the baselines of variational inference and RL.

References:
    Williams (1992), *Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning*, Machine Learning 8 — eq. (11) (the score-function gradient,
    with a reinforcement baseline ``b``).
    Kool, van Hoof & Welling (2019), *Buy 4 REINFORCE Samples, Get a Baseline for Free!*,
    ICLR Workshop — eq. (8) (the leave-one-out baseline, RLOO).
    Shao et al. (2024), *DeepSeekMath*, arXiv:2402.03300 — Sec. 4.1.2, the GRPO advantage
    ``(r − mean(r)) / std(r)`` over the group of outputs of one prompt.
    Liu et al. (2025), *Understanding R1-Zero-Like Training: A Critical Perspective*
    (Dr. GRPO), arXiv:2503.20783 — the same advantage without the division by the std.
    Mnih & Gregor (2014), *Neural Variational Inference and Learning in Belief Networks*,
    ICML — Sec. 3.2-3.3 (NVIL: an input-dependent baseline trained on the squared error of
    the learning signal, and variance normalisation of the centred signal).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, Strict, model_validator

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.limits import is_compiling
from relaxit_core.surrogate import leave_one_out_baseline
from relaxit_plugins._multisample import (
    Bernoulli,
    OneHotCategorical,
    bernoulli_mean_estimate,
    rloo_weights,
)

__all__ = ["ReinforceEstimator", "group_advantage"]


def group_advantage(f: torch.Tensor, normalize: bool, *, ddof: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """The group-relative advantage of the samples of one group (dimension 0, size ``K``).

    ``f − mean(f)`` (Dr. GRPO, Liu et al. 2025), or with ``normalize`` GRPO's
    ``(f − mean(f)) / (std(f) + eps)`` (Shao et al. 2024, Sec. 4.1.2), the std with ``ddof``
    (``1``, ``torch.std``'s default, is what TRL's GRPO trainer uses, with ``eps = 1e-4``).
    Equal values give exactly zero (``0 / eps``), never NaN.
    """
    centred = f - f.mean(0, keepdim=True)
    if not normalize:
        return centred
    std = f.std(0, correction=ddof, keepdim=True)
    return centred / (std + eps)

_LAWS = {"bernoulli": Bernoulli, "categorical": OneHotCategorical}


class ReinforceEstimator(relaxit_core.EstimatorBase):
    r"""REINFORCE score-function estimator with the baselines of VI and RL (RLOO, GRPO, NVIL...).

    The gradient estimate is ``mean_s (f(z_s) - b_s) ∇θ log q(z_s)``, unbiased for any
    baseline ``b_s`` independent of ``z_s`` (Williams 1992, eq. 11).  The ``S =
    num_samples`` samples of one batch element are the *group* of the group baselines (in
    RL: the ``K`` completions of one prompt).

    Baselines:

    - ``"none"``: ``b = 0``.
    - ``"moving_average"``: ``b`` is a bias-corrected exponential moving average (``decay``)
      of the objective over earlier calls; it is updated after the current estimate, so it
      never depends on the current samples.  Kept as buffers of the module; the read and
      the update are one atomic step, so an estimator shared by several threads loses no
      update (their order is the threads' order).
    - ``"leave_one_out"`` (RLOO, Kool et al. 2019, eq. 8): ``b_s`` is the mean of the other
      ``S - 1`` samples' values; needs ``num_samples >= 2``.  Unbiased.
    - ``"group_mean"`` (Dr. GRPO, Liu et al. 2025): ``b = mean_s f(z_s)``, the sample itself
      included, so ``E[estimate] = (S − 1)/S × gradient`` (the sample's own term
      ``f(z_s)/S`` correlates with its score; ``leave_one_out`` is this times ``S/(S − 1)``).
      Biased by that known factor: not ``UNBIASED``.  Needs ``num_samples >= 2``.
    - ``"group_normalized"`` (GRPO, Shao et al. 2024): the learning signal is
      ``(f − mean) / (std + std_eps)`` over the group, the std with ``std_ddof`` (default 1,
      as TRL) and ``std_eps`` (default 1e-4, as TRL); equal values give a zero gradient.
      Biased, in scale and in direction, because the std depends on the sample itself.
      Measured against enumeration (``tests/test_reinforce_baselines.py``: the conformance
      kit's objective, logits of 3 Bernoulli / 2 categorical variables of 3 classes, 20000
      draws; ``σ`` the objective's exact std under ``q``, ``∇`` the exact gradient):

      ===========  ===  ====================  ======================  ===============
      family       S    cos(E ĝ, ∇)           ‖E ĝ − ∇/σ‖ / ‖∇/σ‖     ‖E ĝ‖ / ‖∇/σ‖
      ===========  ===  ====================  ======================  ===============
      bernoulli    2    0.994                 0.60                    0.41
      bernoulli    4    1.000                 0.28                    0.72
      bernoulli    8    1.000                 0.14                    0.86
      categorical  2    0.984                 0.58                    0.44
      categorical  4    0.989                 0.29                    0.74
      categorical  8    0.998                 0.14                    0.87
      ===========  ===  ====================  ======================  ===============

      So the mean step points nearly along the gradient but is shrunk, most at small ``S``.
      Not ``UNBIASED``.
      Needs ``num_samples >= 2``.
    - ``"learned"`` (NVIL's input-dependent baseline, Mnih & Gregor 2014, Sec. 3.2): a critic
      ``b_ψ(c)`` of a *context* ``c`` passed to ``estimate()`` as ``context=`` (shape
      ``[*B, context_size]``, ``B`` the objective's batch; detached here), trained in the
      same ``backward()`` on ``mean_s (b_ψ(c) − f(z_s))²``.  The critic is applied with its
      current weights, before the update that this call's gradient makes, and never reads
      the samples it scores, so the estimate stays unbiased.  ``context_size=None``: no
      context, ``b_ψ`` is one learned number.  ``critic_hidden`` > 0 adds a tanh hidden
      layer (NVIL used 100 units).

    ``normalize=True`` (NVIL's variance normalisation, Sec. 3.3) divides the centred signal
    ``f − b`` by ``max(1, σ)``, ``σ²`` a bias-corrected moving average (``decay``) of its
    second moment over earlier calls (updated after use).  It rescales the gradient by a
    factor fixed before the samples are drawn, so its direction stays unbiased but the
    estimator no longer claims ``UNBIASED``; not with ``group_normalized``.

    Cost: ``num_samples`` objective evaluations in one batched call.  For Bernoulli
    ``logits`` the estimate is formed directly from the score ``z - σ(logits)`` (finite at
    ``logits = ±inf``), as ``mean_s (f_s - b_s)(z_s - σ(logits))``, with no ``log_prob``
    pass over the samples.  Families:
    ``"bernoulli"`` (samples 0/1, law ``Bernoulli(logits)``) and ``"categorical"``
    (one-hot samples, law ``OneHotCategorical(logits)``); ``family`` is required.

    Maths:
        :Law: :math:`z_s \sim q_\theta` i.i.d.: :math:`\operatorname{Bernoulli}(\sigma(\theta))` or
            :math:`\operatorname{OneHotCategorical}(\operatorname{softmax}(\theta))` (``family``).
        :Estimator: the score function with a baseline (Williams 1992, eq. 11):

            .. math::
                \hat g = \frac1S \sum_{s=1}^{S} \bigl(f(z_s) - b_s\bigr) \nabla_\theta \log q_\theta(z_s),

            :math:`b_s = 0`, a moving average of earlier calls, the leave-one-out mean
            :math:`b_s = \frac{1}{S-1}\sum_{j \ne s} f(z_j)` (RLOO, Kool et al. 2019, eq. 8), the
            group mean :math:`b_s = \bar f = \frac1S \sum_j f(z_j)` (Dr. GRPO), or a learned critic
            :math:`b_s = b_\psi(c)` of a context (NVIL, Mnih & Gregor 2014, Sec. 3.2); GRPO
            (Shao et al. 2024, Sec. 4.1.2) replaces :math:`f(z_s) - b_s` by
            :math:`(f(z_s) - \bar f) / (\operatorname{std}_j f(z_j) + \epsilon)`.
        :Gradient: unbiased, :math:`\mathbb{E}[\hat g] = \nabla_\theta \mathbb{E}_{q_\theta}[f(z)]`, with
            ``none``, ``moving_average``, ``leave_one_out`` and ``learned``; ``group_mean`` has
            :math:`\mathbb{E}[\hat g] = \frac{S-1}{S} \nabla_\theta \mathbb{E}_{q_\theta}[f(z)]`;
            ``group_normalized`` is biased (table above); ``normalize=True`` divides by
            :math:`\max(1, \sigma)` fixed before sampling.
        :Cost: :math:`S` objective evaluations in one batched call.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.build({"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"})
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=4, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape
        torch.Size([3])

        A learned baseline reading a context (here 5 examples with 8 features each):

        >>> est = relaxit.get("reinforce", family="categorical", baseline="learned", context_size=8)
        >>> logits = torch.zeros(5, 4, requires_grad=True)
        >>> x = torch.randn(5, 8)
        >>> out = est.estimate(lambda z: z[..., 0], num_samples=2, logits=logits, context=x)
        >>> out.surrogate.sum().backward()   # logits and the critic get their gradients
        >>> est.critic_out.weight.grad is not None
        True
    """

    name: ClassVar[str] = "reinforce"
    family: ClassVar[str] = "bernoulli"
    families: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")
    params: ClassVar[tuple[str, ...]] = ("logits", "probs")
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Williams (1992), Simple Statistical Gradient-Following Algorithms, Machine Learning 8, "
        "eq. 11; Kool, van Hoof & Welling (2019), Buy 4 REINFORCE Samples, Get a Baseline for "
        "Free!, ICLR Workshop, eq. 8"
    )
    example_config: ClassVar[dict] = {"family": "bernoulli", "baseline": "leave_one_out"}
    """The config of the docs' generated example: RLOO, the baseline to use by default."""
    conformance_configs = tuple(
        {"family": fam, "baseline": b}
        for fam in ("bernoulli", "categorical")
        for b in ("none", "moving_average", "leave_one_out", "group_mean", "group_normalized", "learned")
    ) + (
        {"family": "bernoulli", "baseline": "learned", "normalize": True},
        {"family": "categorical", "baseline": "moving_average", "normalize": True},
    )  # a critic reading a context= is checked by the whole kit in tests/test_reinforce_baselines.py
    # (registry-wide tests call estimate() without a context)

    cost_samples: ClassVar[str] = "any"  # draw()/from_costs() of the base class; any i.i.d. draws serve

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`ReinforceEstimator`."""

        name: Literal["reinforce"] = "reinforce"
        family: Literal["bernoulli", "categorical"] = Field(
            description="The discrete law: independent Bernoulli or one-hot categorical (required)."
        )
        baseline: Literal[
            "none", "moving_average", "leave_one_out", "group_mean", "group_normalized", "learned"
        ] = Field(
            "none",
            description="Variance-reduction baseline: none, moving_average, leave_one_out and learned "
            "keep the estimate unbiased; group_mean (Dr. GRPO) and group_normalized (GRPO) are biased.",
        )
        decay: float = Field(
            0.9, gt=0, lt=1,
            description="Decay of the moving averages (moving_average baseline, normalize's signal scale).",
        )
        std_eps: float = Field(
            1e-4, ge=0, le=1e3, description="group_normalized: added to the group's std (TRL: 1e-4)."
        )
        std_ddof: int = Field(
            1, ge=0, le=1, description="group_normalized: degrees of freedom of the group's std (1, as torch.std and TRL)."
        )
        context_size: Annotated[int, Strict()] | None = Field(
            None, ge=1, le=1 << 20,
            description="learned: number C of context features (context shape (..., C), passed to estimate()); None: no context.",
        )
        critic_hidden: int = Field(
            0, ge=0, le=65536, description="learned: tanh hidden units of the critic (0: linear in the context)."
        )
        normalize: bool = Field(
            False, description="NVIL's variance normalisation: divide the centred signal by max(1, running std).",
        )

        @model_validator(mode="after")
        def _consistent(self):
            if self.normalize and self.baseline == "group_normalized":
                raise ValueError("normalize=True does not apply to baseline='group_normalized' (already normalised)")
            if self.baseline != "learned" and (self.context_size is not None or self.critic_hidden):
                raise ValueError("context_size and critic_hidden apply to baseline='learned' only")
            if self.critic_hidden and self.context_size is None:
                raise ValueError("critic_hidden needs a context_size (without a context the critic is one number)")
            return self

    @classmethod
    def capabilities_for(cls, config):
        if config.baseline in ("group_mean", "group_normalized") or config.normalize:
            return cls.capabilities - {C.UNBIASED}
        return cls.capabilities

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.min_num_samples = 2 if cfg.baseline in ("leave_one_out", "group_mean", "group_normalized") else 1
        self._set_flags()
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        if cfg.normalize:
            self.register_buffer("signal_second_moment", torch.zeros(()))
            self.register_buffer("signal_updates", torch.zeros((), dtype=torch.long))
        if cfg.baseline == "learned":
            gen = torch.Generator().manual_seed(0)  # a deterministic, non-zero initial critic
            width = cfg.context_size or 0
            if cfg.critic_hidden and width:
                self.critic_in = torch.nn.Linear(width, cfg.critic_hidden)
                with torch.no_grad():
                    self.critic_in.weight.copy_(torch.randn(cfg.critic_hidden, width, generator=gen) / math.sqrt(width))
                    self.critic_in.bias.zero_()
                width = cfg.critic_hidden
            self.critic_out = torch.nn.Linear(max(width, 1), 1)
            with torch.no_grad():
                self.critic_out.weight.copy_(0.1 * torch.randn(1, max(width, 1), generator=gen))
                if not width:
                    self.critic_out.weight.zero_()  # no context: the critic is its bias, one number
                self.critic_out.bias.zero_()

    def _set_flags(self):
        """Per-instance constants read on every call (the config is frozen)."""
        cfg = self.config
        # the score of Bernoulli logits formed directly (see _estimate_bernoulli)
        self._bernoulli_fast = (self.family == "bernoulli" and not cfg.normalize
                                and cfg.baseline in ("none", "moving_average", "leave_one_out"))
        self._leave_one_out = cfg.baseline == "leave_one_out"
        self._reads_context = cfg.baseline == "learned" and cfg.context_size is not None

    def __setstate__(self, state):  # an estimator pickled by an earlier version lacks the flags
        super().__setstate__(state)
        self._set_flags()

    def build_distribution(self, logits=None, probs=None):
        return _LAWS[self.family](probs=probs, logits=logits)

    def estimate(self, objective, *, context=None, **kwargs):
        """As :meth:`relaxit_core.EstimatorBase.estimate`; with ``baseline="learned"`` and a
        ``context_size``, ``context`` (``[*B, context_size]``, ``B`` the objective's batch) is
        the input of the critic (detached: no gradient reaches whatever computed it)."""
        if self._bernoulli_fast and context is None and isinstance(kwargs.get("logits"), torch.Tensor) \
                and kwargs.get("probs") is None and kwargs.get("reduce", "mean") == "mean":
            return self._estimate_bernoulli(objective, **kwargs)
        if self._reads_context:
            with self._context_scope(context):
                return super().estimate(objective, **kwargs)
        if context is not None:
            self._refuse_context()
        return super().estimate(objective, **kwargs)

    def from_costs(self, costs, draw, *, context=None, **kwargs):
        """As :meth:`relaxit_core.EstimatorBase.from_costs`, with ``context`` as in :meth:`estimate`."""
        with self._context_scope(context):
            return super().from_costs(costs, draw, **kwargs)

    def _refuse_context(self):
        raise relaxit_core.ParameterError(
            f"{self.name}: context= is read only by baseline='learned' with a context_size; "
            f"this estimator has baseline={self.config.baseline!r}, "
            f"context_size={self.config.context_size!r}"
        )

    @contextlib.contextmanager
    def _context_scope(self, context):
        """Check ``context`` against the config and hold it (per thread) while the call runs."""
        if not self._reads_context:
            if context is not None:
                self._refuse_context()
            yield
            return
        if not isinstance(context, torch.Tensor) or context.dim() < 1 or context.shape[-1] != self.config.context_size:
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise relaxit_core.ParameterError(
                f"{self.name}: baseline='learned' with context_size={self.config.context_size} needs "
                f"context=, a tensor [*B, {self.config.context_size}]; got {got}"
            )
        # per thread (a context variable), so an estimator shared by threads reads each call's own
        token = _CONTEXT.set((id(self), context.detach()))
        try:
            yield
        finally:
            _CONTEXT.reset(token)

    def _estimate_bernoulli(self, objective, *, logits, num_samples=1, reduce="mean", probs=None):
        """``mean_s f_s`` with the gradient ``mean_s (f_s - b_s)(z_s - σ(logits))`` attached to
        the logits by one autograd node (finite at ``logits = ±inf``); samples ``1[U < p]``.
        Equal to the ``log_prob`` surrogate of the base class (``tests/test_fast_paths.py``).

        Taken for Bernoulli ``logits`` given as a tensor, ``reduce="mean"``, a baseline of the
        current samples' values only (none, moving average, leave-one-out) and no
        normalisation.  The core's guard has checked ``logits`` already (finite, or its limits
        replaced by finite stand-ins), so no law is built: its ``batch_shape`` is
        ``logits.shape``."""
        s = self._check_num_samples(num_samples)
        weights = rloo_weights if self._leave_one_out else self._baseline_weights
        return bernoulli_mean_estimate(objective, logits, s, self.name, weights)

    def _baseline_weights(self, fd, mean):
        """``(f_s - b) / S`` with the configured baseline ``b`` of the current values (none or
        the moving average, which this call updates)."""
        b = self.baseline(fd)
        return (fd if b is None else fd - b) / fd.shape[0]

    def example_context(self, batch_shape=(), *, dtype=torch.float32, device=None, generator=None):
        """A standard normal context ``[*batch_shape, context_size]`` when the critic reads one
        (the conformance kit passes it to :meth:`estimate`), else ``None``."""
        if self.config.baseline != "learned" or self.config.context_size is None:
            return None
        shape = tuple(batch_shape) + (self.config.context_size,)
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)

    def critic(self, f: torch.Tensor) -> torch.Tensor:
        """The learned baseline ``b_ψ`` for objective values ``f`` ``[S, *B]``: shape ``B``,
        with gradient to the critic's parameters only."""
        batch = f.shape[1:]
        dt = f.dtype
        out = self.critic_out
        if self.config.context_size is None:
            # no context: the critic is its bias (the weight reads a constant 0, so every
            # parameter takes part in the graph, as data-parallel wrappers expect)
            return F.linear(f.new_zeros(tuple(batch) + (1,)), out.weight.to(dt), out.bias.to(dt)).squeeze(-1)
        owner, ctx = _CONTEXT.get()
        if owner != id(self):
            ctx = None
        if ctx is None or tuple(ctx.shape[:-1]) != tuple(batch):
            got = None if ctx is None else tuple(ctx.shape)
            raise relaxit_core.ParameterError(
                f"{self.name}: context has shape {got}; expected [*B, {self.config.context_size}] with B = "
                f"{tuple(batch)}, the batch dimensions the objective keeps"
            )
        h = ctx.to(dt)
        if self.config.critic_hidden:
            h = torch.tanh(F.linear(h, self.critic_in.weight.to(dt), self.critic_in.bias.to(dt)))
        return F.linear(h, out.weight.to(dt), out.bias.to(dt)).squeeze(-1)

    def score_surrogate(self, f, log_q):
        cfg = self.config
        kind = cfg.baseline
        fd = f.detach()
        critic_loss = None
        if kind in ("group_mean", "group_normalized"):
            signal = group_advantage(fd, kind == "group_normalized", ddof=cfg.std_ddof, eps=cfg.std_eps)
        elif kind == "learned":
            b = self.critic(fd)
            critic_loss = (b - fd).pow(2).mean(0)
            signal = fd - b.detach()
        else:
            b = self.baseline(fd)
            signal = fd if b is None else fd - b
        if cfg.normalize:
            signal = self._normalize(signal)
        # forward value f.mean(0); gradient mean_s signal_s ∇ log q(z_s) (+ the objective's own)
        surrogate = (f + signal * (log_q - log_q.detach())).mean(0)
        if critic_loss is not None:  # forward value 0: the critic's squared error, trained in the same backward
            surrogate = surrogate + (critic_loss - critic_loss.detach())
        return surrogate

    def _normalize(self, signal):
        """NVIL's variance normalisation: ``signal / max(1, σ)`` with ``σ²`` from earlier calls."""
        dt = signal.dtype
        decay = self.config.decay
        lock = contextlib.nullcontext() if is_compiling() else _EMA_LOCK  # as the moving average
        with lock:
            m = self.signal_second_moment.to(dt)
            n = self.signal_updates.to(signal.device)
            correction = 1 - torch.pow(torch.as_tensor(decay, dtype=dt, device=signal.device), n)
            var = torch.where(n > 0, m / correction.clamp_min(torch.finfo(dt).tiny), torch.ones_like(m))
            new = (decay * m + (1 - decay) * signal.pow(2).mean()).detach()
            ok = torch.isfinite(new)  # a non-finite objective must not poison later calls
            self.signal_second_moment = torch.where(ok, new, m)
            self.signal_updates = n + ok.to(n.dtype)
        return signal / var.sqrt().clamp_min(1.0)

    def baseline(self, f):
        kind = self.config.baseline
        if kind == "leave_one_out":
            return leave_one_out_baseline(f)
        if kind == "moving_average":
            decay = self.config.decay
            # Read and update the running mean atomically: an estimator shared by threads loses
            # no update (a process-wide lock, held for a few tensor ops; none while compiling).
            lock = contextlib.nullcontext() if is_compiling() else _EMA_LOCK
            with lock:
                ema = self.running_mean.to(f)
                n = self.num_updates.to(f.device)
                # Bias-corrected EMA of earlier calls (zero before the first update): no host sync.
                correction = 1 - torch.pow(torch.as_tensor(decay, dtype=f.dtype, device=f.device), n)
                b = torch.where(n > 0, ema / correction.clamp_min(torch.finfo(f.dtype).tiny), torch.zeros_like(ema))
                self.running_mean = (decay * ema + (1 - decay) * f.mean()).detach()
                self.num_updates = n + 1
            return b
        return None


_EMA_LOCK = threading.Lock()
"""Makes the moving-average baseline's read-and-update atomic across threads."""

_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("relaxit_reinforce_context", default=(None, None))
"""``(id(estimator), context)`` of the ``estimate()`` call running in this thread."""


@relaxit_core.hookimpl
def relaxit_estimators():
    return [ReinforceEstimator]
