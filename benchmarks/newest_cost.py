"""Cost per ``estimate()`` + ``backward()`` of the newest estimators, relative to
``reinforce`` (leave-one-out baseline, i.e. RLOO) with the same K, measured in one run.

The objective is the Bernoulli VAE loss of Shi et al. (2022, Table 1) without the encoder:
logits ``[batch, 200]`` given, decoder 200-200-200-784 (LeakyReLU), Bernoulli likelihood on
fixed random binary "images".  For categorical-only methods (``unordered_set``) and for
``indecater`` the same decoder reads 20 one-hot categorical variables with 10 classes
(``200 = 20 x 10`` inputs), compared with ``reinforce(family="categorical")``.

Timers are interleaved (``torch.utils.benchmark.Timer.blocked_autorange``, several rounds)
and the table reports the median ratio over rounds.

    python benchmarks/newest_cost.py            # batch 100, K = 2, 3, 5
    python benchmarks/newest_cost.py --quick    # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.benchmark import Timer

import relaxit


def make_decoder(d_in: int, hidden: int, d_out: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.LeakyReLU(0.3),
        torch.nn.Linear(hidden, hidden), torch.nn.LeakyReLU(0.3),
        torch.nn.Linear(hidden, d_out),
    )


def bernoulli_case(batch: int, hidden: int):
    dec = make_decoder(200, hidden, 784)
    x = (torch.rand(batch, 784) < 0.3).float()
    logits = torch.randn(batch, 200)

    def objective(z):  # z [S, batch, 200] -> [S, batch]
        out = dec(z)
        return torch.nn.functional.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    return dec, logits, objective


def categorical_case(batch: int, hidden: int):
    dec = make_decoder(200, hidden, 784)
    x = (torch.rand(batch, 784) < 0.3).float()
    logits = torch.randn(batch, 20, 10)

    def objective(z):  # z [S, batch, 20, 10] -> [S, batch]
        out = dec(z.flatten(-2))
        return torch.nn.functional.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    return dec, logits, objective


def step(est, objective, logits, k, dec):
    leaf = logits.detach().requires_grad_(True)
    out = est.estimate(objective, num_samples=k, logits=leaf)
    out.surrogate.sum().backward()
    dec.zero_grad(set_to_none=True)
    est.zero_grad(set_to_none=True)


def measure(cases, rounds: int, min_run_time: float):
    """cases: {label: (est, objective, logits, k, dec)}; returns median time per label."""
    times = {label: [] for label in cases}
    for _ in range(rounds):
        for label, args in cases.items():
            t = Timer("step(*args)", globals={"step": step, "args": args})
            times[label].append(t.blocked_autorange(min_run_time=min_run_time).median)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: a seconds-long smoke run")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, hidden, rounds, mrt, ks = args.batch, 200, args.rounds, 0.3, args.ks
    if args.quick:
        batch, hidden, rounds, mrt, ks = 20, 64, 1, 0.05, [2, 3]
    bern = bernoulli_case(batch, hidden)
    cat = categorical_case(batch, hidden)
    rows = []
    for k in ks:
        cases = {}
        ref = relaxit.get("reinforce", family="bernoulli", baseline="leave_one_out")
        cases["reinforce (RLOO)"] = (ref, bern[2], bern[1], k, bern[0])
        for name in ("arms", "double_cv", "rodeo", "vimco", "indecater"):
            multi = name in ("vimco", "indecater")  # serve several families: family is required
            cases[name] = (relaxit.get(name, **({"family": "bernoulli"} if multi else {})), bern[2], bern[1], k, bern[0])
        cref = relaxit.get("reinforce", baseline="leave_one_out", family="categorical")
        cases["reinforce cat (RLOO)"] = (cref, cat[2], cat[1], k, cat[0])
        cases["unordered_set"] = (relaxit.get("unordered_set"), cat[2], cat[1], k, cat[0])
        cases["indecater cat"] = (relaxit.get("indecater", family="categorical"), cat[2], cat[1], k, cat[0])
        times = measure(cases, rounds, mrt)
        base_b = times["reinforce (RLOO)"]
        base_c = times["reinforce cat (RLOO)"]
        for label, ts in times.items():
            base = base_c if ("cat" in label or label == "unordered_set") else base_b
            ratio = statistics.median(t / b for t, b in zip(ts, base))
            rows.append((k, label, statistics.median(ts) * 1e3, ratio))
    print(f"\nbatch {batch}, decoder 200-{hidden}-{hidden}-784, threads {args.threads}\n")
    print("| K | estimator | ms per estimate+backward | ratio to RLOO (same K, same family) |")
    print("|---|-----------|--------------------------|-------------------------------------|")
    for k, label, ms, ratio in rows:
        print(f"| {k} | {label} | {ms:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
