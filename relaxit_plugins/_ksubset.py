r"""The exact k-subset law ``p(z) ∝ exp(θ·z) 1[Σ_i z_i = k]`` (shared by ``simple`` and ``sfess``).

Independent Bernoulli variables with logits ``θ`` conditioned on exactly ``k`` ones (the
"conditional Poisson" or k-subset exponential family of Ahmed et al. 2023, *SIMPLE: A
Gradient Estimator for k-Subset Sampling*, ICLR).  Its partition function is the
elementary symmetric polynomial ``Z(θ) = e_k(e^{θ_1}, …, e^{θ_n})`` and its mean is the
vector of exact inclusion probabilities ``μ_i = P(z_i = 1) = ∂ log Z / ∂θ_i``.

The dynamic program, in log space.  With ``P_j[m] = log e_j(e^{θ_0}, …, e^{θ_{m-1}})`` (the
first ``m`` items, ``m = 0..n``) the recursion ``e_j(x_{<m+1}) = e_j(x_{<m}) + x_m e_{j-1}(x_{<m})``
unrolls into a cumulative sum over ``m``:

.. math::
    P_0[m] = 0, \qquad P_j[0] = -\infty \ (j \ge 1), \qquad
    P_j[m + 1] = \operatorname{logcumsumexp}_{m' \le m} \bigl(θ_{m'} + P_{j-1}[m']\bigr),

so the table costs ``k`` vectorised ``logcumsumexp`` passes over ``[batch, n]`` (a loop over
``j``, never over the batch or the items), ``Θ(B·n·k)`` work, and ``log Z = P_k[n]``.  When
``k > n/2`` the complement is used (``z ↦ 1 - z`` maps the law with ``(θ, k)`` to the law with
``(-θ, n - k)``), so the loop has ``min(k, n - k)`` steps.

- Marginals: the same table for the reversed items gives suffix sums ``S_j[m]`` (items
  ``m..n-1``) and ``μ_i = exp(θ_i - log Z + logsumexp_j (P_j[i] + S_{k-1-j}[i+1]))``, exact
  to rounding (differentiable: ``simple`` back-propagates through it).
- Exact sampling: ``P_r`` is, up to normalisation, the log-CDF of the position of the last
  of ``r`` ones: ``P(last one < m | r ones among the first e items) = exp(P_r[m] - P_r[e])``.
  Drawing the positions from the last one backwards is ``k`` inverse-CDF steps, each one
  ``searchsorted`` per sample (``Θ(S·B·k·log n)`` after the table).
- Divide and conquer (:func:`log_partition_tree`): ``Z`` is the coefficient of ``x^k`` in
  ``Π_i (1 + e^{θ_i} x)``; multiplying the factors pairwise in a balanced tree, truncated at
  degree ``k``, in log space, takes ``⌈log2 n⌉`` batched steps — the form for accelerators,
  where the ``n`` sequential steps of the DP are launch-bound; autograd gives its marginals.
- Precision: the table holds log-space values of magnitude up to ``|log Z|``, so in float32
  the marginals carry an absolute rounding error of about ``|log Z| · 2^-24`` (``~1e-4`` at
  ``n = 1000``, ``k = 100``, logits of scale 2; in float64 the error is at the ``1e-15`` level
  for small ``n``, and the tests check ``1e-6`` against enumeration and the DFT).  Half-precision logits are computed in float32; pass float64 logits where the
  marginals' last digits matter.
- ``log p(z) = θ·z - log Z``; ``enumerate_support`` lists the ``C(n, k)`` k-hot vectors in
  the lexicographic order of ``itertools.combinations(range(n), k)``.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.distributions.utils import lazy_property

from relaxit_core.errors import ParameterError
from relaxit_plugins.gumbel_topk import KHot

__all__ = [
    "KSubset",
    "log_partition",
    "inclusion_probs",
    "sample_k_subset",
    "sample_and_marginals",
    "log_partition_tree",
    "prefix_table",
    "MAX_ENUMERATE",
]

MAX_ENUMERATE = 1 << 20
"""The most k-hot vectors that ``enumerate_support`` lists."""


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _neg(dtype: torch.dtype) -> float:
    """A finite stand-in for ``log 0`` (keeps differences of table entries free of ``inf - inf``)."""
    return -0.25 * torch.finfo(dtype).max


def prefix_table(theta: torch.Tensor, k: int) -> torch.Tensor:
    """The table ``P[m, ..., j] = log e_j(exp θ[..., :m])``, shape ``[n + 1, *batch, k + 1]``.

    ``theta`` has shape ``[*batch, n]``.  Two vectorised operations over ``[*batch, k]`` per
    item, written into one preallocated table (module docstring); ``log 0`` is a large finite
    negative number.  Not differentiable (:func:`log_partition` and :func:`inclusion_probs`
    have exact backward passes of their own).
    """
    n = theta.shape[-1]
    batch = theta.shape[:-1]
    with torch.no_grad():
        theta = theta.detach()
        out = theta.new_empty((n + 1,) + batch + (k + 1,))
        out[..., 0] = 0.0
        out[0, ..., 1:] = _neg(theta.dtype)
        cols = theta.unsqueeze(-1).movedim(-2, 0)  # [n, *batch, 1]
        compiling = torch.compiler.is_compiling()  # dynamo refuses non-contiguous out= (same values)
        for m in range(n):
            if compiling:
                out[m + 1, ..., 1:] = torch.logaddexp(out[m, ..., 1:], out[m, ..., :-1] + cols[m])
            else:
                torch.logaddexp(out[m, ..., 1:], out[m, ..., :-1] + cols[m], out=out[m + 1, ..., 1:])
    return out


def _ratio_table(table: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``R[m, ..., j] = E[g·z_{<m} | j ones among the first m items]`` under the weights of a
    prefix ``table`` (``[n + 1, *batch, J]``) — the expectation semiring of the same DP, in
    ratio form: ``R[m+1, j] = a R[m, j] + (1 - a)(R[m, j-1] + g_m)``, ``a = exp(P[m, j] - P[m+1, j])``,
    a convex combination (no overflow)."""
    n = g.shape[-1]
    keep = torch.exp(table[:-1, ..., 1:] - table[1:, ..., 1:])  # [n, *batch, J - 1]
    cols = g.unsqueeze(-1).movedim(-2, 0)  # [n, *batch, 1]
    out = torch.zeros_like(table)
    compiling = torch.compiler.is_compiling()
    for m in range(n):
        if compiling:
            out[m + 1, ..., 1:] = torch.lerp(out[m, ..., :-1] + cols[m], out[m, ..., 1:], keep[m])
        else:
            torch.lerp(out[m, ..., :-1] + cols[m], out[m, ..., 1:], keep[m], out=out[m + 1, ..., 1:])
    return out


def _oriented(theta: torch.Tensor, k: int):
    """``(θ', k', flipped)``: the complement when it has fewer ones (``k' = min(k, n - k)``).

    A masked item (``θ = -inf``) is always in the complement, where its weight ``-θ`` would be
    ``+inf`` (``inf - inf`` in the tables): it enters the complement's problem as a finite
    weight above its row's other items by the margin at which, back in the law, its inclusion
    probability underflows to exactly 0 in ``θ``'s dtype (``-log`` of the smallest subnormal,
    plus ``log n + 1``)."""
    n = theta.shape[-1]
    if 2 * k > n:
        info = torch.finfo(theta.dtype)
        margin = -math.log(info.smallest_normal * info.eps) + math.log(n) + 1.0
        masked = theta == -math.inf
        lowest = theta.masked_fill(masked, math.inf).amin(-1, keepdim=True)
        theta = torch.where(masked, lowest - margin, theta)
        return -theta, n - k, True
    return theta, k, False


def _check_k(theta: torch.Tensor, k: int, what: str) -> None:
    if theta.dim() < 1:
        raise ParameterError(f"{what}: `logits` need a last dimension of items")
    n = theta.shape[-1]
    if not 0 <= k <= n:
        raise ParameterError(f"{what}: need 0 <= k <= n, got k={k} with n={n} items in `logits`")


def _forward_backward(t: torch.Tensor, k: int, fwd: torch.Tensor | None = None):
    """``(μ, log Z, fwd, bwd, comb)`` for ``0 < k < n`` (``t`` oriented, working dtype).

    ``fwd``: the prefix table (reused when given, e.g. from the sampler); ``bwd``: the prefix
    table of the reversed items (``bwd[m]``: the last ``m`` items); ``comb[i]``:
    ``logsumexp_j`` of :func:`_pair_terms`.
    """
    n = t.shape[-1]
    if fwd is None:
        fwd = prefix_table(t, k)  # [n + 1, *batch, k + 1]
    bwd = prefix_table(t.flip(-1), k - 1)
    log_z = fwd[-1, ..., k]
    # μ_i ∝ e^{θ_i} Σ_j e_j(items < i) e_{k-1-j}(items > i); bwd[n - 1 - i] covers items > i
    comb = _pair_terms(fwd, bwd, k).logsumexp(-1)  # [n, *batch]
    mu = torch.exp(t + comb.movedim(0, -1) - log_z.unsqueeze(-1))
    return mu, log_z, fwd, bwd, comb


def _pair_terms(fwd: torch.Tensor, bwd: torch.Tensor, k: int) -> torch.Tensor:
    """``[i, ..., j] = log e_j(items < i) + log e_{k-1-j}(items > i)``, shape ``[n, *batch, k]``."""
    return fwd[:-1, ..., :k] + bwd[:-1, ..., :k].flip(0).flip(-1)


def _covariance_times(t, k, g, fwd, bwd, comb, mu):
    """``Cov(z) g`` for the oriented law: ``μ_i (g_i + E[g·z_{-i} | z_i = 1] - g·μ)``, the
    conditional expectation from the ratio tables of both directions (no autograd)."""
    r_fwd = _ratio_table(fwd, g)  # [n + 1, *batch, k + 1]
    r_bwd = _ratio_table(bwd, g.flip(-1))  # [n + 1, *batch, k]
    # given z_i = 1 and j ones before i: E[g·z_{<i}] = r_fwd[i, j], E[g·z_{>i}] = r_bwd[n-1-i, k-1-j]
    cond = r_fwd[:-1, ..., :k] + r_bwd[:-1, ..., :k].flip(0).flip(-1)  # [n, *batch, k]
    weight = torch.exp(_pair_terms(fwd, bwd, k) - comb.unsqueeze(-1))  # P(j ones before i | z_i = 1)
    rest = (weight * cond).sum(-1).movedim(0, -1)  # [*batch, n]
    return mu * (g + rest - (g * mu).sum(-1, keepdim=True))


class _LogPartition(torch.autograd.Function):
    """``log Z`` with the exact gradient ``μ`` (no tape through the dynamic program)."""

    @staticmethod
    def forward(ctx, t, k):
        t2, k2, flipped = _oriented(t, k)
        mu, log_z = _forward_backward(t2, k2)[:2]
        if flipped:  # log e_k(e^θ) = Σθ + log e_{n-k}(e^{-θ}), with θ' = -t2 (masked items' stand-ins)
            mu, log_z = 1 - mu, log_z - t2.sum(-1)
        ctx.save_for_backward(mu)
        return log_z

    @staticmethod
    def backward(ctx, grad):
        (mu,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * mu, None


class _Marginals(torch.autograd.Function):
    """``μ(θ)`` with the backward ``g ↦ Cov(z) g`` (``∂μ/∂θ`` is the covariance of ``z``,
    symmetric), from the expectation-semiring (ratio) tables of the same DP."""

    @staticmethod
    def forward(ctx, t, k, fwd):
        t2, k2, flipped = _oriented(t, k)
        mu, _, fwd, bwd, comb = _forward_backward(t2, k2, fwd)
        ctx.k2 = k2
        ctx.masked = (t == -math.inf) if flipped else None  # stand-ins in t2: their gradient is 0
        ctx.save_for_backward(t2, mu, fwd, bwd, comb)
        return 1 - mu if flipped else mu

    @staticmethod
    def backward(ctx, grad):
        t2, mu, fwd, bwd, comb = ctx.saved_tensors
        # the complement has the same covariance: Cov(1 - z) = Cov(z)
        out = _covariance_times(t2, ctx.k2, grad.to(t2.dtype), fwd, bwd, comb, mu)
        if ctx.masked is not None:
            out = out.masked_fill(ctx.masked, 0.0)
        return out, None, None


def log_partition(theta: torch.Tensor, k: int) -> torch.Tensor:
    """``log Σ_{|z| = k} exp(θ·z) = log e_k(exp θ)`` over the last dimension; differentiable
    (its gradient is :func:`inclusion_probs`)."""
    _check_k(theta, k, "log_partition")
    n = theta.shape[-1]
    t = theta.to(_work_dtype(theta.dtype))
    if k == 0:
        return (0 * t).sum(-1).to(theta.dtype)
    if k == n:
        return t.sum(-1).to(theta.dtype)
    return _LogPartition.apply(t, k).to(theta.dtype)


def inclusion_probs(theta: torch.Tensor, k: int, *, _table: torch.Tensor | None = None) -> torch.Tensor:
    """The exact marginals ``μ_i = P(z_i = 1)`` of the k-subset law, by the forward–backward
    form of the dynamic program (module docstring).  Differentiable in ``theta``: the
    backward pass multiplies by the covariance matrix of ``z`` (the Jacobian of ``μ``)."""
    _check_k(theta, k, "inclusion_probs")
    n = theta.shape[-1]
    t = theta.to(_work_dtype(theta.dtype))
    if k == 0 or k == n:
        return (torch.full_like(t, float(k == n)) + 0 * t).to(theta.dtype)
    return _Marginals.apply(t, k, _table).to(theta.dtype)


def sample_k_subset(theta: torch.Tensor, k: int, sample_shape: torch.Size = torch.Size(), *,
                    _table: torch.Tensor | None = None) -> torch.Tensor:
    """Exact samples of the k-subset law with logits ``theta`` (``[..., n]``): k-hot vectors of
    shape ``sample_shape + theta.shape`` in ``theta``'s dtype, without gradient.

    Inverse-CDF sampling of the positions of the ones, last first, from the prefix table
    (module docstring).
    """
    _check_k(theta, k, "sample_k_subset")
    sample_shape = torch.Size(sample_shape)
    n = theta.shape[-1]
    batch = theta.shape[:-1]
    s = int(sample_shape.numel())
    with torch.no_grad():
        t = theta.detach().to(_work_dtype(theta.dtype))
        t2, k2, flipped = _oriented(t, k)
        out = torch.zeros(batch + (s, n), dtype=theta.dtype, device=theta.device)
        if k2 > 0:
            table = prefix_table(t2, k2) if _table is None else _table
            table = table.movedim(-1, 0).movedim(1, -1).contiguous()  # [k + 1, *batch, n + 1]
            end = torch.full(batch + (s,), n, dtype=torch.long, device=theta.device)
            log_u = torch.rand(batch + (k2, s), dtype=torch.float64, device=theta.device)
            log_u = log_u.clamp_min_(torch.finfo(torch.float64).tiny).log_().to(t.dtype)
            for r in range(k2, 0, -1):
                cdf = table[r]  # P_r[m], non-decreasing in m: the log-CDF of the last one
                top = cdf.gather(-1, end)
                target = log_u[..., r - 1, :] + top
                m = torch.searchsorted(cdf, target, right=True)  # first m with P_r[m] > target
                pos = (m - 1).clamp(min=r - 1).minimum(end - 1)  # room for r - 1 ones before it
                out.scatter_(-1, pos.unsqueeze(-1), 1.0)
                end = pos
        if flipped:
            out = 1 - out
        out = out.movedim(-2, 0).reshape(sample_shape + batch + (n,))
    return out


def sample_and_marginals(theta: torch.Tensor, k: int, sample_shape: torch.Size = torch.Size()):
    """``(samples, μ)``: :func:`sample_k_subset` and :func:`inclusion_probs` sharing one prefix table."""
    _check_k(theta, k, "sample_and_marginals")
    n = theta.shape[-1]
    table = None
    if 0 < k < n:
        t2, k2, _ = _oriented(theta.detach().to(_work_dtype(theta.dtype)), k)
        table = prefix_table(t2, k2)
    return sample_k_subset(theta, k, sample_shape, _table=table), inclusion_probs(theta, k, _table=table)


@lru_cache(maxsize=64)
def _combination_index(n: int, k: int) -> torch.Tensor:
    """``[C(n, k), k]`` item indices in the order of ``itertools.combinations(range(n), k)``
    (``torch.combinations`` builds an ``n^k`` grid first)."""
    flat = list(itertools.chain.from_iterable(itertools.combinations(range(n), k)))
    return torch.tensor(flat, dtype=torch.long).reshape(math.comb(n, k), k)


class KSubset(TorchDistribution):
    r"""The k-subset law ``p(z) = exp(θ·z - log Z(θ)) 1[Σ z = k]`` on k-hot vectors.

    Independent ``Bernoulli(logits=θ)`` variables conditioned on exactly ``k`` ones (see the
    module docstring for the dynamic program).  ``sample`` is exact; ``log_prob`` is the
    probability mass; ``mean`` is the vector of exact inclusion probabilities;
    ``enumerate_support`` lists the ``C(n, k)`` k-hot vectors in lexicographic order of their
    index combinations (``itertools.combinations(range(n), k)``).  The law is invariant to
    adding a constant to every logit.

    Args:
        logits: ``[..., n]`` real scores ``θ``; ``-inf`` masks an item (never chosen, zero
            gradient); with validation on, ``+inf`` or fewer than ``k`` items above ``-inf``
            raise :class:`~relaxit_core.ParameterError`.
        k: the number of ones, ``0 <= k <= n``.

    Example:
        >>> import torch
        >>> d = KSubset(torch.tensor([2.0, 0.0, 0.0, -1.0]), k=2)
        >>> z = d.sample((3,))
        >>> z.sum(-1).tolist(), round(float(d.mean.sum()), 6)
        ([2.0, 2.0, 2.0], 2.0)
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, k: int, validate_args=None):
        if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
            raise ParameterError("KSubset: `logits` must be a tensor with a last dimension of items")
        n = logits.shape[-1]
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) <= n:
            raise ParameterError(f"KSubset: need an integer 0 <= k <= n, got k={k!r} with n={n} items in `logits`")
        self.logits = logits
        self.k = int(k)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)
        if self._validate_args:
            # -inf masks an item (never chosen); +inf, or fewer than k selectable items, has no law
            if bool((logits == float("inf")).any()):
                raise ParameterError("KSubset: `logits` of +inf have no k-subset law (use -inf to mask items)")
            if bool(((logits > float("-inf")).sum(-1) < self.k).any()):
                raise ParameterError(f"KSubset: a row of `logits` has fewer than k={self.k} items above -inf")

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return KHot(self.k)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(KSubset, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        new.k = self.k
        super(KSubset, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def infer_shapes(cls, logits):
        shape = torch.Size(logits)
        return shape[:-1], shape[-1:]

    @lazy_property
    def log_partition(self) -> torch.Tensor:
        """``log Z(θ)``, shape ``batch_shape`` (differentiable)."""
        return log_partition(self.logits, self.k)

    @property
    def mean(self) -> torch.Tensor:
        """The exact inclusion probabilities ``P(z_i = 1)`` (differentiable)."""
        return inclusion_probs(self.logits, self.k)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable k-hot vector (ones at the top ``k`` logits)."""
        n = self.event_shape[0]
        if self.k == 0:
            return torch.zeros_like(self.logits)
        idx = self.logits.detach().topk(self.k, dim=-1).indices
        return torch.zeros_like(self.logits).scatter_(-1, idx, 1.0) if self.k < n else torch.ones_like(self.logits)

    @property
    def variance(self) -> torch.Tensor:
        mu = self.mean
        return mu * (1 - mu)

    def entropy(self) -> torch.Tensor:
        """``H = log Z - θ·μ``."""
        return self.log_partition - (self.logits * self.mean).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        return sample_k_subset(self.logits, self.k, torch.Size(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        score = (self.logits * value).sum(-1)
        return score - self.log_partition

    def enumerate_support(self, expand=True):
        n = self.event_shape[0]
        if math.comb(n, self.k) > MAX_ENUMERATE:
            raise ValueError(
                f"KSubset.enumerate_support: C({n}, {self.k}) = {math.comb(n, self.k)} k-hot vectors "
                f"exceed {MAX_ENUMERATE}"
            )
        idx = _combination_index(n, self.k).to(self.logits.device)
        values = torch.zeros(idx.shape[0], n, dtype=self.logits.dtype, device=self.logits.device)
        values.scatter_(-1, idx, 1.0)
        values = values.view((-1,) + (1,) * len(self.batch_shape) + (n,))
        return values.expand((-1,) + self.batch_shape + (n,)) if expand else values


@register_kl(KSubset, KSubset)
def _kl_ksubset(p: KSubset, q: KSubset) -> torch.Tensor:
    """``KL(p || q) = (θ_p - θ_q)·μ_p - log Z_p + log Z_q`` (same ``k``)."""
    if p.k != q.k:
        raise ValueError(f"KL between k-subset laws needs the same k, got {p.k} and {q.k}")
    return ((p.logits - q.logits) * p.mean).sum(-1) - p.log_partition + q.log_partition


# ------------------------------------------------------------------ divide and conquer
def _log_convolve(a: torch.Tensor, b: torch.Tensor, length: int, neg: float) -> torch.Tensor:
    """Log-space product of polynomials with log-coefficients ``a``, ``b`` (``[..., L]``),
    truncated to ``length`` coefficients: ``c[j] = logsumexp_i (a[i] + b[j - i])``.

    The outer sum ``[..., L, L]`` is skewed (row ``i`` shifted right by ``i``: pad each row by
    ``L``, flatten, cut, reshape to width ``2L - 1``) so that the anti-diagonals become columns.
    """
    size = a.shape[-1]
    outer = a.unsqueeze(-1) + b.unsqueeze(-2)  # [..., L, L]
    padded = torch.nn.functional.pad(outer, (0, size), value=neg)  # [..., L, 2L]
    flat = padded.flatten(-2)[..., : size * (2 * size - 1)]
    skew = flat.unflatten(-1, (size, 2 * size - 1))  # row i: entries at columns i .. i + L - 1
    return skew[..., : min(length, 2 * size - 1)].logsumexp(-2)


def log_partition_tree(theta: torch.Tensor, k: int) -> torch.Tensor:
    """``log e_k(exp θ)`` by divide and conquer: a balanced tree of truncated log-space
    polynomial products (``⌈log2 n⌉`` levels, each one batched log-space convolution), the
    log-depth form of the dynamic program for accelerators (same ``Θ(B·n·k)`` work, up to a
    constant, but ``O(log n)`` sequential steps instead of ``n``).  Differentiable by plain
    autograd (its gradient is the marginals, its Hessian the covariance of ``z``).
    """
    _check_k(theta, k, "log_partition_tree")
    n = theta.shape[-1]
    t = theta.to(_work_dtype(theta.dtype))
    t2, k2, flipped = _oriented(t, k)
    if k2 == 0:
        out = 0 * t2.sum(-1)
    else:
        neg = _neg(t.dtype) / 4  # room for sums of a few sentinels
        size = 1 << max(0, (n - 1).bit_length())
        pad = torch.nn.functional.pad(t2, (0, size - n), value=neg)  # empty items: e^θ = 0
        polys = torch.stack([torch.zeros_like(pad), pad], -1)  # [..., size, 2]: 1 + e^θ x
        while polys.shape[-2] > 1:
            polys = _log_convolve(polys[..., 0::2, :], polys[..., 1::2, :], k2 + 1, neg)
        out = polys[..., 0, k2]
    if flipped:
        out = out + t.sum(-1)
    return out.to(theta.dtype)
