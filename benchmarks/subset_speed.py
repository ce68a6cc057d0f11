"""Speed of the exact k-subset machinery (``simple``) against a hand-written log-space DP of the
same marginals, and its ratio to ``gumbel_topk`` (hard, straight-through), in one interleaved run.

Timed per configuration (batch B, n items, subset size k), each a median of interleaved
``blocked_autorange`` rounds (the machine is shared: the ratios are what count):

- ``marginals``: ``relaxit_plugins._ksubset.inclusion_probs`` vs ``hand_marginals`` below (the
  same forward–backward log-space DP written plainly, one ``logaddexp`` per item);
- ``simple step``: one ``simple`` estimate (exact sample, marginals) and its backward pass
  (the covariance-vector product) vs the hand-written DP's marginals with plain autograd
  backward through the loop (what one writes without relaxit), plus the same exact sampler;
- ``gumbel_topk step``: a hard Gumbel top-k sample and its backward pass;
- ``log Z: tree / DP``: the divide-and-conquer (log-depth) form against the sequential DP's
  prefix table (on a CPU the tree does a few times more work; it is meant for accelerators,
  where the DP's ``n`` sequential steps are launch-bound).

    python benchmarks/subset_speed.py             # B=256 n=1000 k=100, and smaller
    python benchmarks/subset_speed.py --quick     # smaller sizes only
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.benchmark import Timer

import relaxit
from relaxit_plugins._ksubset import inclusion_probs, log_partition_tree, prefix_table, sample_k_subset


def hand_marginals(theta: torch.Tensor, k: int) -> torch.Tensor:
    """Exact inclusion probabilities of ``p(z) ∝ exp(θ·z) 1[Σz = k]`` by a plain log-space DP
    (prefix and suffix elementary symmetric polynomials, one step per item); ``k <= n / 2``."""
    b, n = theta.shape
    neg = -1e30  # finite log 0: autograd through logaddexp(-inf, -inf) gives NaN

    def table(t):
        a = torch.cat([t.new_zeros(b, 1), t.new_full((b, k), neg)], -1)
        rows = [a]
        for m in range(n):
            a = torch.cat([a[:, :1], torch.logaddexp(a[:, 1:], a[:, :-1] + t[:, m : m + 1])], -1)
            rows.append(a)
        return torch.stack(rows)  # [n + 1, B, k + 1]

    fwd = table(theta)
    bwd = table(theta.flip(-1)).flip(0)  # bwd[m]: items m..n-1
    comb = (fwd[:-1, :, :k] + bwd[1:, :, :k].flip(-1)).logsumexp(-1).T  # [B, n]
    return (theta + comb - fwd[-1, :, k : k + 1]).exp()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x1000x100,64x200x20,64x100x10",
                        help="comma-separated BxNxK")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.min_time = "64x200x20,64x100x10", 2, 0.05
    torch.set_num_threads(args.threads)
    print(f"device={args.device}, threads={args.threads}, float32; medians of {args.rounds} interleaved rounds\n")
    print("| B x n x k | marginals: ours / hand DP | SIMPLE step: ours / hand DP + autograd | "
          "SIMPLE step / gumbel_topk step | SIMPLE step (ms) | gumbel_topk step (ms) | log Z: tree / DP |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        b, n, k = (int(x) for x in size.split("x"))
        theta = torch.randn(b, n, device=args.device, requires_grad=True)
        c = torch.randn(b, n, device=args.device)
        simple = relaxit.get("simple", k=k)
        topk = relaxit.get("gumbel_topk", k=k, hard=True)

        def ours_step():
            out = simple.estimate(lambda z: (z * c).sum(-1), num_samples=1, logits=theta)
            out.surrogate.sum().backward()

        def hand_step():
            mu = hand_marginals(theta, k)
            z = sample_k_subset(theta, k) + (mu - mu.detach())
            (z * c).sum().backward()

        def topk_step():
            out = topk.estimate(lambda z: (z * c).sum(-1), num_samples=1, logits=theta)
            out.surrogate.sum().backward()

        timers = {
            "m_ours": Timer("f(t, k)", globals={"f": inclusion_probs, "t": theta.detach(), "k": k}),
            "m_hand": Timer("f(t, k)", globals={"f": hand_marginals, "t": theta.detach(), "k": k}),
            "s_ours": Timer("f()", globals={"f": ours_step}),
            "s_hand": Timer("f()", globals={"f": hand_step}),
            "s_topk": Timer("f()", globals={"f": topk_step}),
            "z_tree": Timer("f(t, k)", globals={"f": log_partition_tree, "t": theta.detach(), "k": k}),
            "z_dp": Timer("f(t, k)", globals={"f": prefix_table, "t": theta.detach(), "k": k}),
        }
        times = {key: [] for key in timers}
        for _ in range(args.rounds):  # interleaved, so that load changes hit every variant
            for key, timer in timers.items():
                times[key].append(timer.blocked_autorange(min_run_time=args.min_time).median)
        med = {key: statistics.median(v) for key, v in times.items()}
        print(f"| {b} x {n} x {k} | {med['m_ours'] / med['m_hand']:.2f} | {med['s_ours'] / med['s_hand']:.2f} | "
              f"{med['s_ours'] / med['s_topk']:.1f} | {med['s_ours'] * 1e3:.1f} | {med['s_topk'] * 1e3:.1f} | "
              f"{med['z_tree'] / med['z_dp']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
