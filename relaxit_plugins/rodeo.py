"""RODEO: REINFORCE leave-one-out with discrete Stein operator control variates.

Reference:
    Shi, Zhou, Hwang, Titsias & Mackey (2022), *Gradient Estimation with Discrete Stein
    Operators*, NeurIPS — Sec. 3 (Stein operators from Markov chains: for a kernel ``K``
    with stationary law ``q``, ``(A h)(x) = Σ_y K(x, y) (h(y) - h(x))`` has ``E_q[A h] = 0``;
    here the random-scan Gibbs kernel on the ``D`` neighbours ``y^(d)`` of ``x`` that differ
    in one coordinate), Sec. 4 (RODEO: the leave-one-out baseline corrected by ``α A h``
    and the gradient control variate ``β A H``, ``H(y) = h(y) ∇θ log q(y)``, with ``h`` a
    small network fed the Taylor surrogate of ``f`` built from the *other* samples, so no
    extra objective evaluations), following the authors' code (``thjashin/rodeo``,
    ``discrete_stein_avg``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

import relaxit_core
from relaxit_core import Capability as C
from relaxit_core.limits import is_compiling
from relaxit_plugins._multisample import (
    LAWS,
    bernoulli_draw,
    bernoulli_probs,
    loo_mean,
    objective_and_input_gradient,
    with_score_and_lazy_gradients,
)

__all__ = ["RodeoEstimator"]


_WAYS = 4
"""Copies of the bins that neighbouring columns add into (see :func:`_bin_sums`)."""


def _count_below(kink: torch.Tensor, t: torch.Tensor, ways: int = 1) -> torch.Tensor:
    """``searchsorted(kink, t)`` (left), int64: per row of the sorted ``kink [M, H]``, the number
    ``j`` of kinks strictly below each ``t [M, N]``; with ``ways > 1``, ``j + (n mod ways) (H + 1)``
    for column ``n`` (bins spread over ``ways`` copies, see :func:`_bin_sums`).

    Comparisons with every 4th kink on ``[M, ⌈H/4⌉, N]``, then two steps of a binary search
    inside the block found (a gather and a comparison each), on ``kink`` padded with ``+inf``
    (never below any ``t``).  The comparisons write float32 and the count is kept in float32
    (exact), turned into the index through int32 (on CPU, bool outputs, int64 arithmetic and
    float to int64 conversions are several times slower than float32 and int32 ones); the
    conversions and the gathered kinks reuse three buffers.  An int32 index (accepted by
    ``gather`` and ``scatter_add_`` since torch 2.8) halves the index's bytes but made RODEO about
    5% slower on CPU (torch 2.13: the int32 kernels are slower).  The count of the full ``[M, H, N]`` comparison (kinks sorted, NaN last), about 3x
    faster on CPU than it at ``H = 16``, ``N = 200``, and 5x faster than torch's batched binary
    search.
    """
    m, h = kink.shape
    blocks = -(-h // 4)
    kink = torch.cat((kink, kink.new_full((m, 4 * blocks + 4 - h), torch.inf)), 1)
    step = torch.empty(t.shape, dtype=torch.float32, device=t.device)
    count = torch.lt(kink[:, 3:4], t, out=torch.empty_like(step))
    for j in range(7, 4 * blocks, 4):  # ⌈H/4⌉ - 1 more comparisons on [M, N]
        count.add_(torch.lt(kink[:, j : j + 1], t, out=step))
    count.mul_(4)  # 4 b: the first kink of the block
    as_int = torch.empty(t.shape, dtype=torch.int32, device=t.device)
    idx = torch.empty(t.shape, dtype=torch.int64, device=t.device)
    near = step if kink.dtype == step.dtype else torch.empty(t.shape, dtype=kink.dtype, device=t.device)
    # kink 4b + 1, then 4b or 4b + 2 (the gathered kink is compared in place)
    torch.gather(kink[:, 1:], 1, idx.copy_(as_int.copy_(count)), out=near)
    count.add_(torch.lt(near, t, out=step), alpha=2)
    torch.gather(kink, 1, idx.copy_(as_int.copy_(count)), out=near)
    count.add_(torch.lt(near, t, out=step))
    if ways > 1:
        count.add_(torch.arange(t.shape[-1], device=t.device, dtype=torch.float32).remainder_(ways).mul_(h + 1))
    return idx.copy_(as_int.copy_(count))


def _bin_sums(idx: torch.Tensor, src: torch.Tensor, bins: int, ways: int = _WAYS) -> torch.Tensor:
    """``[..., M, bins]``: per row, the sums of ``src [..., M, N]`` over the columns in each bin,
    with ``idx [M, N]`` from ``_count_below(..., ways=ways)``.  Neighbouring columns add into
    different copies of the bins, summed at the end (by slices: a reduction over the copies'
    dimension is slower on CPU): about 3x faster on CPU than adding each into the same bin one
    after another (a chain of dependent additions)."""
    lead = src.shape[:-1]
    out = src.new_zeros(lead + (ways * bins,)).scatter_add_(-1, idx.expand(lead + idx.shape[-1:]), src)
    if ways == 1:
        return out
    total = out[..., :bins] + out[..., bins : 2 * bins]
    for w in range(2, ways):
        total += out[..., w * bins : (w + 1) * bins]
    return total


def _eval_pieces(c: torch.Tensor, s: torch.Tensor, idx: torch.Tensor, t: torch.Tensor, ways: int = 1, out=None) -> torch.Tensor:
    """``c[j] + s[j] t`` at each ``t [M, N]``, with the piece ``j`` from ``idx`` (``_count_below(...,
    ways=ways)``) and ``c``, ``s`` of shape ``[M, bins]``: one gather of the pair as a complex number
    (float32, float64), from ``ways`` copies of the pairs (a concatenation of ``[M, bins]``); written
    into ``out`` if given (a buffer of ``t``'s shape and dtype)."""
    if c.dtype in (torch.float32, torch.float64):
        pair = torch.complex(c, s)
        cs = torch.view_as_real((torch.cat((pair,) * ways, -1) if ways > 1 else pair).gather(1, idx))
        return torch.addcmul(cs[..., 0], t, cs[..., 1], out=out)
    if ways > 1:
        c, s = torch.cat((c,) * ways, -1), torch.cat((s,) * ways, -1)
    return torch.addcmul(c.gather(1, idx), t, s.gather(1, idx), out=out)


_WINDOW_MAX = 4
"""Widest window (kinks inside one row's range of ``t``) that :func:`_window` takes."""


def _window(kink: torch.Tensor, t: torch.Tensor, widest: int | None = None):
    """The kinks that fall inside each row's range of ``t [M, N]``, when they are few: ``(lo,
    masks, at, low, edge)`` with ``lo [M]`` the number of kinks below the row's smallest ``t``
    (``low [M, 1]``), ``masks [R, M, N]`` (``t``'s dtype) the comparisons ``kink[lo + r] < t``,
    ``r < R``, ``R`` the most kinks inside any row's range, ``at [M, R + 1]`` the pieces ``lo + r``
    (at most ``H``) and ``edge [M, R]`` the kinks ``kink[lo + r]`` (``+inf`` past the last; the
    kinks of a row sorted or not); ``None`` where ``R > widest`` (default :data:`_WINDOW_MAX`), a
    row holds NaN, or on another
    device than the CPU or under ``torch.compile`` (the width is read with ``.item()``, free on
    the CPU but a synchronisation elsewhere and a graph break when compiled).

    Exact: in a row, every ``t`` lies between the row's smallest and largest, so the kinks
    ``lo .. hi - 1`` (``hi`` the number below the largest) are the only ones whose comparison
    varies, the count below ``t`` is ``lo + Σ_r masks[r]``, and ``masks[r]`` are nested
    (``masks[r + 1] <= masks[r]``: the kinks are sorted).  The pieces' sums and values then
    cost ``O(R)`` passes over ``[M, N]`` (:func:`_window_inside`, :func:`_lines_eval`) instead
    of the count, the scatters and the gather of the general path.  A fresh network and the
    surrogate's values typically leave 0-3 kinks in a row's range (the kinks lie where
    ``-a_h / w_h``, spread over the weights' scale); a network whose kinks crowd the range
    takes the general path.
    """
    m, h = kink.shape
    widest = _WINDOW_MAX if widest is None else widest
    if t.device.type != "cpu" or is_compiling() or t.numel() == 0 or h == 0 or widest < 0:
        return None
    ends = torch.cat((t.amin(-1, keepdim=True), t.amax(-1, keepdim=True)), 1)  # [M, 2]
    under = kink.unsqueeze(1) < ends.unsqueeze(-1)  # [M, 2, H]
    below = under.sum(-1)  # kinks below the row's ends
    lo = below[:, 0]
    width = (below[:, 1] - lo).masked_fill_(torch.isnan(ends[:, 0]), torch.iinfo(lo.dtype).max)  # NaN propagates
    r = int(width.max())
    if r > widest:
        return None
    masks = torch.empty((r,) + t.shape, dtype=t.dtype, device=t.device)
    at = lo.unsqueeze(-1) + torch.arange(r + 1, device=t.device)  # pieces lo .. lo + R
    edge = kink[:, :0]
    if r:  # kinks lo .. lo + R - 1: the R smallest not below the row's smallest t (sorted or not)
        edge = kink.masked_fill(under[:, 0], torch.inf)
        edge = edge.amin(-1, keepdim=True) if r == 1 else edge.topk(r, -1, largest=False, sorted=True).values
        for j in range(r):
            torch.lt(edge[:, j : j + 1], t, out=masks[j])
    # past the last piece (rows with fewer kinks inside): unused
    return lo, masks, at.clamp_max_(h), ends[:, :1], edge


def _window_inside(window, src: torch.Tensor) -> torch.Tensor:
    """``[..., M, R + 1]``: the sums of ``src [..., M, N]`` over the columns in the pieces
    ``lo .. lo + R`` of :func:`_window` (0 past a row's last piece), from the sums over the
    columns above each kink of the window (one dot product per kink) and the row totals: the
    pieces' part of :func:`_bin_sums`."""
    masks = window[1]
    r = masks.shape[0]
    above = src.new_empty(src.shape[:-1] + (r + 2,))  # column j: above kink lo + j - 1
    torch.sum(src, -1, out=above[..., 0])
    for j in range(r):
        torch.linalg.vecdot(masks[j], src, out=above[..., j + 1])
    above[..., r + 1].zero_()
    return above[..., :-1] - above[..., 1:]  # piece lo + j, j = 0 .. R


def _lines_eval(cw: torch.Tensor, sw: torch.Tensor, masks: torch.Tensor, t: torch.Tensor, out=None) -> torch.Tensor:
    """``cw[j] + sw[j] t`` at each ``t [M, N]`` in the piece ``lo + j`` of :func:`_window`, from the
    lines ``(cw, sw) [M, R + 1]`` of the pieces ``lo .. lo + R``."""
    r = masks.shape[0]
    val = torch.mul(t, sw[:, :1], out=out).add_(cw[:, :1])
    if r:
        dc, ds = cw[:, 1:] - cw[:, :-1], sw[:, 1:] - sw[:, :-1]
        step = torch.empty_like(val)
        for j in range(r):
            val.addcmul_(masks[j], torch.mul(t, ds[:, j : j + 1], out=step).add_(dc[:, j : j + 1]))
    return val


class _Affine:
    """An affine layer's ``weight`` and ``bias`` (views of :attr:`_SteinNet.weight`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight, bias


class _SteinNet(torch.nn.Module):
    """``h(t, z) = W2 leaky_relu(w_x t + W_z z + b_1) + b_2 -> (h0, h1)``: ``t`` the Taylor
    surrogate's linear part at a state, ``z`` the other samples' mean objective (two scalar
    inputs, one hidden layer of LeakyReLU(0.3) units and two outputs, as the authors'
    ``SteinControlNNSingleLayer``; ``b_1`` is the sum of the two input layers' biases).

    :meth:`forward` evaluates it at ``N`` values of ``t`` sharing one ``z`` *exactly*, without
    materialising the ``[..., N, H]`` hidden layer: with ``a = W_z z + b_1`` fixed, each unit
    ``a_h + t w_h`` is affine in the scalar ``t``, so ``h`` is piecewise linear in ``t`` with
    kinks at ``t_h = -a_h / w_h``.  Writing ``leaky_relu(u) = 0.3 u + 0.7 relu(u)``,

    ``h(t) = b_2 + 0.3 W2 (a + t w) + 0.7 Σ_{h active at t} W2_h (a_h + t w_h)``,

    and the sum over the active units (``w_h > 0`` and ``t > t_h``, or ``w_h < 0`` and
    ``t < t_h``) is read from a prefix sum over the sorted kinks at the number of kinks below
    ``t`` (:func:`_count_below`).  Cost ``O(H log H)`` per ``z`` and ``O(H / 4 + 2)``
    comparisons per ``t`` instead of ``O(H)`` multiply-adds; the value and its gradient in the
    weights are those of the network (away from the kinks, a null set).

    RODEO's estimate reads only sums over the neighbours and ``h1`` at each
    (:meth:`stein_sums`, no autograd graph); the weights' gradient of the estimate's squared norm
    is then formed in closed form (:meth:`weight_gradients`), checked against autograd through
    :meth:`reference` in ``tests/test_rodeo.py``.  Where each row's range of ``t`` holds few
    kinks, only those are compared with (:func:`_window`).
    """

    slope: float = 0.3

    def __init__(self, hidden: int):
        super().__init__()
        # the three layers' default initialisation, kept in one parameter (one gradient hook,
        # one accumulation): dense_x (w_x, b_x), dense_z (w_z, b_z), out (W2 [2, H], b_2)
        layers = (torch.nn.Linear(1, hidden), torch.nn.Linear(1, hidden), torch.nn.Linear(hidden, 2))
        self.hidden = hidden
        self.weight = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for lay in layers for p in lay.parameters()]))

    _LAYER_KEYS = ("dense_x.weight", "dense_x.bias", "dense_z.weight", "dense_z.bias", "out.weight", "out.bias")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # relaxit 2.0.0 kept the three layers as six parameters: a state dict saved then
        # still loads (the same values, concatenated in the order of :attr:`weight`)
        keys = [prefix + k for k in self._LAYER_KEYS]
        if prefix + "weight" not in state_dict and all(k in state_dict for k in keys):
            state_dict[prefix + "weight"] = torch.cat([state_dict.pop(k).reshape(-1) for k in keys])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _layer(self, i: int):
        """``(weight, bias)`` of layer ``i`` (0: dense_x, 1: dense_z, 2: out), views of :attr:`weight`."""
        h, flat = self.hidden, self.weight
        if i < 2:
            return flat[2 * i * h : (2 * i + 1) * h].view(h, 1), flat[(2 * i + 1) * h : (2 * i + 2) * h]
        return flat[4 * h : 6 * h].view(2, h), flat[6 * h :]

    @property
    def dense_x(self):
        """The input layer of ``t`` (``.weight [H, 1]``, ``.bias [H]``, views of :attr:`weight`)."""
        return _Affine(*self._layer(0))

    @property
    def dense_z(self):
        """The input layer of ``z`` (``.weight [H, 1]``, ``.bias [H]``)."""
        return _Affine(*self._layer(1))

    @property
    def out(self):
        """The output layer (``.weight [2, H]``, ``.bias [2]``)."""
        return _Affine(*self._layer(2))

    def reference(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The plain network on ``t [..., N]`` and ``z [...]`` -> ``[..., N, 2]`` (for tests)."""
        dtype = self.weight.dtype
        linear = torch.nn.functional.linear
        pre = linear(t.to(dtype).unsqueeze(-1), *self._layer(0)) + linear(z.to(dtype).unsqueeze(-1), *self._layer(1)).unsqueeze(-2)
        return linear(torch.nn.functional.leaky_relu(pre, self.slope), *self._layer(2)).to(t.dtype)

    def _weights(self):
        """``(w_x, w_z, b_1, W2, b_2)``, input weights as vectors ``[H]`` (views of :attr:`weight`
        by one ``split``)."""
        h = self.hidden
        wx, bx, wz, bz, v, b2 = self.weight.split((h, h, h, h, 2 * h, 2))
        return wx, wz, bx + bz, v.view(2, h), b2

    def _kinks(self, z: torch.Tensor):
        """``(z, a, kink)``: ``z`` flattened to ``[M]``, ``a = W_z z + b_1 [M, H]`` and the units'
        kinks ``-a_h / w_h [M, H]`` (unsorted, no gradient)."""
        wx, wz, b1, _, _ = self._weights()
        z = z.to(wx.dtype).reshape(-1)
        a = torch.addcmul(b1, z.unsqueeze(-1), wz)  # [M, H]
        with torch.no_grad():
            # -a_h / w_h with a zero weight read as +0 (-0.0 + 0.0 = +0.0): its unit, a constant
            # a_h, switches on at -inf where a_h > 0 (IEEE division by -0.0 would flip that)
            kink = torch.div(a, (wx + 0.0).neg_()).nan_to_num_(nan=torch.inf, posinf=torch.inf, neginf=-torch.inf)
        return z, a, kink

    def window_lines(self, z, a, kink, window, t_x):
        """The lines ``(c, s) [M, R + 2, 2]`` (``h_i = c_i + s_i t``) of the pieces ``lo .. lo + R``
        of :func:`_window` and of the piece holding ``t_x [M, 1]``, from the units active in each
        (no sorted table), and what :meth:`line_gradients` needs.  Unit ``h`` has passed its kink
        in piece ``lo`` if the kink is below the row's smallest ``t``, in piece ``lo + q`` if it is
        at most the window's ``q``-th kink (ties pass together), and at ``t_x`` if below it; it is
        active where it has passed its kink and ``w_h >= 0``, or has not and ``w_h < 0``.  No
        autograd graph."""
        wx, _, _, v, b2 = self._weights()
        m, h = a.shape
        low, edge = window[3], window[4]
        thr = torch.cat((low, torch.nextafter(edge, edge.new_full((), torch.inf)), t_x), 1)  # [M, P]
        rho = (kink.unsqueeze(1) < thr.unsqueeze(-1)).ne_(wx < 0).to(a.dtype)  # [M, P, H]: active
        rho = rho.mul_(1 - self.slope).add_(self.slope)  # leaky_relu's slope: 1 if active, else 0.3
        rho_a = rho * a.unsqueeze(1)
        p = thr.shape[1]
        c = torch.addmm(b2, rho_a.view(-1, h), v.T).view(m, p, 2)
        s = torch.mm(rho.view(-1, h), (v * wx).T).view(m, p, 2)
        return c, s, (z, a, rho, rho_a, wx, v)

    def line_gradients(self, state, d_c: torch.Tensor, d_s: torch.Tensor):
        """The gradient of ``Σ c ⊙ d_c + s ⊙ d_s`` in :attr:`weight` for the lines of
        :meth:`window_lines` (linear in ``W2``, ``w_x`` and ``a`` at fixed active units)."""
        z, a, rho, rho_a, wx, v = state
        h = a.shape[1]
        dc2, ds2 = d_c.reshape(-1, 2), d_s.reshape(-1, 2)
        rho2 = rho.view(-1, h)
        d_v = dc2.T @ rho_a.view(-1, h) + (ds2.T @ rho2) * wx  # [2, H]
        d_a = (rho * (d_c @ v)).sum(1)  # [M, H]
        d_wx = ((ds2 @ v) * rho2).sum(0)
        d_b1 = d_a.sum(0)
        return torch.cat((d_wx, d_b1, z @ d_a, d_b1, d_v.reshape(-1), dc2.sum(0)))

    def pieces(self, z: torch.Tensor, kinks=None):
        """The affine pieces of ``t -> h(t, z)`` for each ``z`` (flattened to ``[M]``): the sorted
        kinks ``[M, H]`` and a table ``[4, M, H + 1]`` whose planes ``(c_0, s_0, c_1, s_1)`` give
        ``h_i(t) = c_i + s_i t`` between the ``j``-th and ``j+1``-th kink (column ``j``), and what
        :meth:`weight_gradients` needs.  Differentiable in the weights (autograd) unless called
        under ``torch.no_grad()``; ``kinks`` is :meth:`_kinks`'s result if at hand.

        Below every kink the units with ``w_h < 0`` are active (``w_h = ±0``: a kink at ``-inf``
        if ``a_h > 0``, always active, else at ``+inf``, never); passing the kink of unit ``h``
        adds ``± 0.7 W2_h (a_h + t w_h)`` (``+`` if ``w_h >= 0``, which switches on).
        """
        z, a, kink = self._kinks(z) if kinks is None else kinks
        wx, _, _, v, b2 = self._weights()
        dtype = wx.dtype
        m, h = a.shape
        with torch.no_grad():  # the kinks' order is locally constant in the weights
            kink, order = kink.sort(-1)
            negf = (wx < 0).to(dtype)
            # per unit, ± 0.7 W2_ih: what passing its kink adds to (c_i, s_i) per unit of (a_h, w_h)
            sign = negf.mul(-2 * (1 - self.slope)).add_(1 - self.slope)  # ± 0.7
            kappa = negf * (1 - self.slope) + self.slope  # weight of each unit below every kink
        step_w = sign * v  # [2, H]
        unit = torch.stack((step_w, step_w * wx), 1)  # [2, 2, H]
        steps = unit.view(4, h).index_select(1, order.reshape(-1)).view(2, 2, m, h)
        steps[:, 0] *= a.gather(1, order)
        vk = v * kappa  # [2, H]
        first = torch.stack((torch.addmm(b2.unsqueeze(-1), vk, a.T), (vk @ wx).unsqueeze(-1).expand(2, m)), 1)
        table = torch.cat((first.unsqueeze(-1), steps), -1).cumsum(-1).view(4, m, h + 1)
        state = (z, a, order, unit, vk, kappa, sign, wx)
        return kink, table, state

    def weight_gradients(self, state, d_table: torch.Tensor):
        """The gradient of ``Σ table ⊙ d_table`` in :attr:`weight`, in closed form (:meth:`pieces`'s
        table is a prefix sum of per-unit steps, linear in ``W2``, ``w_x`` and ``a``)."""
        z, a, order, unit, vk, kappa, sign, wx = state
        m, h = a.shape
        d_table = d_table.view(2, 2, m, h + 1)
        d_first = d_table.sum(-1)  # [2, 2, M]
        # step r (the unit order[m, r]) reaches pieces r + 1 .. H; back to the units' order
        d_steps = torch.empty(2, 2, m, h, dtype=a.dtype, device=a.device).scatter_(
            -1, order.expand(2, 2, m, h), d_first.unsqueeze(-1) - d_table.cumsum(-1)[..., :h])
        d_unit = torch.stack(((d_steps[:, 0] * a).sum(1), d_steps[:, 1].sum(1)), 1)  # [2, 2, H]
        d_fc, d_fs = d_first[:, 0], d_first[:, 1].sum(-1)  # [2, M], [2]
        d_a = torch.addmm((d_steps[:, 0] * unit[:, 0].unsqueeze(1)).sum(0), d_fc.T, vk)  # [M, H]
        d_step_w = d_unit[:, 0] + d_unit[:, 1] * wx  # [2, H]
        d_v = (d_fc @ a + d_fs.unsqueeze(-1) * wx) * kappa + d_step_w * sign
        d_wx = d_fs @ vk + (unit[:, 0] * d_unit[:, 1]).sum(0)
        d_b1 = d_a.sum(0)
        return torch.cat((d_wx, d_b1, z @ d_a, d_b1, d_v.reshape(-1), d_fc.sum(-1)))

    def stein_sums(self, z: torch.Tensor, t_x: torch.Tensor, t_nb: torch.Tensor, score: torch.Tensor):
        """What RODEO needs of the network, for ``M`` states sharing ``z`` row by row, without an
        autograd graph: with ``t_x [M]`` (the state), ``t_nb [M, D]`` (its neighbours) and the
        score ``x - p [M, D]``, whose magnitude ``w_d = |x_d - p_d|`` is the Gibbs weight of
        neighbour ``d`` (``W = Σ_d w_d``), returns ``Σ_d w_d h_i(t_nb_d) - W h_i(t_x)`` for
        ``i = 0, 1`` (``[2, M]``), ``h1(t_nb) [M, D]``, and a state for :meth:`sums_backward`.

        The sums are read from the affine pieces without evaluating ``h`` at each point: with
        ``j`` the piece of a point, ``Σ w h_i(t) = Σ_j c_ij W_j + s_ij T_j``, ``W_j`` and ``T_j``
        the sums of ``w`` and ``w t`` over the points in piece ``j`` (one ``scatter_add``).
        ``h1`` is needed at each neighbour (one gather of the pair ``(c_1, s_1)``).  On the CPU,
        when every row's range of ``t_nb`` holds at most :data:`_WINDOW_MAX` kinks (:func:`_window`:
        0-1 on ``benchmarks/cv_speed.py`` with a fresh network, 0-4 at 599 of 600 Adam steps
        training it there), the count, the scatters and the gather give way to one comparison and two passes
        per kink inside the range and per-row dot products (:func:`_window_inside`,
        :func:`_lines_eval`), and the few pieces' lines from the units active in each
        (:meth:`window_lines`, no sorted table): the same sums and values, about 0.8x the time
        of the step.
        """
        with torch.no_grad():
            kinks = self._kinks(z)
            _, a, kink = kinks
            dtype = a.dtype
            m, bins = kink.shape[0], kink.shape[1] + 1
            t_x, t_nb = t_x.to(dtype).reshape(-1, 1), t_nb.to(dtype)
            window = _window(kink, t_nb)  # (the kinks need not be sorted)
            src = torch.empty((2,) + t_nb.shape, dtype=dtype, device=t_nb.device)
            w = torch.abs(score, out=src[0]) if score.dtype == dtype else src[0].copy_(score).abs_()
            torch.mul(w, t_nb, out=src[1])  # Σ w and Σ w t per piece
            w_x = w.sum(-1, keepdim=True).neg_()
            if window is not None:  # the few pieces inside each row's range, and the state's
                c, s, state = self.window_lines(*kinks, window, t_x)
                r1 = window[1].shape[0] + 1
                # (Σ w, Σ w t) over the neighbours in each piece of the window, and -(W, W t_x) at the state
                occ = torch.cat((_window_inside(window, src), torch.stack((w_x, w_x * t_x))), -1).unsqueeze(-1)
                sums = (c * occ[0] + s * occ[1]).sum(1).T  # [2, M]
                c1, s1 = c[:, :r1, 1], s[:, :r1, 1]

                def h1_at(shift, scale):
                    cw, sw = torch.addcmul(shift.unsqueeze(-1), c1.to(shift.dtype), scale), s1.to(shift.dtype) * scale
                    return _lines_eval(cw, sw, window[1], t_nb, out=src[1] if cw.dtype == dtype else None)

                return sums, h1_at, (state, window, t_nb, (occ, c1, s1))
            kink, table, state = self.pieces(z, kinks)
            # piece j of neighbour n at j + (n mod ways)(H + 1)
            idx = _count_below(kink, t_nb, ways=_WAYS)
            idx_x = (kink < t_x).sum(-1, keepdim=True)
            weights = _bin_sums(idx, src, bins)  # [2, M, H + 1]
            weights.scatter_add_(2, idx_x.expand(2, -1, -1), torch.stack((w_x, w_x * t_x)))
            sums = (table.view(2, 2, m, bins) * weights).sum((1, 3))  # [2, M]
        c1, s1 = table[2], table[3]

        def h1_at(shift, scale):
            with torch.no_grad():
                cw, sw = torch.addcmul(shift.unsqueeze(-1), c1.to(shift.dtype), scale), s1.to(shift.dtype) * scale
                return _eval_pieces(cw, sw, idx, t_nb, _WAYS, out=src[1] if cw.dtype == dtype else None)

        return sums, h1_at, (state, idx, t_nb, (weights, c1, s1))

    def sums_backward(self, saved, d_sums: torch.Tensor, d_h1: torch.Tensor, scale=1.0, h1_scale=1.0):
        """The weights' gradients (as :meth:`weight_gradients`) of ``Σ sums ⊙ d_sums + h1_scale Σ
        h1_nb ⊙ u`` for the outputs of :meth:`stein_sums` (``h1_nb`` the values of ``h1`` at the
        neighbours), with ``u = d_h1 ⊙ scale``: ``d_h1`` has ``M D`` elements (viewed as ``[M, D]``
        once multiplied) and ``scale`` broadcasts against it (a number, a 0-dim tensor, or e.g. a
        ``[*B, D]`` factor shared by the samples), so the product is formed in one pass, in the
        bins' buffer; and ``Σ h1_nb ⊙ u`` itself, read from the bins of ``u`` and ``u t`` (``h1``
        is affine in each piece), so that ``h1_nb`` need not be kept.  Returns ``(gradient of
        the weights, Σ h1_nb ⊙ u)``."""
        state, idx, t_nb, extra = saved
        dtype = t_nb.dtype
        src = torch.empty((2,) + t_nb.shape, dtype=dtype, device=t_nb.device)
        torch.mul(d_h1, scale, out=src[0].view(d_h1.shape))
        torch.mul(src[0], t_nb, out=src[1])
        d_sums = d_sums.to(dtype)
        if not isinstance(idx, torch.Tensor):  # the window path: gradients of the lines
            occ, c1, s1 = extra
            h1_bins = _window_inside(idx, src)  # [2, M, R + 1]
            h1_dot = (h1_bins[0] * c1).sum() + (h1_bins[1] * s1).sum()
            d_cs = occ * d_sums.T.unsqueeze(1)  # [2, M, R + 2, 2]: d_c, d_s
            d_cs[:, :, :-1, 1] += h1_bins * h1_scale
            return self.line_gradients(state, d_cs[0], d_cs[1]), h1_dot
        weights, c1, s1 = extra
        bins = weights.shape[-1]
        h1_bins = _bin_sums(idx, src, bins)  # [2, M, H + 1]
        h1_dot = (h1_bins[0] * c1).sum() + (h1_bins[1] * s1).sum()
        d_table = d_sums.unsqueeze(1).unsqueeze(-1) * weights  # [2, 2, M, H + 1]
        d_table[1] += h1_bins * h1_scale
        return self.weight_gradients(state, d_table), h1_dot

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``t`` of shape ``[..., N]``, ``z`` of shape ``[...]`` shared along ``N`` -> ``[..., N, 2]``."""
        kink, table, _ = self.pieces(z)
        tf = t.reshape(-1, t.shape[-1]).to(table.dtype).contiguous()
        idx = _count_below(kink, tf)
        h = [torch.addcmul(table[2 * i].gather(1, idx), tf, table[2 * i + 1].gather(1, idx)) for i in (0, 1)]
        return torch.stack(h, -1).reshape(t.shape + (2,)).to(t.dtype)


class RodeoEstimator(relaxit_core.EstimatorBase):
    r"""RODEO (Shi et al. 2022): RLOO with discrete Stein operator control variates, no extra evaluations.

    ``K = num_samples >= 2`` samples ``x_k ~ Bernoulli(p)``, ``p = σ(η)``, values ``f_k`` and
    input gradients ``g_k = ∇_x f(x_k)`` (one backward pass, no extra evaluation).  For
    each ``k``, a surrogate of ``f`` from the *other* samples — the mean of their
    first-order Taylor expansions, ``f̃_k(y) = f̄_{-k} + mean_{j≠k} g_jᵀ (y - x_j)`` — feeds
    a small network ``h_k(y) = (h0, h1)(f̃_k(y) - f̄_{-k}, f̄_{-k})``.  With the Gibbs Stein
    operator on the ``D`` one-flip neighbours ``y^(d)`` of ``x``,

    ``(A h)(x) = (1/D) Σ_d q(y^(d)_d) (h(y^(d)) - h(x))``,  ``E_q[A h] = 0``,

    the estimate is

    ``ĝ = (1/K) Σ_k [(f_k - mean_{j≠k}(f_j + α (A h0_j)(x_j))) ∇η log q(x_k) + β (A H_k)(x_k)]``

    with ``H_k(y) = h1_k(y) ∇η log q(y)``.  Every control variate has mean zero given the
    others' samples, so ``ĝ`` is unbiased for all ``α``, ``β`` and network weights.  They
    start at ``α = β = 0`` (plain RLOO); when ``learn`` is true, ``backward()`` gives ``α``,
    ``β`` and the network the gradient of ``Σ ĝ²`` (as the authors' code does), and
    nothing of it reaches the model's parameters.  Put ``estimator.parameters()`` in an
    optimiser to adapt them.

    Cost: ``K`` objective evaluations in one batched call (as RLOO), one backward pass
    through the objective for ``∇_x f``, and the network at ``K (D + 1)`` scalar inputs.
    The network (one hidden LeakyReLU layer fed by two scalars, as the authors') is
    evaluated exactly as a piecewise-linear function of its scalar input, with no
    ``[K, B, D, H]`` hidden layer (see ``_SteinNet``), so its width costs little, and the
    gradient of ``Σ ĝ²`` in ``α``, ``β`` and the network is formed in closed form in one
    autograd node; on the CPU, where each row's range of the surrogate holds at most 4 of the
    network's kinks (the usual case at D = 200, fresh or trained), only those are compared with.
    The default ``hidden=16`` keeps one call at about 1.8x / 1.7x RLOO's time on the Table-1
    VAE (``benchmarks/newest_cost.py``, one CPU thread, K = 2 / 3), and at about 4.2x / 2.0x a
    hand-written RLOO with the same 3 evaluations on ``benchmarks/cv_speed.py`` (D = 200, batch
    256, cheap objective / 200→784 decoder, one thread; 3.9-6.0x on the cheap objective with
    other initial weights, by the number of kinks inside the surrogate's range; 0.15x / 0.39x
    the authors' dense network written in plain torch).  For ``K > 2`` the surrogate is the mean of the other samples'
    expansions (the authors' ``discrete_stein_avg``; their ``K > 2`` runs averaged the
    network over the expansions instead, ``discrete_stein_output_avg``).
    Family ``"bernoulli"`` only: the authors' code (``thjashin/rodeo``, ``networks.py``)
    implements only the Bernoulli case (one-bit-flip neighbours, Gibbs weights
    ``θ(1 - b) + (1 - θ) b``) and the paper's experiments are binary VAEs; no categorical
    RODEO is given there in a form implemented here.  Law ``Bernoulli(logits)``, PMF ``log_prob``.

    Maths:
        :Law: :math:`K = S \ge 2` independent :math:`x_k \sim q = \operatorname{Bernoulli}(p)`, :math:`p = \sigma(\eta)`.
        :Estimator: RLOO with control variates from the Gibbs Stein operator on the :math:`D`
            one-flip neighbours :math:`y^{(d)}` of :math:`x` (Shi et al. 2022, Secs. 3-4):

            .. math::
                (\mathcal{A}h)(x) = \frac1D \sum_{d=1}^{D} q\bigl(y^{(d)}_d\bigr)\bigl(h(y^{(d)}) - h(x)\bigr),
                \qquad \mathbb{E}_q[\mathcal{A}h] = 0,

            .. math::
                \hat g = \frac1K \sum_{k=1}^{K} \Bigl[\Bigl(f(x_k) - \frac{1}{K-1}\sum_{j \ne k}
                \bigl(f(x_j) + \alpha (\mathcal{A}h_{0,j})(x_j)\bigr)\Bigr) \nabla_\eta \log q(x_k)
                \\ + \beta (\mathcal{A}H_k)(x_k)\Bigr],

            with :math:`H_k(y) = h_{1,k}(y) \nabla_\eta \log q(y)` and :math:`h_k` a small network of the
            other samples' Taylor surrogate of :math:`f`.
        :Gradient: unbiased for every :math:`\alpha`, :math:`\beta` and network weight (learned on
            :math:`\sum \hat g^2` when ``learn`` is true).
        :Cost: :math:`K` objective evaluations in one batched call, one backward pass for
            :math:`\nabla_x f`, the network at :math:`K (D + 1)` scalar inputs.

    Example:
        >>> import relaxit, torch
        >>> est = relaxit.get("rodeo")
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> out = est.estimate(lambda z: (z - 0.45).pow(2).sum(-1), num_samples=3, logits=logits)
        >>> out.surrogate.backward(); logits.grad.shape, est.alpha.grad is not None
        (torch.Size([3]), True)
    """

    name: ClassVar[str] = "rodeo"
    family: ClassVar[str] = "bernoulli"
    params: ClassVar[tuple[str, ...]] = ("logits",)
    capabilities: ClassVar[frozenset] = frozenset(
        {C.SCORE_FUNCTION, C.LOG_PROB, C.KL, C.ENUMERATE_SUPPORT, C.UNBIASED, C.HARD}
    )
    reference: ClassVar[str] = (
        "Shi, Zhou, Hwang, Titsias & Mackey (2022), Gradient Estimation with Discrete Stein "
        "Operators, NeurIPS, Secs. 3-4 (Gibbs Stein operator control variates for RLOO)"
    )
    conformance_configs = ({}, {"alpha_init": 0.5, "beta_init": 0.5})
    reductions: ClassVar[tuple[str, ...]] = ("mean",)
    min_num_samples: int = 2

    class Config(relaxit_core.EstimatorConfig):
        """Config of :class:`RodeoEstimator`."""

        name: Literal["rodeo"] = "rodeo"
        family: Literal["bernoulli"] = Field("bernoulli", description="The discrete law (Bernoulli).")
        hidden: int = Field(
            16, ge=1, le=4096,
            description="Width of the control-variate network (the authors use 100, about 2.1x RLOO on the Table-1 VAE; 16 about 1.8x).",
        )
        alpha_init: float = Field(0.0, ge=-10, le=10, description="Initial weight α of the baseline's Stein term.")
        beta_init: float = Field(0.0, ge=-10, le=10, description="Initial weight β of the gradient Stein term.")
        learn: bool = Field(
            True, description="Give α, β and the network the gradient of the estimate's squared norm."
        )

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        learn = self.config.learn
        self.alpha = torch.nn.Parameter(torch.tensor(float(self.config.alpha_init)), requires_grad=learn)
        self.beta = torch.nn.Parameter(torch.tensor(float(self.config.beta_init)), requires_grad=learn)
        self.control = _SteinNet(self.config.hidden).requires_grad_(learn)

    def build_distribution(self, logits=None):
        return LAWS["bernoulli"](logits=logits)

    def estimate(self, objective, *, num_samples=2, reduce="mean", **params):
        k = self._check_num_samples(num_samples)
        self._check_reduce(reduce)
        dist = self.distribution(**params)
        p_full = bernoulli_probs(dist)
        x = bernoulli_draw(p_full, (k,))
        f, grad = objective_and_input_gradient(objective, x, dist, self.name)
        nb = f.dim() - 1
        batch = tuple(dist.batch_shape)
        b_shape = batch[:nb]
        d = int(torch.Size(batch[nb:]).numel())
        fd = f.detach()
        m, dd = fd.numel(), max(d, 1)  # explicit sizes: an empty batch or D = 0 must reshape too
        p = p_full.reshape(b_shape + (d,))
        xf = x.reshape((k,) + b_shape + (d,))
        gf = grad.reshape((k,) + b_shape + (d,))
        score = xf - p  # ∇η log q(x_k), [K, *B, D]
        # Taylor surrogate from the other samples, less f̄_{-k}: ḡ_{-k}ᵀ y - mean_{j≠k} g_jᵀ x_j,
        # at x_k and at its one-flip neighbours y^(d) = x_k + (1 - 2 x_kd) e_d
        g_sum = gf.sum(0)
        lin_x = (torch.linalg.vecdot(g_sum, xf) - torch.linalg.vecdot(gf, xf).sum(0)) / (k - 1)  # [K, *B]
        # (1 - 2 x_kd) = -sign(x_kd - p_d) wherever p_d is not 0 or 1; where it is, the neighbour has
        # Gibbs weight q(y_d) = 0 and score_d = 0, and its value is multiplied by 0 everywhere
        lin_nb = torch.sub(g_sum, gf)
        lin_nb = torch.addcmul(lin_x.unsqueeze(-1), lin_nb, score.sign(), value=-1 / (k - 1), out=lin_nb)
        # Gibbs kernel: to neighbour d with probability q(y_d) / D, q(y_d) = |x_d - p_d| (the flipped value's)
        sums, h1_at, saved = self.control.stein_sums(
            loo_mean(fd), lin_x.reshape(m), lin_nb.reshape(m, d), score.reshape(m, d)
        )
        sums = sums.to(fd.dtype)
        alpha, beta = self.alpha.detach().to(fd.dtype), self.beta.detach().to(fd.dtype)
        # (A h0)(x_k) = sums_0 / D; (A H)(x_k) = (score / D) ⊙ (sums_1 - h1(y^(d))): the score of
        # y^(d) is x_k's but for -score_d at d, and q(y_d) (1 - 2 x_d) = -score_d
        a_h0 = (sums[0] / dd).reshape(fd.shape)
        signal = fd - loo_mean(fd + alpha * a_h0)  # [K, *B]
        bd = beta / dd
        # ĝ = mean_k score ⊙ weight, weight_kd = signal_k + bd sums_1k - bd h1(y^(d)_k): h1's
        # pieces shifted and scaled row by row before they are evaluated (one buffer, in f's dtype)
        weight = h1_at(signal.reshape(m) + bd * sums[1], -bd).view(score.shape)
        own = weight.dtype == torch.promote_types(score.dtype, weight.dtype)
        g_hat = (torch.mul(score, weight, out=weight) if own else score * weight).sum(0).div_(k)  # [*B, D]
        value = f.mean(0)
        learned = [self.alpha, self.beta, self.control.weight]

        def backward(c):  # ∇ Σ_b c_b Σ_d ĝ_bd² in (α, β, network), in closed form
            # ∂/∂weight = score ⊙ gamma; weight enters through signal, bd sums_1 and -bd h1
            gamma = g_hat * (2 / k * c.to(fd.dtype)).unsqueeze(-1)  # [*B, D]
            d_signal = torch.linalg.vecdot(score.to(gamma.dtype), gamma).to(fd.dtype)  # [K, *B]
            d_loo = loo_mean(d_signal).reshape(m)  # Σ d_signal ⊙ loo(a_h0) = Σ loo(d_signal) ⊙ a_h0
            d_alpha = -torch.dot(d_loo, a_h0.reshape(-1))
            d_sums = torch.stack((d_loo * (-alpha / dd), d_signal.reshape(m) * bd))
            net, h1_dot = self.control.sums_backward(saved, d_sums, score, gamma, -bd)  # h1_dot = Σ score γ h1
            d_beta = (torch.dot(d_signal.reshape(-1), sums[1]) - h1_dot.to(fd.dtype)) / dd
            return d_alpha.to(self.alpha.dtype), d_beta.to(self.beta.dtype), net

        logits = dist.logits
        surrogate = with_score_and_lazy_gradients(value, logits, g_hat.reshape(logits.shape), backward, learned)
        return relaxit_core.Estimate(surrogate, value.detach(), x)


@relaxit_core.hookimpl
def relaxit_estimators():
    return [RodeoEstimator]
