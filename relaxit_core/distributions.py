"""Building blocks for estimators' laws: a Pyro base class for ``logits``/``probs`` laws,
noise samplers and numerically safe helpers.  Public API: third-party plugins may use it."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution
import torch.nn.functional as F
from torch.distributions import constraints, register_kl
from torch.distributions.utils import lazy_property

__all__ = [
    "LogitsDistribution",
    "BinaryLogitsDistribution",
    "CategoricalLogitsDistribution",
    "BernoulliPMFLaw",
    "clamp_probs",
    "uniform_like",
    "gumbel_like",
    "exponential_like",
    "logistic_like",
    "as_logits",
    "bernoulli_kl",
    "categorical_kl",
    "bernoulli_draw",
    "simplex",
]


class _Simplex(constraints._Simplex):
    """torch's simplex constraint with a tolerance on the sum that follows the dtype.

    torch checks ``|Σ x - 1| < 1e-6`` whatever the dtype: a relaxed sample in float16 or
    bfloat16 misses that by rounding alone (its sum is off by up to about ``K eps``), so
    ``law.log_prob(law.rsample())`` raised with validation on.  Here the tolerance is
    ``max(1e-6, K eps)``, ``K`` the number of entries and ``eps`` the dtype's machine epsilon:
    torch's check in float32 and float64 for ``K`` up to 8 and 4503 (and a little looser
    beyond, by the rounding of the sum itself).  Entries must still be non-negative.
    ``biject_to`` and ``transform_to`` (Pyro's guides read them) give what they give for
    torch's simplex."""

    def check(self, value):
        tol = 1e-6
        if value.is_floating_point() and value.dim():
            tol = max(tol, value.shape[-1] * torch.finfo(value.dtype).eps)
        return torch.all(value >= 0, dim=-1) & ((value.sum(-1) - 1).abs() < tol)


simplex = _Simplex()
"""The support of relaxit's relaxed simplex laws, torch's simplex with a sum tolerance of
``max(1e-6, K eps)`` for ``K`` entries of a dtype with machine epsilon ``eps``."""
torch.distributions.biject_to.register(_Simplex)(lambda c: torch.distributions.biject_to(constraints.simplex))
torch.distributions.transform_to.register(_Simplex)(lambda c: torch.distributions.transform_to(constraints.simplex))


def clamp_probs(p: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of ``p``'s dtype."""
    eps = torch.finfo(p.dtype).eps
    return p.clamp(min=eps, max=1 - eps)


def uniform_like(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) noise of ``shape`` in ``like``'s dtype and device, kept away from 0 and 1."""
    return clamp_probs(torch.rand(shape, dtype=like.dtype, device=like.device))


def _exponential_wide(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """``E ~ Exp(1)``, strictly positive, on ``like``'s device in a dtype at least as wide as
    float32 (not yet rounded to ``like``'s dtype).

    On CPU ``E = -log U`` with ``U`` a float64 uniform clamped away from 0: about 3x faster
    there than torch's ``exponential_`` and exact to 2^-53 in both tails (``E`` in
    ``[1.1e-16, 708.4]``).  Elsewhere ``exponential_`` in at least float32, clamped to that
    dtype's ``tiny``.
    """
    if like.device.type == "cpu":
        u = torch.rand(shape, dtype=torch.float64, device=like.device)
        return u.clamp_min_(torch.finfo(torch.float64).tiny).log_().neg_()
    dtype = torch.promote_types(like.dtype, torch.float32)
    e = torch.empty(shape, dtype=dtype, device=like.device).exponential_()
    return e.clamp_min_(torch.finfo(dtype).tiny)


def exponential_like(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard exponential noise ``E ~ Exp(1)`` in ``like``'s dtype and device, strictly positive.

    Drawn in float64 on CPU and in at least float32 elsewhere (see ``_exponential_wide``),
    rounded once to ``like``'s dtype and clamped to its ``tiny`` (float16 can round tiny
    draws to 0).
    """
    return _exponential_wide(shape, like).to(like.dtype).clamp_min_(torch.finfo(like.dtype).tiny)


def gumbel_like(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``G = -log E``, ``E ~ Exp(1)``, finite, in ``like``'s dtype and device.

    ``G`` is computed in the wide dtype of ``E`` (float64 on CPU: ``G`` in ``[-6.6, 36.8]``,
    both tails exact to 2^-53, and cheaper there than torch's ``exponential_``, the noise of
    ``F.gumbel_softmax``; at least float32 elsewhere) and rounded once to ``like``'s dtype:
    in float16 itself ``E`` would be cut at 6e-5 and the upper tail of ``G`` at 9.7.
    """
    return _exponential_wide(shape, like).log_().neg_().to(like.dtype)  # in place: one allocation


def logistic_like(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard logistic noise ``log U - log(1 - U)``."""
    u = uniform_like(shape, like)
    return u.log() - (-u).log1p()


def bernoulli_draw(p: torch.Tensor, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
    """``sample_shape + p.shape`` independent Bernoulli(``p``) draws, ``1[U < p]`` with
    ``U ~ U[0, 1)`` on ``p``'s device, in ``p``'s dtype, no gradient.

    The law of ``torch.bernoulli`` (``P(U < p) = p`` up to the uniform's resolution,
    ``2^-24`` in float32, ``2^-53`` in float64; 16-bit ``p`` is compared with a float32
    uniform), about 2.3x faster on CPU; exact at ``p = 0`` and ``1``.  The comparison is made in
    place (``U.lt_(p)`` writes 1. or 0. into the uniform's own storage): no boolean tensor and
    no conversion pass for float32/float64 ``p`` (0.76x the time of ``(U < p).to(dtype)`` for
    ``[3, 256, 200]`` on CPU).
    """
    p = p.detach()
    shape = (*sample_shape, *p.shape)
    if p.dtype is torch.float32 or p.dtype is torch.float64:
        return torch.rand(shape, dtype=p.dtype, device=p.device).lt_(p)
    u = torch.rand(shape, dtype=torch.promote_types(p.dtype, torch.float32), device=p.device)
    return u.lt_(p).to(p.dtype)


def as_logits(probs: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Logits of ``probs``: ``logit(p)`` for binary laws, ``log p`` for categorical ones."""
    if event_dim == 0:
        p = clamp_probs(probs)
        return p.log() - (-p).log1p()
    return clamp_probs(probs).log()


class LogitsDistribution(TorchDistribution):
    """Base of laws parametrised by ``logits`` or ``probs`` (exactly one).

    ``param_event_dim`` is 0 for independent binary laws (``probs`` in ``[0, 1]``) and 1 for
    laws over ``K`` categories (``probs`` on the simplex, ``logits`` normalised by
    ``logsumexp``).  Subclasses list further hyperparameters (temperatures, flags) in
    ``extra_attrs``; :meth:`expand` and :meth:`infer_shapes` handle them.  ``event_shape``
    is ``()`` for binary laws and ``(K,)`` otherwise, unless a subclass overrides
    :meth:`event_shape_for`.
    """

    param_event_dim: ClassVar[int] = 0
    extra_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
        **extra: Any,
    ):
        if (probs is None) == (logits is None):
            raise ValueError(
                f"{type(self).__name__}: give exactly one of `probs` or `logits`, not "
                + ("both" if probs is not None else "neither")
            )
        for key in self.extra_attrs:
            setattr(self, key, extra.pop(key))
        if extra:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(extra)}")
        param = probs if probs is not None else logits
        if self.param_event_dim and param.dim() < 1:
            raise ValueError(f"{type(self).__name__}: `logits`/`probs` need at least one dimension (categories)")
        if probs is not None:
            self.probs = probs
        elif self.param_event_dim:
            self._raw_logits = logits  # normalised lazily: sampling does not need it
        else:
            self.logits = logits
        self._param = param
        shape = param.shape
        batch_shape = shape[:-1] if self.param_event_dim else shape
        super().__init__(batch_shape, self.event_shape_for(shape), validate_args=validate_args)
        if self._validate_args and "_raw_logits" in self.__dict__:
            # torch validates only parameters in __dict__, and `logits` is lazy here.  A NaN makes
            # the sum NaN, so one reduction screens the common case; a NaN sum can also come from
            # +inf and -inf, which the full check then accepts.
            total = logits.sum()
            if bool(total != total) and not torch._is_all_true(self.arg_constraints["logits"].check(logits)):
                raise ValueError(
                    f"Expected parameter logits ({type(logits).__name__} of shape {tuple(logits.shape)}) "
                    f"of distribution {self!r} to satisfy the constraint {self.arg_constraints['logits']}, "
                    f"but found invalid values:\n{logits}"
                )

    @classmethod
    def event_shape_for(cls, param_shape: torch.Size) -> torch.Size:
        return torch.Size(param_shape[-1:] if cls.param_event_dim else ())

    @lazy_property
    def logits(self) -> torch.Tensor:
        if "_raw_logits" in self.__dict__:
            raw = self._raw_logits
            return raw - raw.logsumexp(-1, keepdim=True)
        return as_logits(self.probs, self.param_event_dim)

    @property
    def unnormalized_logits(self) -> torch.Tensor:
        """The logits as given (categorical laws normalise them lazily), or ``logits``."""
        return self.__dict__["_raw_logits"] if "_raw_logits" in self.__dict__ else self.logits

    @lazy_property
    def probs(self) -> torch.Tensor:
        if self.param_event_dim:
            return self.unnormalized_logits.softmax(-1)
        return torch.sigmoid(self.logits)

    @property
    def param_shape(self) -> torch.Size:
        return self._param.shape

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        param_shape = batch_shape + self._param.shape[-1:] if self.param_event_dim else batch_shape
        for key in ("probs", "logits", "_raw_logits"):
            if key in self.__dict__:
                setattr(new, key, getattr(self, key).expand(param_shape))
        new._param = getattr(new, "probs" if "probs" in self.__dict__ else "unnormalized_logits")
        for key in self.extra_attrs:
            setattr(new, key, getattr(self, key))
        super(LogitsDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, **arg_shapes):
        shape = torch.Size(arg_shapes.get("logits", arg_shapes.get("probs")))
        batch_shape = shape[:-1] if cls.param_event_dim else shape
        return batch_shape, cls.event_shape_for(shape)

    def _extended(self, sample_shape: torch.Size | tuple = ()) -> torch.Size:
        return self._extended_shape(torch.Size(sample_shape))


class BinaryLogitsDistribution(LogitsDistribution):
    """:class:`LogitsDistribution` of independent binary variables (``probs`` in ``[0, 1]``)."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    param_event_dim = 0


class CategoricalLogitsDistribution(LogitsDistribution):
    """:class:`LogitsDistribution` over ``K`` categories (last dimension of the parameter)."""

    arg_constraints = {"probs": simplex, "logits": constraints.independent(constraints.real, 1)}
    param_event_dim = 1


class BernoulliPMFLaw(BinaryLogitsDistribution):
    """Exactly-binary law with the Bernoulli probability mass function: the base of
    straight-through Bernoulli laws (whose ``rsample`` is hard forward, soft backward).

    Gives ``support = boolean``, ``sample`` (``Bernoulli(probs)``, no gradient), ``log_prob``
    (the PMF of the 0/1 value, from ``logits``), ``entropy``, ``enumerate_support`` (0 then 1),
    ``mean``, ``mode``, ``variance``, and the Bernoulli KL between any two such laws.  A
    subclass supplies ``rsample``; list this class first among the bases to let its PMF
    override a relaxed density.
    """

    support = constraints.boolean
    has_enumerate_support = True

    def sample(self, sample_shape=torch.Size()):
        return bernoulli_draw(self.probs.detach(), sample_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    def entropy(self):
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")

    def enumerate_support(self, expand=True):
        values = torch.arange(2, dtype=self._param.dtype, device=self._param.device)
        values = values.view((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return (self.probs >= 0.5).to(self.probs.dtype)

    @property
    def variance(self):
        return self.probs * (1 - self.probs)


@register_kl(BernoulliPMFLaw, BernoulliPMFLaw)
def _kl_bernoulli_pmf(p, q):
    """KL of the Bernoulli laws, from logits (see :func:`bernoulli_kl`)."""
    return bernoulli_kl(p.logits, q.logits)


def bernoulli_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``KL(Bernoulli(logits=a) || Bernoulli(logits=b))``, elementwise, exact at the limits:
    an infinite logit is a sure 1 or 0 (the KL is then ``-log q`` of that value, ``+inf``
    where ``q`` gives it probability 0), never NaN; finite wherever both laws put mass on
    the same values."""
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    a0 = torch.where(fa, a, torch.zeros_like(a))
    b0 = torch.where(fb, b, torch.zeros_like(b))
    pa = torch.sigmoid(a0)
    kl = pa * (F.softplus(-b0) - F.softplus(-a0)) + (1 - pa) * (F.softplus(b0) - F.softplus(a0))
    at_limit = torch.where(a > 0, F.softplus(-b), F.softplus(b))  # -log q(the sure value)
    inf = torch.full_like(kl, math.inf)
    kl = torch.where(fb, kl, inf)  # q sure of one value, p (finite) not: infinite
    return torch.where(fa, kl, at_limit)


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_k p_k (log p_k - log q_k)`` over the last dimension, from normalised log
    probabilities, with ``0 log 0 = 0`` (a masked category of ``p``, logit ``-inf``) and
    ``+inf`` where ``q_k = 0 < p_k``; never NaN."""
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(-1)
