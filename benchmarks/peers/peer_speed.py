"""The peers on the problems of ``benchmarks/cv_speed.py`` and ``benchmarks/binary_rsample.py``,
as ratios to the same hand-written references, measured in this process (run it with the
peers' own venv: ``bash benchmarks/peers/setup.sh``; it must not import this project's
``relaxit``, which that venv replaces by relaxit 1.2.1 from PyPI).

- storchastic 0.3.7: ``RELAX`` (its default control variate, ``in_dim = D``), ``REBAR`` and
  ``ScoreFunction`` with the ``batch_average`` baseline (RLOO) on the Bernoulli problem
  (``D = 200``, batch 256, 3 evaluations: ``n_samples = 3`` for the score function, ``1`` for
  RELAX/REBAR), per sample + cost + ``storch.backward()``; reference (b), the fastest honest
  RLOO with 3 evaluations (the same function as in ``cv_speed.py``).
- relaxit 1.2.1: ``StraightThroughBernoulli`` and ``StochasticTimesSmooth`` ``rsample`` at
  4096 x 256 against the hand formulas with ``rand < p`` (as in ``binary_rsample.py``).

Timing as in ``cv_speed.py``: interleaved call by call, thread CPU time, 1 thread, torch's
validation off, median ratio with a distribution-free 95% confidence interval.

    /tmp/relaxit-peers/bin/python benchmarks/peers/peer_speed.py [--rounds 101] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/_stats.py
from _stats import interleaved_times, median_ci  # noqa: E402

D, D_OUT, EVALS = 200, 784, 3


def run(cases, rounds):
    """As ``cv_speed.py``: :func:`_stats.interleaved_times` (a shuffled order each round)."""
    return interleaved_times(cases, rounds)


def problem(kind, batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, D, generator=gen).requires_grad_(True)
    if kind == "cheap":
        target = torch.rand(D, generator=gen)
        return logits, [], lambda z: (z - target).pow(2).sum(-1)
    dec = torch.nn.Linear(D, D_OUT)
    x = (torch.rand(batch, D_OUT, generator=gen) < 0.3).float()

    def objective(z):
        out = dec(z)
        return F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)

    return logits, list(dec.parameters()), objective


def rloo_b(logits, params, objective, k=EVALS):
    p = torch.sigmoid(logits.detach())
    z = (torch.rand((k,) + logits.shape) < p).to(logits.dtype)
    f = objective(z)
    fd = f.detach()
    w = fd - (fd.sum(0) - fd) / (k - 1)
    g = (w.unsqueeze(-1) * (z - p)).sum(0) / k
    loss = f.mean(0).sum()
    if loss.requires_grad:
        torch.autograd.backward((loss, logits), (None, g))
    else:
        logits.backward(g)


def storch_cases(kind, batch):
    import storch
    from storch.method import REBAR, RELAX, ScoreFunction
    from torch.distributions import Bernoulli

    logits, params, objective = problem(kind, batch)
    methods = {
        "storchastic RELAX": RELAX("z", n_samples=1, in_dim=D),
        "storchastic REBAR": REBAR("z", n_samples=1),
        "storchastic ScoreFunction (batch_average, 3)": ScoreFunction("z", n_samples=EVALS, baseline_factory="batch_average"),
    }

    def zero():
        logits.grad = None
        for p in params:
            p.grad = None

    def step(method):
        l_ind = storch.denote_independent(logits, 0, "data")
        z = method(Bernoulli(logits=l_ind))
        storch.add_cost(objective(z), "cost")
        storch.backward(update_estimator_params=True)
        zero()
        for p in method.parameters():
            p.grad = None

    cases = {"(b) RLOO": lambda: (rloo_b(logits, params, objective), zero())}
    for name, m in methods.items():
        cases[name] = lambda m=m: step(m)
    return cases


def relaxit121_cases(batch=4096, n=256):
    from relaxit.distributions import StochasticTimesSmooth, StraightThroughBernoulli

    logits = torch.randn(batch, n).requires_grad_(True)

    def plain_st():
        q = torch.sigmoid(logits)
        return (torch.rand_like(q) < q).to(q.dtype) + (q - q.detach())

    def plain_sts():
        a = torch.exp(0.5 * F.logsigmoid(logits))
        return (torch.rand_like(a) < a).to(a.dtype) * a

    return {
        "relaxit 1.2.1 StraightThroughBernoulli": (lambda: StraightThroughBernoulli(logits=logits).rsample(), plain_st),
        "relaxit 1.2.1 StochasticTimesSmooth": (lambda: StochasticTimesSmooth(logits=logits).rsample(), plain_sts),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=101)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = 5 if args.quick else args.rounds
    torch.set_num_threads(1)
    import pyro.distributions  # noqa: F401  (resets torch's validation default: import first)

    torch.distributions.Distribution.set_default_validate_args(False)
    print(f"torch {torch.__version__}, 1 thread, validation off, {rounds} interleaved rounds\n")
    for kind in ("cheap", "decoder"):
        t = run(storch_cases(kind, 256), rounds)
        print(f"\n### storchastic 0.3.7, {kind} objective, batch 256, D = {D}\n")
        print("| case | ms | ratio to (b) RLOO [95% CI] |\n|---|---:|---:|")
        for k, ts in t.items():
            r = median_ci([a / b for a, b in zip(ts, t["(b) RLOO"])])
            print(f"| {k} | {statistics.median(ts) * 1e3:.3f} | {r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] |")
        sys.stdout.flush()
    print("\n### relaxit 1.2.1 rsample, 4096 x 256, against the hand formula with rand < p\n")
    print("| law | ms | hand ms | ratio [95% CI] |\n|---|---:|---:|---:|")
    for name, (ours, hand) in relaxit121_cases().items():
        t = run({"o": ours, "h": hand}, rounds)
        r = median_ci([a / b for a, b in zip(t["o"], t["h"])])
        print(f"| {name} | {statistics.median(t['o']) * 1e3:.3f} | {statistics.median(t['h']) * 1e3:.3f} "
              f"| {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] |")


if __name__ == "__main__":
    main()
