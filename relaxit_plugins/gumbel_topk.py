r"""Gumbel top-k: k-subsets drawn without replacement, relaxed to soft k-hot vectors.

The discrete law.  Perturb the logits with i.i.d. standard Gumbel noise, ``s = logits + g``,
and keep the ``k`` largest: the indices, in decreasing order of ``s``, are ``k`` draws
*without replacement* from ``softmax(logits)`` (Kool, van Hoof & Welling 2019, *Stochastic
Beams and Where to Find Them*, ICML, Sec. 2 and eq. 3; Vieira 2014).  The k-hot vector of
those indices is therefore the unordered set ``S`` of a Plackett–Luce ordering, with

.. math::
    P(S) = \sum_{\sigma \in \mathrm{perm}(S)} \prod_{j=1}^{k}
           \frac{p_{\sigma_j}}{1 - \sum_{l < j} p_{\sigma_l}}
         = \prod_{i \in S} p_i \sum_{\sigma} \prod_{j=1}^{k}
           \frac{1}{\bar p + \sum_{l \ge j} p_{\sigma_l}},
    \qquad \bar p = \sum_{i \notin S} p_i .

The relaxation.  Xie & Ermon (2019, *Reparameterizable Subset Sampling via Continuous
Relaxations*, IJCAI, Sec. 3.2, eqs. 6–7) relax the top-k of ``s`` by ``k`` successive
softmaxes, a loop over ``k``.  We use the k-independent relaxation of the same top-k
operator: a temperature-smoothed threshold,

.. math::
    y_i = \sigma\!\left(\frac{s_i}{\tau} - \nu\right), \qquad
    \nu \text{ such that } \sum_i y_i = k ,

the entropy-regularised top-k (the limited multi-label projection of Amos, Xu & Kolter
2019, *The Limited Multi-Label Projection Layer*, eqs. 2–4: ``y = argmax <s/τ, y> + H_b(y)``
over ``{0 ≤ y ≤ 1, Σ y = k}``).  Like Xie & Ermon's, ``y`` lies in the convex hull of the
k-hot vectors (``0 ≤ y_i ≤ 1``, ``Σ y = k``) and tends to the k-hot top-k of ``s`` as
``τ → 0``.  ``ν`` is found by Newton steps on ``log Σ_rest σ(z_i) - log Σ_top σ(-z_i)``
(``z = s/τ - ν``, the top ``k`` apart; a fixed number, 4 in float32, 5 in float64, no host
sync) from a closed-form start inside a counting bracket, and its gradient comes from the
implicit function theorem (Amos et al. 2019, Sec. 3): ``dν/dx_j = σ'_j / Σ_i σ'_i``.  Cost:
one ``topk`` (on order-preserving integer keys on CPU; ``argmax`` for k = 1 and n - 1), one
``exp2`` pass for the start, a subtraction, a sigmoid and two reductions over the ``n``
entries per Newton step, and one reduction in the backward, independent of ``k``.  Measured on CPU
(n = 1000, batch 256, τ = 0.5, one thread; ``benchmarks/topk_speed.py``): ``rsample`` +
backward 0.24–0.42x a hand-written version of the same relaxation; ``rsample`` 1.9x, 4.0x,
19x and 77x faster than the loop of ``k`` softmaxes at k = 1, 10, 100 and 500 with glibc's
default settings (where page faults make the loop's time vary by up to 2.5x from run to
run), 1.4x, 2.5x, 10.9x and 42x with glibc keeping its heap; against the same loop written
with in-place passes, 11.4x (defaults) and 8.0x (kept heap) at k = 100.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import ClassVar, Literal

import torch
from pydantic import Field
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.autograd.function import once_differentiable
from torch.distributions.utils import lazy_property

import relaxit_core
from relaxit_core.schedules import Temperature
from relaxit_core import Capability as C
from relaxit_core.distributions import as_logits, exponential_like, gumbel_like, simplex
from relaxit_core.errors import ParameterError
from relaxit_core.surrogate import straight_through
from relaxit_plugins._special import validating

__all__ = [
    "GumbelTopK",
    "StraightThroughGumbelTopK",
    "GumbelTopKEstimator",
    "KSubsetEstimatorBase",
    "relaxed_topk",
    "hard_topk",
    "KHot",
    "RelaxedKHot",
    "k_hot",
    "relaxed_k_hot",
    "MAX_LOG_PROB_K",
]

MAX_LOG_PROB_K = 7
"""The largest ``k`` for which the hard law claims ``log_prob``: it sums ``k!`` orderings."""

NEWTON_STEPS = 4
"""Newton steps of the threshold solver for float32 and narrower dtypes (float64:
``NEWTON_STEPS_FLOAT64``).  Measured from the closed-form start (n from 2 to 3000, k from
1 to n - 1, scales 1e-3 to 1e3; Gaussian, Gumbel-perturbed, Cauchy, outlier rows, rows of two
or three repeated values, two tight clusters, constant rows): every row is within the
tolerance of the tests (the float64 bisection root, to the rounding level of the dtype) after
at most 3 steps in float32 and 4 in float64; one step more for margin."""

NEWTON_STEPS_FLOAT64 = 5
"""Newton steps of the threshold solver in float64 (see ``NEWTON_STEPS``)."""


def _default_steps(dtype: torch.dtype) -> int:
    return NEWTON_STEPS_FLOAT64 if dtype == torch.float64 else NEWTON_STEPS


# ----------------------------------------------------------------------------- constraints
class KHot(constraints.Constraint):
    """Vectors in ``{0, 1}^n`` with exactly ``k`` ones."""

    is_discrete = True
    event_dim = 1

    def __init__(self, k: int):
        self.k = k
        super().__init__()

    def check(self, value):
        binary = (value == 0) | (value == 1)
        return binary.all(-1) & (value.sum(-1) == self.k)

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k})"


class RelaxedKHot(constraints.Constraint):
    """The convex hull of the k-hot vectors: ``0 <= y_i <= 1`` and ``sum y = k`` (up to rounding)."""

    event_dim = 1

    def __init__(self, k: int):
        self.k = k
        super().__init__()

    def check(self, value):
        n = value.shape[-1]
        tol = max(1e-3, 32 * n * torch.finfo(value.dtype).eps) * max(1, self.k)
        inside = ((value >= 0) & (value <= 1)).all(-1)
        return inside & ((value.sum(-1) - self.k).abs() <= tol)

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k})"


k_hot = KHot
relaxed_k_hot = RelaxedKHot


# ------------------------------------------------------------------------------- operators
def hard_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k-hot vector of the ``k`` largest entries of ``scores`` along the last dimension
    (exactly ``k`` ones, ties broken by ``torch.topk``); no gradient."""
    index = scores.detach().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(scores).scatter_(-1, index, 1.0)


_LOG2E = 1.0 / math.log(2.0)
_LN_TINY64 = float(torch.tensor(torch.finfo(torch.float64).tiny, dtype=torch.float64).log().float())
"""``ln`` of float64's ``tiny`` (the clamp of the uniform in ``exponential_like``), rounded to float32."""
_ORDER_INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
              torch.bfloat16: torch.int16}


def _order_keys(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Keys with the order of ``x`` for ``topk``: on CPU the integers whose order is that of the
    floats (their bits, with the low 31 (63, 15) bits of negative numbers flipped), written into
    ``out``'s storage; elsewhere ``x`` itself.

    ``torch.topk`` on CPU compares floats with a NaN-aware comparator; on these integers it is
    1.5x faster (n = 1000, k = 100) and selects the same values (``-0.0`` ranks below ``+0.0``,
    a tie either way for the floats)."""
    itype = _ORDER_INT.get(x.dtype)
    if itype is None or x.device.type != "cpu":
        return x
    info = torch.iinfo(itype)
    bits, keys = x.view(itype), out.view(itype)
    torch.bitwise_right_shift(bits, info.bits - 1, out=keys)  # -1 on negative floats, 0 elsewhere
    return keys.bitwise_and_(info.max).bitwise_xor_(bits)


def _solve_threshold(x: torch.Tensor, k: int, steps: int, scratch: torch.Tensor | None = None):
    """Solve ``Σ_i σ(x_i - ν) = k`` for ``ν`` (``x`` detached, ``1 <= k < n``).

    Works on the side of the top ``k`` with at most ``n / 2`` entries: on ``x`` itself when
    ``2k <= n``, else on ``-x`` with ``n - k`` (``Σ σ(ν - x_i) = n - k``, ``ν -> -ν``; the same
    bracket, start and steps by symmetry).  Returns ``(ν, index, flip, rest, top, buf)``:
    ``ν`` (shape ``x.shape[:-1] + (1,)``), ``index`` the ``m`` (``= k``, or ``n - k`` when
    ``flip``) entries of the top ``m`` of ``w = ±x``, ``rest`` a fresh copy of ``w`` with
    ``-inf`` there, ``top = w[index]`` and a scratch tensor shaped like ``x``.  With a
    ``scratch`` tensor (contiguous, shaped like ``x``), ``rest`` is ``x`` itself, overwritten,
    and the scratch tensor is ``scratch``: no fresh full-size tensor.

    The residual is evaluated as ``Σ_rest σ(z_i) - Σ_top σ(-z_i)``, ``z = w - ν``, so that
    saturated entries add small terms with full relative precision instead of ones and zeros:
    one pass over ``rest`` (where the top entries add ``σ(-inf) = 0``) and one over the
    ``m``-column ``top``; no sign tensor.

    Method: a bracket ``[lo, hi]`` that always holds the root, a closed-form start, and
    Newton steps (a fixed number, no host sync) on ``φ(ν) = log R(ν) - log T(ν)``, with
    ``R = Σ_rest σ(z_i)`` and ``T = Σ_top σ(-z_i)``: strictly decreasing with the same root as ``R - T = Σ σ(z_i) - k`` and the same sign, and
    linear in ``ν`` (so exact in one step) where each side is a single exponential (the
    saturated rows: ``R ∝ e^{-ν}``, ``T ∝ e^{ν}``) or each side a multiple of the sigmoid of
    one tie cluster straddling ``ν`` (``R = a σ(u)``, ``T = b σ(-u)``: ``φ = log(a/b) + u``),
    the rows where Newton on ``R - T`` or on ``log Σ σ(z_i)`` needed 7-8 steps.  Each step
    is clamped to the bracket, which shrinks at every step by the sign of ``φ``.
    """
    n = x.shape[-1]
    flip = 2 * k > n
    if flip:
        k = n - k
    if scratch is None:
        rest = torch.neg(x) if flip else x.clone()
        buf = torch.empty_like(x)  # one scratch tensor for every pass: fresh blocks cost page faults on CPU
    else:
        rest, buf = (x.neg_() if flip else x), scratch
    if k == 1:  # one pass, 10x faster than topk on CPU
        index = rest.argmax(-1, keepdim=True)
    else:
        index = _order_keys(rest, buf).topk(k, dim=-1, sorted=False).indices
    top = rest.gather(-1, index)
    rest.scatter_(-1, index, -math.inf)
    xk, xk1 = top.amin(-1, keepdim=True), rest.amax(-1, keepdim=True)  # x_(k), x_(k+1)
    # Rows with exactly k finite entries (x_(k+1) = -inf; on -x, x_(k) = +inf): the root is at
    # -inf (+inf) and y the k-hot of the finite entries.  A finite stand-in far enough away that
    # every σ of the finite side saturates (σ(-gap/2) underflows to 0) gives exactly that.
    gap = -4.0 * math.log(torch.finfo(x.dtype).tiny * torch.finfo(x.dtype).eps)
    xk1 = torch.where(xk1 == -math.inf, torch.addcmul(xk, xk.abs() + 1.0, xk.new_tensor(-gap)), xk1)
    xk = torch.where(xk == math.inf, torch.addcmul(xk1, xk1.abs() + 1.0, xk1.new_tensor(gap)), xk)
    # Bracket, by counting: at ν = x_(k+1) - log k the k + 1 largest entries have σ >= k/(k+1),
    # so Σσ >= k; at ν = x_(k) + log(n-k) the n - k + 1 smallest have σ <= 1/(n-k+1), so Σσ <= k.
    lo = xk1 - math.log(k)
    hi = xk + math.log(n - k)
    # Closed-form start, exact when the top k are far above ν and the rest far below:
    # Σ_rest e^{x_i - ν} = Σ_top e^{ν - x_i}  =>  ν = (x_(k) + x_(k+1) + log S_rest - log S_top) / 2
    # with S_top = Σ_top e^{x_(k) - x_i} and S_rest = Σ_rest e^{x_i - x_(k+1)}, every term <= 1,
    # both sums >= 1 (x_(k) and x_(k+1) add 1 each): one pass over the rest, as 2^{(x_i - x_(k+1)) log2 e}
    # (exp2 is 2-3x faster than exp on CPU and has no slow path where e^u underflows; the
    # start needs no last-ulp accuracy: the steps below converge from it).
    s_rest = torch.sub(rest, xk1, out=buf).mul_(_LOG2E).exp2_().sum(-1, keepdim=True).clamp_min_(1.0)
    s_top = torch.sub(xk, top).mul_(_LOG2E).exp2_().sum(-1, keepdim=True).clamp_min_(1.0)
    nu = torch.clamp(0.5 * (xk + xk1 + s_rest.log_() - s_top.log_()), lo, hi)
    finfo = torch.finfo(x.dtype)
    tiny, least = finfo.tiny, finfo.tiny * finfo.eps  # least: the smallest subnormal, R = 0 or T = 0 only by underflow
    for _ in range(steps):  # a fixed count: no data-dependent host sync
        a = torch.sub(rest, nu, out=buf).sigmoid_()  # σ(z) off the top (0 on it)
        at = torch.sub(nu, top).sigmoid_()  # σ(-z) on the top
        r, t = a.sum(-1, keepdim=True), at.sum(-1, keepdim=True)
        up = r > t  # ν below the root; at R = T, ν is the root: hi = ν, and the step below is 0
        lo = torch.where(up, nu, lo)
        hi = torch.where(up, hi, nu)
        # -φ' = Σ_rest σ'(z)/R + Σ_top σ'(-z)/T, with Σ σ' = Σ a - Σ a² on each side (norms: no product tensor)
        qr = torch.linalg.vector_norm(a, dim=-1, keepdim=True)
        qt = torch.linalg.vector_norm(at, dim=-1, keepdim=True)
        r, t = r.clamp_min_(least), t.clamp_min_(least)
        slope = torch.addcmul(r, qr, qr, value=-1.0).div_(r).add_(torch.addcmul(t, qt, qt, value=-1.0).div_(t))
        nu = torch.clamp(nu + (r.log_() - t.log_()).div_(slope.clamp_min_(tiny)), lo, hi)
    return nu, index, flip, rest, top, buf


class _RelaxedTopK(torch.autograd.Function):
    """``y = σ(x - ν(x))`` with the implicit-function gradient ``dν/dx_j = σ'_j / Σ_i σ'_i``.

    Outputs ``y`` and the index of the side solved on (see :func:`_solve_threshold`): the top
    ``k`` of ``x``, or its bottom ``n - k`` when ``2k > n``."""

    @staticmethod
    def forward(ctx, x, k, steps, scratch=None):
        # scratch given: x is the caller's own fresh tensor; y is written over it (marked dirty)
        nu, index, flip, rest, top, buf = _solve_threshold(x, k, steps, scratch)
        # σ(±z) off the solved side, in rest's storage, and σ' = σ - σ² there (accurate where saturated)
        a = torch.sub(rest, nu, out=rest).sigmoid_()
        d = torch.addcmul(a, a, a, value=-1.0, out=buf)
        at = torch.sub(nu, top).sigmoid_()  # σ(∓z) on the solved side
        d.scatter_(-1, index, at.addcmul(at, at, value=-1.0))
        ctx.save_for_backward(d, d.sum(-1, keepdim=True).clamp_min_(torch.finfo(d.dtype).tiny))
        ctx.mark_non_differentiable(index)
        y = a.neg_().add_(1.0) if flip else a  # σ(z) off the top k
        y.scatter_(-1, index, at if flip else at.neg_().add_(1.0))
        if scratch is not None:
            ctx.mark_dirty(x)
        return y, index

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_idx):
        # dy_i = σ'_i (dx_i - Σ_j σ'_j dx_j / Σ_j σ'_j): one reduction, Σ σ' kept from the forward
        d, total = ctx.saved_tensors
        gd = grad_y * d
        return gd.addcmul_(d, gd.sum(-1, keepdim=True) / total, value=-1.0), None, None, None


def _k_hot(like: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """The k-hot vector of the top ``k`` from :class:`_RelaxedTopK`'s index (of the top ``k``,
    or of the bottom ``n - k`` when ``2k > n``)."""
    if 2 * k > like.shape[-1]:
        return torch.ones_like(like).scatter_(-1, index, 0.0)
    return torch.zeros_like(like).scatter_(-1, index, 1.0)


def _relaxed_topk(scores: torch.Tensor, k: int, tau: float, steps: int | None = None, *, own: bool = False,
                  hot: bool = False, scratch: torch.Tensor | None = None):
    """``(soft, k_hot)``: the soft k-hot of :func:`relaxed_topk` and, with ``hot=True``, the
    exact k-hot of the top ``k`` (no gradient; else ``None``).

    ``own=True``: ``scores`` is a fresh tensor of the caller's, divided by a number ``tau`` in
    place; ``tau=None``: ``scores`` are already divided by the temperature.  ``scratch``: a
    contiguous tensor shaped like ``scores`` (fresh, the caller's) for the solve's scratch
    passes; then ``scores`` (fresh, contiguous, the caller's) is overwritten by the soft k-hot."""
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"relaxed_topk: need 1 <= k <= n, got k={k}, n={n}")
    if tau is None:
        x = scores
    else:
        x = scores.div_(tau) if own and not isinstance(tau, torch.Tensor) else scores / tau
    if k == n:
        return torch.ones_like(x) + 0 * x, (torch.ones_like(x) if hot else None)
    soft, index = _RelaxedTopK.apply(x, k, _default_steps(x.dtype) if steps is None else steps, scratch)
    return soft, (_k_hot(soft, index, k) if hot else None)


def relaxed_topk(scores: torch.Tensor, k: int, tau: float = 1.0, *, steps: int | None = None) -> torch.Tensor:
    r"""The soft k-hot vector ``y_i = σ(s_i/τ - ν)`` with ``Σ_i y_i = k`` (see the module docstring).

    Differentiable in ``scores``: the gradient of ``ν`` is that of the exact root (implicit
    function theorem), so ``dy_i/ds_j = σ'_i (δ_ij - σ'_j / Σ_l σ'_l) / τ`` (first order only).
    ``steps``: Newton steps of the threshold solve (default ``NEWTON_STEPS``, 4, and
    ``NEWTON_STEPS_FLOAT64``, 5, for float64 scores).

    Example:
        >>> y = relaxed_topk(torch.tensor([3.0, 1.0, 0.0, -2.0]), k=2, tau=0.5)
        >>> round(y.sum().item(), 5), y.argsort(descending=True)[:2].tolist()
        (2.0, [0, 1])
    """
    return _relaxed_topk(scores, k, tau, steps)[0]


def _gumbel(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``G = -log E`` for the scores, in ``like``'s dtype and device.

    ``E ~ Exp(1)`` comes from :func:`~relaxit_core.distributions.exponential_like` (on CPU
    ``-log U`` of a float64 uniform: ``E`` in ``[1.1e-16, 708.4]``, both tails exact to
    ``2^-53``) and is rounded once to float32, which holds that whole range as normal
    numbers; the outer ``log`` is then taken in float32 (in float64 for float64 scores):
    ``G`` keeps the tails of ``gumbel_like`` (``[-6.6, 36.8]``) and is within ``2^-24``
    absolute (plus the ``log``'s rounding) of it, the rounding that adding ``G`` to a logit
    of size 1 commits in float32 anyway; one float64 ``log`` pass fewer.
    """
    if like.dtype == torch.float64:
        return gumbel_like(shape, like)
    wide = torch.promote_types(like.dtype, torch.float32)
    e = exponential_like(shape, torch.empty((), dtype=wide, device=like.device))
    return e.log_().neg_().to(like.dtype)


@lru_cache(maxsize=None)
def _permutations(k: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(k)))


def set_log_prob(logits: torch.Tensor, value: torch.Tensor, k: int) -> torch.Tensor:
    r"""``log P(S)``: the probability that ``k`` draws without replacement from
    ``softmax(logits)`` give the set ``S`` of the k-hot ``value`` (in any order).

    Exact: sums the Plackett–Luce probabilities of the ``k!`` orderings of ``S`` in log
    space (module docstring), so its cost is ``O(k! k)`` per set.
    """
    logits, value = torch.broadcast_tensors(logits - logits.logsumexp(-1, keepdim=True), value)
    in_set = value > 0.5
    index = value.detach().topk(k, dim=-1).indices  # the k members, in any order (the sum is symmetric)
    log_p = logits.gather(-1, index)  # [..., k]
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    log_rest = torch.where(in_set, neg_inf, logits).logsumexp(-1)  # log p̄
    perms = torch.tensor(_permutations(k), device=logits.device)  # [k!, k]
    ordered = log_p[..., perms]  # [..., k!, k]
    # log of the remaining mass before each draw: p̄ + Σ_{l >= j} p_{σ_l}
    suffix = ordered.flip(-1).logcumsumexp(-1).flip(-1)
    log_den = torch.logaddexp(suffix, log_rest[..., None, None])
    return log_p.sum(-1) + (-log_den.sum(-1)).logsumexp(-1)


# -------------------------------------------------------------------------------- the laws
class GumbelTopK(TorchDistribution):
    r"""Soft k-hot relaxation of ``k`` draws without replacement from ``softmax(logits)``.

    ``rsample``: ``y = relaxed_topk(logits + g, k, τ)``, ``g`` i.i.d. Gumbel (module
    docstring); ``0 ≤ y_i ≤ 1``, ``Σ y = k``.  ``sample`` returns the same relaxed sample
    without gradient.

    No ``log_prob``: the density of the soft sample on the ``(n-1)``-dimensional slice
    ``{Σ y = k}`` has no tractable form, so this law serves ``rsample`` and ``estimate()``
    but cannot be a latent site of a Pyro ELBO (use :class:`StraightThroughGumbelTopK`,
    whose ``log_prob`` is the PMF of the hard set, or score the hard set yourself).

    Args:
        logits: ``[..., n]`` unnormalised log-probabilities, or
        probs: ``[..., n]`` probabilities on the simplex (converted with ``log``, never
            used as logits).
        k: subset size, ``1 <= k <= n``.
        temperature: ``τ > 0``, a number or a tensor with one temperature per batch element
            (shape broadcast with ``logits.shape[:-1]``).

    Example:
        >>> d = GumbelTopK(logits=torch.zeros(2, 6), k=3, temperature=0.5)
        >>> y = d.rsample((4,))
        >>> y.shape, bool(torch.allclose(y.sum(-1), torch.tensor(3.0)))
        (torch.Size([4, 2, 6]), True)
    """

    arg_constraints = {"probs": simplex, "logits": constraints.independent(constraints.real, 1)}
    has_rsample = True

    def __init__(self, probs=None, logits=None, *, k: int, temperature: float | torch.Tensor = 1.0,
                 validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError(f"{type(self).__name__}: give exactly one of `probs` or `logits`")
        param = probs if probs is not None else logits
        if param.dim() < 1:
            raise ValueError(f"{type(self).__name__}: `logits`/`probs` need a last dimension of items")
        n = param.shape[-1]
        if not 1 <= int(k) <= n:
            raise ValueError(f"{type(self).__name__}: need 1 <= k <= n, got k={k} with n={n} items")
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(dtype=param.dtype, device=param.device)
            if validating(validate_args) and not bool((temperature > 0).all()):
                raise ValueError(f"{type(self).__name__}: argument 'temperature' must be positive")
            batch = torch.broadcast_shapes(param.shape[:-1], temperature.shape)
            temperature = temperature.expand(batch)
            param = param.expand(batch + param.shape[-1:])
            probs, logits = (param, None) if probs is not None else (None, param)
        else:
            temperature = float(temperature)
        if probs is not None:
            self.probs = probs
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self._param = param
        self.k = int(k)
        self.temperature = temperature
        super().__init__(param.shape[:-1], param.shape[-1:], validate_args=validate_args)

    def _tau(self):
        """The temperature, broadcastable against ``[..., n]`` scores."""
        t = self.temperature
        return t.unsqueeze(-1) if isinstance(t, torch.Tensor) else t

    @lazy_property
    def logits(self):
        return as_logits(self.probs, 1)

    @lazy_property
    def probs(self):
        return self.logits.softmax(-1)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        return RelaxedKHot(self.k)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        for key in ("probs", "logits"):
            if key in self.__dict__:
                setattr(new, key, getattr(self, key).expand(shape))
        new._param = new.__dict__.get("logits", new.__dict__.get("probs"))
        t = self.temperature
        new.k, new.temperature = self.k, (t.expand(batch_shape) if isinstance(t, torch.Tensor) else t)
        super(GumbelTopK, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, **arg_shapes):
        shape = torch.Size(arg_shapes.get("logits", arg_shapes.get("probs")))
        return torch.broadcast_shapes(shape[:-1], torch.Size(arg_shapes.get("temperature", ()))), shape[-1:]

    def _scores(self, sample_shape):
        logits = self.logits
        shape = self._extended_shape(torch.Size(sample_shape))
        return _gumbel(shape, logits).add_(logits)  # a fresh tensor: no further allocation

    def _scaled_scores(self, sample_shape):
        """``(x, scratch)``: ``x = (logits + g) / τ`` in a fresh tensor, ``g`` the Gumbel noise of
        :meth:`_scores`, and a fresh scratch tensor shaped like ``x`` for the solve (or ``None``).

        For float32 logits on CPU with a number ``τ`` (and 2^16 entries or more): ``ln E`` is
        rounded to float32 straight from the float64 log, and ``x = (ln E - logits) / (-τ)`` is
        formed in place: bit for bit ``(logits + g) / τ`` (``-ln E`` rounded the same way, and
        negation is exact), with three passes fewer.  The float64 uniforms are drawn in two
        (three) chunks into the scratch tensor's storage, the same stream as one draw: two fresh
        float32 tensors in all instead of five (fresh blocks cost page faults on CPU)."""
        logits, tau = self.logits, self._tau()
        shape = self._extended_shape(torch.Size(sample_shape))
        numel = shape.numel()
        if (logits.dtype is not torch.float32 or logits.device.type != "cpu" or isinstance(tau, torch.Tensor)
                or numel < 2**16):
            scores = self._scores(sample_shape)
            return (scores.div_(tau) if not isinstance(tau, torch.Tensor) else scores / tau), None
        x, scratch = torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)
        chunk = numel // 2
        wide, flat = scratch.view(-1)[: 2 * chunk].view(torch.float64), x.view(-1)
        for start in range(0, numel, chunk):  # 2 or 3 chunks
            stop = min(start + chunk, numel)
            torch.log(wide[: stop - start].uniform_(), out=flat[start:stop])  # ln U, as exponential_like draws U
        x.clamp_min_(_LN_TINY64).neg_().log_()  # ln E, E = -ln max(U, tiny) rounded to float32
        return x.sub_(logits).div_(-tau), scratch

    def rsample(self, sample_shape=torch.Size()):
        x, scratch = self._scaled_scores(sample_shape)
        return _relaxed_topk(x, self.k, None, scratch=scratch)[0]

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


class StraightThroughGumbelTopK(GumbelTopK):
    r"""Exactly k-hot samples: the Gumbel top-k set (``k`` draws without replacement from
    ``softmax(logits)``, Kool et al. 2019), with the gradient of the soft k-hot relaxation
    (straight-through: the forward value is exactly the k-hot vector).

    ``log_prob(value)`` is the probability mass ``P(S)`` of the unordered set ``S`` of a
    k-hot ``value`` (module docstring), computed exactly by summing the Plackett–Luce
    probabilities of its ``k!`` orderings; it is available for ``k <= MAX_LOG_PROB_K``
    (7) and raises ``NotImplementedError`` beyond.  ``enumerate_support`` lists the
    ``C(n, k)`` k-hot vectors in lexicographic order of their index sets.

    Example:
        >>> d = StraightThroughGumbelTopK(logits=torch.zeros(5), k=2, temperature=0.5)
        >>> x = d.rsample((3,))
        >>> x.sum(-1).tolist(), round(d.log_prob(x[0]).exp().item(), 4)
        ([2.0, 2.0, 2.0], 0.1)
    """

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return KHot(self.k)

    @property
    def has_enumerate_support(self):
        return self.k <= MAX_LOG_PROB_K

    def rsample(self, sample_shape=torch.Size()):
        x, scratch = self._scaled_scores(sample_shape)
        soft, hot = _relaxed_topk(x, self.k, None, hot=True, scratch=scratch)
        return straight_through(hot, soft)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return hard_topk(self._scores(sample_shape), self.k)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        if self.k > MAX_LOG_PROB_K:
            raise NotImplementedError(
                f"log_prob of a {self.k}-subset sums {self.k}! orderings; it is offered for k <= {MAX_LOG_PROB_K}"
            )
        # a PMF is locally constant in the value: keep the value in the graph with derivative 0
        # (so that a straight-through sample's other inputs, e.g. a tensor temperature, get 0, not None)
        return set_log_prob(self.logits, value, self.k) + 0.0 * value.sum(-1)

    def enumerate_support(self, expand=True):
        n = self.event_shape[0]
        idx = torch.combinations(torch.arange(n, device=self._param.device), self.k)  # [C, k]
        values = torch.zeros(idx.shape[0], n, dtype=self._param.dtype, device=self._param.device)
        values.scatter_(-1, idx, 1.0)
        values = values.view((-1,) + (1,) * len(self.batch_shape) + (n,))
        return values.expand((-1,) + self.batch_shape + (n,)) if expand else values

    @property
    def mean(self):
        raise NotImplementedError("the inclusion probabilities of a Gumbel top-k set have no closed form")


# ---------------------------------------------------------------------------- estimator
class KSubsetEstimatorBase(relaxit_core.EstimatorBase):
    """Base of the k-subset estimators (``config.k``): example events with at least ``k + 2``
    items, so that the conformance kit's draws are never forced (every item chosen)."""

    def example_params(self, batch_shape=(), *, event_size=3, dtype=torch.float32, device=None,
                       generator=None, extreme=False):
        return super().example_params(batch_shape, event_size=max(event_size, self.config.k + 2), dtype=dtype,
                                      device=device, generator=generator, extreme=extreme)


class GumbelTopKEstimator(KSubsetEstimatorBase):
    r"""Gumbel top-k relaxation of a k-subset (k draws without replacement), pathwise; ``hard=True`` is straight-through.

    Samples ``s = logits + g`` (Gumbel), the top ``k`` of ``s`` form the subset (Kool et al.
    2019, eq. 3); the relaxed k-hot is ``y = σ(s/τ - ν)`` with ``Σ y = k`` (the
    k-independent, entropy-regularised top-k; Xie & Ermon 2019 relax the same operator by
    ``k`` successive softmaxes).  ``hard=True`` forwards exactly the k-hot vector and
    back-propagates through ``y``.  One objective evaluation per sample; biased for the
    discrete objective.

    ``log_prob`` (``LOG_PROB``) is claimed only with ``hard=True`` and ``k <= 7``: the
    exact probability of the unordered set.  The soft law has no ``log_prob`` (see
    :class:`GumbelTopK`).  ``tau`` may also be given to ``distribution()`` / ``estimate()``
    as an optional tensor, one temperature per batch element, overriding the config's number.

    Maths:
        :Law: :math:`s = \theta + g`, :math:`g` i.i.d. Gumbel; the top :math:`k` of :math:`s` are
            :math:`k` draws without replacement from :math:`\operatorname{softmax}(\theta)`
            (Kool et al. 2019, eq. 3), and their k-hot vector has the law of the unordered set.
        :Estimator: pathwise through the entropy-regularised top-k (Amos et al. 2019, eqs. 2-4),
            a relaxation of the operator that Xie & Ermon (2019, Sec. 3.2) relax by :math:`k` softmaxes:

            .. math::
                y_i = \sigma\Bigl(\frac{s_i}{\tau} - \nu\Bigr), \quad \sum_i y_i = k, \qquad
                \hat g = \nabla_\theta f(y),

            with :math:`\partial\nu/\partial s` from the implicit function theorem; ``hard=True``
            forwards the k-hot top-k and back-propagates through :math:`y`.
        :Gradient: :math:`\nabla_\theta \mathbb{E}[f(y)]`, the gradient of the relaxed objective: biased
            for the discrete one.
        :Cost: :math:`S` objective evaluations; one ``topk`` and a fixed number of elementwise passes
            (four Newton steps in float32, five in float64), independent of :math:`k`: 11-19x faster
            than the loop of :math:`k` softmaxes at :math:`k = 100`, :math:`n = 1000` on CPU.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("gumbel_topk", k=2, hard=True)
        >>> logits = torch.zeros(3, 6, requires_grad=True)
        >>> out = est.estimate(lambda z: (z * torch.arange(6.0)).sum(-1), num_samples=4, logits=logits)
        >>> out.samples.sum(-1).unique().tolist(), out.value.shape
        ([2.0], torch.Size([3]))
    """

    name: ClassVar[str] = "gumbel_topk"
    family: ClassVar[str] = "subset"
    params: ClassVar[tuple[str, ...]] = ("logits", "probs", "tau")
    optional_params: ClassVar[tuple[str, ...]] = ("tau",)
    capabilities: ClassVar[frozenset] = frozenset({C.RSAMPLE, C.HARD, C.LOG_PROB, C.ENUMERATE_SUPPORT})
    reference: ClassVar[str] = (
        "Kool, van Hoof & Welling (2019), Stochastic Beams and Where to Find Them, ICML, Sec. 2, eq. 3 "
        "(Gumbel top-k); Xie & Ermon (2019), Reparameterizable Subset Sampling via Continuous Relaxations, "
        "IJCAI, Sec. 3.2; Amos, Xu & Kolter (2019), The Limited Multi-Label Projection Layer, eqs. 2-4"
    )
    example_config: ClassVar[dict] = {"k": 3, "tau": 0.5}
    """The config of the docs' generated example: a 3-subset at a moderate temperature (``k = 1`` would be a plain categorical)."""
    conformance_configs = ({}, {"hard": True}, {"k": 2, "tau": 0.05, "hard": True}, {"k": 8, "hard": True})

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`GumbelTopKEstimator`."""

        name: Literal["gumbel_topk"] = "gumbel_topk"
        k: int = Field(1, ge=1, le=1_000_000, description="Subset size: the number of draws without replacement.")
        tau: Temperature = Field(
            1.0, description="Temperature of the relaxed k-hot vector.")
        hard: bool = Field(False, description="Straight-through: forward exactly k-hot, backward soft.")

    @classmethod
    def capabilities_for(cls, config):
        if not config.hard:
            return frozenset({C.RSAMPLE})
        if config.k > MAX_LOG_PROB_K:
            return frozenset({C.RSAMPLE, C.HARD})
        return cls.capabilities

    def build_distribution(self, logits=None, probs=None, tau=None):
        param = logits if logits is not None else probs
        if param.dim() < 1 or param.shape[-1] < self.config.k:
            raise ParameterError(
                f"{self.name}: k={self.config.k} needs at least k items in the last dimension, "
                f"got shape {tuple(param.shape)}"
            )
        law = StraightThroughGumbelTopK if self.config.hard else GumbelTopK
        return law(probs=probs, logits=logits, k=self.config.k, temperature=self.current_temperature("tau") if tau is None else tau)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [GumbelTopKEstimator]
