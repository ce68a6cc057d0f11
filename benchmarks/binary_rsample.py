"""``rsample`` of the binary-gate laws vs a hand-written torch expression of the same formula.

For each method, ``est.distribution(**params).rsample()`` (law construction included) is
timed against a plain torch expression computing the same sample (hard Bernoulli draws
written ``rand < p``, as the laws draw them), at batch 4096 x 256, interleaved call by call
and timed by the CPU time of the calling thread (other processes' time slices on a loaded
machine do not count); the table reports the median time of each and the median of the
per-round ratios with a distribution-free 95% confidence interval (targets: <= 1.2 for the
relaxations, <= 1.05 for the laws with a hard forward).  Argument validation is off (``Distribution.set_default_validate_args(False)``),
as in production training loops; ``--validate`` keeps it on (the laws then also check
their parameters, e.g. a Cholesky factorisation of ``corr`` with a host sync).

    python benchmarks/binary_rsample.py            # 5 rounds
    python benchmarks/binary_rsample.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import statistics

import pyro  # noqa: F401  (imported first: importing pyro switches validation on)
import torch
import torch.nn.functional as F
import relaxit

from _stats import median_ci, paired_times  # noqa: E402


def cases(batch: int, n: int, device: str):
    g = torch.Generator().manual_seed(0)

    def leaf(t):
        return t.to(device).requires_grad_(True)

    logits = leaf(torch.randn(batch, n, generator=g))
    loc = leaf(torch.rand(batch, n, generator=g))
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    dg = cov.diagonal().rsqrt()
    corr = (cov * dg[:, None] * dg[None, :]).float()
    corr.fill_diagonal_(1.0)
    corr = leaf(corr)
    eps = torch.finfo(torch.float32).eps

    sigma = 0.5
    beta, gamma, zeta = 2 / 3, -0.1, 1.1
    tau = 0.5

    def plain_gaussian():
        return (loc + sigma * torch.randn_like(loc)).clamp(0, 1)

    def plain_hard_concrete():
        u = torch.rand_like(logits).clamp(eps, 1 - eps)
        s = torch.sigmoid((logits + u.log() - (-u).log1p()) / beta)
        return (s * (zeta - gamma) + gamma).clamp(0, 1)

    def plain_st():
        p = torch.sigmoid(logits)
        return (torch.rand_like(p) < p).to(p.dtype) + (p - p.detach())

    def plain_sts():
        a = torch.exp(0.5 * F.logsigmoid(logits))
        return (torch.rand_like(a) < a).to(a.dtype) * a

    def plain_correlated():
        tril = torch.linalg.cholesky(corr)
        x = torch.randn(batch, n, device=logits.device) @ tril.T
        l = torch.special.log_ndtr(x) - torch.special.log_ndtr(-x)
        return torch.sigmoid((logits + l) / tau).clamp(eps, 1 - eps)

    return [
        ("gaussian_relaxed_bernoulli", {"sigma": sigma}, {"loc": loc}, plain_gaussian),
        ("hard_concrete", {"beta": beta, "gamma": gamma, "zeta": zeta}, {"log_alpha": logits}, plain_hard_concrete),
        ("straight_through_bernoulli", {}, {"logits": logits}, plain_st),
        ("stochastic_times_smooth", {}, {"logits": logits}, plain_sts),
        ("correlated_relaxed_bernoulli", {"tau": tau}, {"logits": logits, "corr": corr}, plain_correlated),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per method")
    parser.add_argument("--rounds", type=int, default=101)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", action="append", help="run only these methods")
    parser.add_argument("--validate", action="store_true", help="keep argument validation on")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else args.rounds
    torch.set_num_threads(1)  # CPU time of this thread is the time of the call
    relaxit.available()  # loads the plugins (and pyro.distributions, which resets validation)
    torch.distributions.Distribution.set_default_validate_args(args.validate)

    rows = []
    for name, config, params, plain in cases(args.batch, args.n, args.device):
        if args.only and name not in args.only:
            continue
        est = relaxit.get(name, **config)
        ours = lambda est=est, params=params: est.distribution(**params).rsample()  # noqa: E731
        t_ours, t_plain = paired_times(ours, plain, rounds)
        ratios = [a / b for a, b in zip(t_ours, t_plain)]
        rows.append((name, statistics.median(t_ours), statistics.median(t_plain), *median_ci(ratios)))

    print(f"rsample at batch {args.batch} x {args.n} on {args.device}, {torch.get_num_threads()} threads, "
          f"median of {rounds} interleaved round(s), validation {'on' if args.validate else 'off'}\n")
    print("| method | relaxit (ms) | plain torch (ms) | ratio [95% CI] |")
    print("|---|---:|---:|---:|")
    for name, a, b, r, lo, hi in rows:
        print(f"| {name} | {1e3 * a:.3f} | {1e3 * b:.3f} | {r:.3f} [{lo:.3f}, {hi:.3f}] |")
    return rows


if __name__ == "__main__":
    main()
