"""``rsample`` of the simplex and integer relaxations against plain torch expressions of the
same formulas: ``invertible_gaussian``, ``logistic_normal``, ``generalized_gumbel_softmax``
(soft and straight-through).  Ratios ours / plain from one interleaved run (target <= 1.2).

    python benchmarks/simplex_rsample.py           # batch 4096, K = 20, 8 samples
    python benchmarks/simplex_rsample.py --quick   # seconds
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
from torch.utils.benchmark import Timer

import relaxit


def plain_igr(loc, scale, s, tau, delta):
    y = loc + scale * torch.randn((s,) + loc.shape, dtype=loc.dtype, device=loc.device)
    pad = torch.full(y.shape[:-1] + (1,), math.log(delta), dtype=y.dtype, device=y.device)
    return torch.cat([y / tau, pad], -1).softmax(-1)


def plain_logistic_normal(loc, scale, s):
    return (loc + scale * torch.randn((s,) + loc.shape, dtype=loc.dtype, device=loc.device)).softmax(-1)


def plain_gengs(logits, values, s, tau):
    g = -torch.empty((s,) + logits.shape, dtype=logits.dtype, device=logits.device).exponential_().log()
    return (((logits + g) / tau).softmax(-1) * values).sum(-1)


def plain_gengs_hard(logits, values, s, tau):
    scores = logits - torch.empty((s,) + logits.shape, dtype=logits.dtype, device=logits.device).exponential_().log()
    hard = values.expand(scores.shape).gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)
    soft = ((scores / tau).softmax(-1) * values).sum(-1)
    return hard + (soft - soft.detach())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--k", type=int, default=20, help="categories / support size")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time = 2, 0.05
    torch.set_num_threads(args.threads)
    dev, b, k, s = args.device, args.batch, args.k, args.samples
    tau, delta = 0.5, 1.0
    loc, scale = torch.randn(b, k, device=dev), torch.rand(b, k, device=dev) + 0.5
    loc1, scale1 = loc[:, :-1].contiguous(), scale[:, :-1].contiguous()
    logits, values = torch.randn(b, k, device=dev), torch.arange(k, dtype=torch.float32, device=dev)

    cases = [
        ("invertible_gaussian", relaxit.get("invertible_gaussian", tau=tau, delta=delta), {"loc": loc1, "scale": scale1},
         lambda: plain_igr(loc1, scale1, s, tau, delta)),
        ("logistic_normal", relaxit.get("logistic_normal"), {"loc": loc, "scale": scale},
         lambda: plain_logistic_normal(loc, scale, s)),
        ("generalized_gumbel_softmax", relaxit.get("generalized_gumbel_softmax", tau=tau),
         {"logits": logits, "values": values}, lambda: plain_gengs(logits, values, s, tau)),
        ("generalized_gumbel_softmax[hard]", relaxit.get("generalized_gumbel_softmax", tau=tau, hard=True),
         {"logits": logits, "values": values}, lambda: plain_gengs_hard(logits, values, s, tau)),
    ]
    print(f"batch={b}, K={k}, samples={s}, device={dev}, threads={args.threads}\n")
    print("| method | plain torch (ms) | law.rsample (ms) | ratio | est.distribution(...).rsample (ms) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, est, params, plain in cases:
        law = est.distribution(**params)
        timers = {
            "plain": Timer("f()", globals={"f": plain}),
            "law": Timer("law.rsample((s,))", globals={"law": law, "s": s}),
            "build": Timer("est.distribution(**p).rsample((s,))", globals={"est": est, "p": params, "s": s}),
        }
        times = {key: [] for key in timers}
        for _ in range(args.rounds):
            for key, timer in timers.items():
                times[key].append(timer.blocked_autorange(min_run_time=args.min_time).median)
        r_law = statistics.median(a / p for a, p in zip(times["law"], times["plain"]))
        r_build = statistics.median(a / p for a, p in zip(times["build"], times["plain"]))
        med = {key: 1e3 * statistics.median(v) for key, v in times.items()}
        print(f"| {name} | {med['plain']:.3f} | {med['law']:.3f} | {r_law:.2f}x | {med['build']:.3f} | {r_build:.2f}x |")


if __name__ == "__main__":
    main()
