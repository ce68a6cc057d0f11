"""Speed of ``gumbel_topk`` against the loop-over-k successive softmax (Xie & Ermon 2019, as in
upstream relaxit): one relaxed k-hot sample per row, ratio loop / ours in one interleaved run.

``--hand`` instead compares ``rsample()`` + ``backward()`` with a hand-written version of the
*same* relaxation (``hand_topk`` below: Gumbel noise, the threshold ``ν`` with ``Σ σ(x - ν) = k``
found by the same Newton steps (as many, on the same ``φ``) from the same bracket and start, and the
implicit-function backward; written plainly, without the library's fused and in-place
passes), interleaved call by call and timed by the calling thread's CPU time, median ratio
with a 95% confidence interval (target <= 1.2 at every k).

    python benchmarks/topk_speed.py            # n=1000, batch 256, k = 1, 10, 100, 500
    python benchmarks/topk_speed.py --hand     # against the hand-written relaxation
    python benchmarks/topk_speed.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

import relaxit
from relaxit_plugins.gumbel_topk import NEWTON_STEPS, NEWTON_STEPS_FLOAT64

from _stats import median_ci, paired_times  # noqa: E402


def loop_over_k(logits: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """The loop formulation: k successive softmaxes, masking the mass already taken."""
    g = -torch.empty_like(logits).exponential_().log()
    scores = logits + g
    khot = torch.zeros_like(scores)
    onehot = torch.zeros_like(scores)
    tiny = torch.finfo(scores.dtype).tiny
    for _ in range(k):
        scores = scores + torch.log(torch.clamp(1 - onehot, min=tiny))
        onehot = torch.softmax(scores / tau, dim=-1)
        khot = khot + onehot
    return khot


def loop_over_k_in_place(logits: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """The same loop written with in-place passes: ``1/τ`` folded into the scores once,
    ``log1p`` for ``log(1 - onehot)`` (floored as :func:`loop_over_k` clamps), one fresh
    softmax per step.  The same k-hot up to rounding (same noise for the same seed); reported
    beside the plain loop, about 1.3x faster than it."""
    scores = torch.empty_like(logits).exponential_().log_().neg_().add_(logits).div_(tau)
    khot = torch.zeros_like(scores)
    floor = math.log(torch.finfo(scores.dtype).tiny)
    onehot = None
    for _ in range(k):
        if onehot is not None:
            scores.add_(torch.log1p(onehot.neg_()).clamp_min_(floor), alpha=1 / tau)
        onehot = torch.softmax(scores, dim=-1)
        khot.add_(onehot)
    return khot


class _HandThreshold(torch.autograd.Function):
    """``y = σ(x - ν(x))``, ``Σ y = k``, with ``dν/dx_j = σ'_j / Σ σ'`` (implicit function theorem).

    The library's solve written plainly: the top k by ``topk``, the counting bracket, the
    closed-form start, then Newton steps on ``φ(ν) = log Σ_rest σ(x - ν) - log Σ_top σ(ν - x)``
    clamped to the bracket."""

    @staticmethod
    def forward(ctx, x, k, steps):
        n = x.shape[-1]
        vals, idx = x.topk(k + 1, dim=-1)
        top = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx[..., :k], True)
        xk, xk1 = vals[..., k - 1:k], vals[..., k:k + 1]
        lo, hi = xk1 - math.log(k), xk + math.log(n - k)  # counting bracket
        e = torch.where(top, (xk - x).exp(), (x - xk1).exp())  # every term <= 1
        s_top = e.masked_fill(~top, 0.0).sum(-1, keepdim=True)
        s_rest = e.masked_fill(top, 0.0).sum(-1, keepdim=True)
        nu = torch.minimum(torch.maximum((xk + xk1 + s_rest.log() - s_top.log()) / 2, lo), hi)
        fi = torch.finfo(x.dtype)
        for _ in range(steps):
            a = torch.sigmoid(torch.where(top, nu - x, x - nu))  # σ(x - ν) off the top k, σ(ν - x) on it
            d = a - a * a
            r, t = a.masked_fill(top, 0.0).sum(-1, keepdim=True), a.masked_fill(~top, 0.0).sum(-1, keepdim=True)
            d_r, d_t = d.masked_fill(top, 0.0).sum(-1, keepdim=True), d.masked_fill(~top, 0.0).sum(-1, keepdim=True)
            lo, hi = torch.where(r > t, nu, lo), torch.where(r > t, hi, nu)
            r, t = r.clamp_min(fi.tiny * fi.eps), t.clamp_min(fi.tiny * fi.eps)
            step = (r.log() - t.log()) / (d_r / r + d_t / t).clamp_min(fi.tiny)
            nu = torch.minimum(torch.maximum(nu + step, lo), hi)
        a = torch.sigmoid(torch.where(top, nu - x, x - nu))
        ctx.save_for_backward(a - a * a)
        return torch.sigmoid(x - nu)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        gd = g * d
        return gd - d * (gd.sum(-1, keepdim=True) / d.sum(-1, keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)), None, None


def hand_gumbel(logits: torch.Tensor) -> torch.Tensor:
    """Gumbel noise as ``gumbel_topk`` draws it: ``E = -log U`` from a float64 uniform, then ``-log E`` in float32."""
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device)
    return -(-u.clamp_min(torch.finfo(torch.float64).tiny).log()).to(logits.dtype).log()


def hand_topk(logits: torch.Tensor, k: int, tau: float, steps: int | None = None) -> torch.Tensor:
    """The same relaxation as ``gumbel_topk``, written out: ``σ((logits + g)/τ - ν)``, with the
    library's number of Newton steps for the dtype."""
    if steps is None:
        steps = NEWTON_STEPS_FLOAT64 if logits.dtype == torch.float64 else NEWTON_STEPS
    return _HandThreshold.apply((logits + hand_gumbel(logits)) / tau, k, steps)


def against_hand(args, logits) -> None:
    w = torch.randn_like(logits)
    leaf = logits.detach().requires_grad_(True)
    print("| k | gumbel_topk rsample+backward (ms) | hand-written (ms) | ratio [95% CI] |")
    print("|---:|---:|---:|---:|")
    for k in args.ks:
        est = relaxit.get("gumbel_topk", k=k, tau=args.tau)

        def ours():
            (est.distribution(logits=leaf).rsample() * w).sum().backward()
            leaf.grad = None

        def hand():
            (hand_topk(leaf, k, args.tau) * w).sum().backward()
            leaf.grad = None

        t_o, t_h = paired_times(ours, hand, args.rounds)
        m, lo, hi = median_ci([a / b for a, b in zip(t_o, t_h)])
        print(f"| {k} | {1e3 * statistics.median(t_o):.3f} | {1e3 * statistics.median(t_h):.3f} | {m:.3f} [{lo:.3f}, {hi:.3f}] |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--hard", action="store_true", help="time the straight-through (hard) sample")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds; the median ratio is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hand", action="store_true", help="compare with the hand-written relaxation (rsample + backward)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ks, args.rounds = [1, 100], 3
    torch.set_num_threads(args.threads)
    logits = torch.randn(args.batch, args.n, device=args.device)
    if args.hand:
        relaxit.available()  # loads pyro.distributions, which resets torch's validation default
        torch.distributions.Distribution.set_default_validate_args(False)
        args.rounds = max(args.rounds, 101) if not args.quick else 7
        print(f"n={args.n}, batch={args.batch}, tau={args.tau}, validation off, threads={args.threads}\n")
        return against_hand(args, logits)
    print(f"n={args.n}, batch={args.batch}, tau={args.tau}, hard={args.hard}, device={args.device}, "
          f"threads={args.threads}\n")
    print("| k | gumbel_topk (ms) | loop over k (ms) | speed-up (loop / ours) [95% CI] "
          "| in-place loop (ms) | speed-up (in-place loop / ours) [95% CI] |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in args.ks:
        law = relaxit.get("gumbel_topk", k=k, tau=args.tau, hard=args.hard).distribution(logits=logits)
        ours = law.rsample
        ref = lambda k=k: loop_over_k(logits, k, args.tau)  # noqa: E731
        t_ours, t_ref = paired_times(ours, ref, args.rounds)  # interleaved call by call, thread CPU time
        m, lo, hi = median_ci([b / a for a, b in zip(t_ours, t_ref)])
        ref2 = lambda k=k: loop_over_k_in_place(logits, k, args.tau)  # noqa: E731
        t_ours2, t_ref2 = paired_times(ours, ref2, args.rounds)
        m2, lo2, hi2 = median_ci([b / a for a, b in zip(t_ours2, t_ref2)])
        print(f"| {k} | {1e3 * statistics.median(t_ours):.2f} | {1e3 * statistics.median(t_ref):.2f} "
              f"| {m:.1f}x [{lo:.1f}, {hi:.1f}] | {1e3 * statistics.median(t_ref2):.2f} "
              f"| {m2:.1f}x [{lo2:.1f}, {hi2:.1f}] |")


if __name__ == "__main__":
    main()
