"""Speed of ``gumbel_topk`` against the loop-over-k successive softmax (Xie & Ermon 2019, as in
upstream relaxit): one relaxed k-hot sample per row, ratio loop / ours in one interleaved run.

    python benchmarks/topk_speed.py            # n=1000, batch 256, k = 1, 10, 100, 500
    python benchmarks/topk_speed.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.benchmark import Timer

import relaxit


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--hard", action="store_true", help="time the straight-through (hard) sample")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median ratio is reported")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per blocked_autorange")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.ks, args.rounds, args.min_time = [1, 100], 2, 0.05
    torch.set_num_threads(args.threads)
    logits = torch.randn(args.batch, args.n, device=args.device)
    print(f"n={args.n}, batch={args.batch}, tau={args.tau}, hard={args.hard}, device={args.device}, "
          f"threads={args.threads}\n")
    print("| k | gumbel_topk (ms) | loop over k (ms) | speed-up (loop / ours) |")
    print("|---:|---:|---:|---:|")
    for k in args.ks:
        law = relaxit.get("gumbel_topk", k=k, tau=args.tau, hard=args.hard).distribution(logits=logits)
        ours = Timer("law.rsample()", globals={"law": law})
        ref = Timer("f(l, k, t)", globals={"f": loop_over_k, "l": logits, "k": k, "t": args.tau})
        t_ours, t_ref, ratios = [], [], []
        for _ in range(args.rounds):  # interleave so that load changes hit both
            a = ours.blocked_autorange(min_run_time=args.min_time).median
            b = ref.blocked_autorange(min_run_time=args.min_time).median
            t_ours.append(a)
            t_ref.append(b)
            ratios.append(b / a)
        print(f"| {k} | {1e3 * statistics.median(t_ours):.2f} | {1e3 * statistics.median(t_ref):.2f} "
              f"| {statistics.median(ratios):.1f}x |")


if __name__ == "__main__":
    main()
