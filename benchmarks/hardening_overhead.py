"""Cost of the core's argument guard (issue 16): non-finite check, objective wrapper, own-parameter
hooks, around ``estimate()``.

For a few estimators and sizes, one interleaved run times

- ``guarded``: ``est.estimate(...)`` as users call it (the fast path: all parameters finite);
- ``unguarded``: the same estimator's ``estimate`` without the guard (``__wrapped__``);
- ``torch``: a hand-written torch formula of the same estimate (the reference),

each followed by ``backward()``, and prints medians and the ratios guarded/torch and
guarded/unguarded.  The machine is shared: only ratios from one run mean anything.

    .venv/bin/python benchmarks/hardening_overhead.py [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import relaxit


def cases(batch: int, k: int):
    logits = torch.randn(batch, k)

    def loss(z):
        return (z - 0.3).pow(2).sum(-1)

    gs = relaxit.get("gumbel_softmax", tau=0.5)
    rf = relaxit.get("reinforce", family="categorical", baseline="leave_one_out")

    def run(est, guarded, s):
        def step():
            x = logits.clone().requires_grad_(True)
            fn = type(est).estimate if guarded else type(est).estimate.__wrapped__
            out = fn(est, loss, num_samples=s, logits=x)
            out.surrogate.sum().backward()
        return step

    def torch_gs():
        x = logits.clone().requires_grad_(True)
        z = F.gumbel_softmax(x.expand(2, batch, k), tau=0.5)
        loss(z).mean(0).sum().backward()

    def torch_rloo():
        x = logits.clone().requires_grad_(True)
        d = torch.distributions.OneHotCategorical(logits=x, validate_args=False)
        z = d.sample((2,))
        f = loss(z)
        b = (f.sum(0, keepdim=True) - f) / 1
        ((f + (f - b).detach() * (d.log_prob(z) - d.log_prob(z).detach())).mean(0)).sum().backward()

    return {
        "gumbel_softmax": (run(gs, True, 2), run(gs, False, 2), torch_gs),
        "reinforce (RLOO, categorical)": (run(rf, True, 2), run(rf, False, 2), torch_rloo),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(False)  # as in a training loop
    print(f"{'case':40s} {'size':>10s} {'guarded us':>11s} {'unguarded us':>13s} {'torch us':>9s} "
          f"{'g/torch':>8s} {'g/unguarded':>11s}")
    for batch, k in ((8, 4), (256, 32), (4096, 64)):
        table = cases(batch, k)
        times = {(c, w): [] for c in table for w in range(3)}
        for _ in range(args.rounds):  # interleaved
            for c, fns in table.items():
                for w, fn in enumerate(fns):
                    times[(c, w)].append(Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=args.min_time).median)
        for c in table:
            g, u, t = (times[(c, w)] for w in range(3))
            r_t = statistics.median(a / b for a, b in zip(g, t))
            r_u = statistics.median(a / b for a, b in zip(g, u))
            print(f"{c:40s} {f'{batch}x{k}':>10s} {statistics.median(g) * 1e6:11.1f} {statistics.median(u) * 1e6:13.1f} "
                  f"{statistics.median(t) * 1e6:9.1f} {r_t:8.2f} {r_u:11.2f}")


if __name__ == "__main__":
    main()
