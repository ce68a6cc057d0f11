"""Speed of the straight-through categorical estimators against hand-written torch.

Each estimator's forward + backward step (sample ``z``, loss ``(z * w).sum()``, ``backward()``)
at batch 1024 x 32 categories is timed against a plain-torch expression of the same formula,
in one run, interleaved, with :class:`torch.utils.benchmark.Timer` (``blocked_autorange``);
the table gives the median over rounds of the per-round time ratios (target <= 1.3).

Two library paths are timed: ``law.rsample()`` (``est.distribution(logits=θ).rsample()``)
and ``est.estimate(objective, logits=θ)``, both with torch's default argument validation.

Gumbel-Rao at ``num_conditional = 10`` is compared with ten plain Gumbel-softmax draws
averaged (the issue's reference) and with a hand-written version of its own formula.

Usage::

    python benchmarks/st_speed.py            # ~ a minute
    python benchmarks/st_speed.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.benchmark import Timer

import relaxit

B, K = 1024, 32
TAU = 0.5
M = 10


# --------------------------------------------------------------------- hand-written formulas
def _gumbel(shape, like):
    return -torch.empty(shape, dtype=like.dtype, device=like.device).exponential_().log()


def _one_hot_argmax(x):
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)


def hand_st(theta):
    """Bengio et al. (2013): forward one-hot Categorical(softmax θ), backward through softmax θ."""
    p = theta.softmax(-1)
    hard = _one_hot_argmax(theta.detach() + _gumbel(theta.shape, theta))
    return hard + (p - p.detach())


def hand_st_gs(theta, tau=TAU):
    y = ((theta + _gumbel(theta.shape, theta)) / tau).softmax(-1)
    return _one_hot_argmax(y.detach()) + (y - y.detach())


def hand_ten_gs(theta, tau=TAU, m=M):
    """Ten Gumbel-softmax draws averaged, hard value from the first (the issue's reference)."""
    x = theta + _gumbel((m,) + tuple(theta.shape), theta)
    soft = (x / tau).softmax(-1).mean(0)
    hard = _one_hot_argmax(x[0].detach())
    return hard + (soft - soft.detach())


def hand_gumbel_rao(theta, tau=TAU, m=M):
    """Paulus et al. (2021): conditional Gumbels given D, written directly."""
    ell = theta.detach().log_softmax(-1)
    hard = _one_hot_argmax(ell + _gumbel(theta.shape, theta))
    e = torch.empty((m,) + tuple(theta.shape), dtype=theta.dtype).exponential_()
    e_i = (e * hard).sum(-1, keepdim=True)
    x_other = ell - torch.log(e + e_i * ell.exp())        # truncated Gumbels, j != i
    x_top = -torch.log(e_i)                                # the max, Gumbel(0)
    x = torch.where(hard.bool(), x_top, x_other)
    g = x - ell
    soft = ((theta + g) / tau).softmax(-1).mean(0)
    return hard + (soft - soft.detach())


def hand_reinmax(theta, tau=1.0):
    """Liu et al. (2023), Algorithm 2, line by line."""
    pi0 = theta.softmax(-1)
    d = _one_hot_argmax(theta.detach() + _gumbel(theta.shape, theta))
    pi1 = (d + (theta / tau).softmax(-1)) / 2
    pi1 = ((pi1.log() - theta).detach() + theta).softmax(-1)
    pi2 = 2 * pi1 - 0.5 * pi0
    return pi2 - pi2.detach() + d


def hand_decoupled(theta, tau_f=0.5, tau_b=2.0):
    ell = theta / tau_f
    x = ell + _gumbel(theta.shape, theta)
    hard = _one_hot_argmax(x.detach())
    soft = (x / tau_b).softmax(-1)
    return hard + (soft - soft.detach())


CASES = [
    # (row label, estimator name, config, hand-written reference, reference label)
    ("st_categorical", "st_categorical", {}, hand_st, "hand ST"),
    ("gumbel_softmax hard (ST-GS)", "gumbel_softmax", {"tau": TAU, "hard": True}, hand_st_gs, "hand ST-GS"),
    ("gumbel_rao M=10", "gumbel_rao", {"tau": TAU, "num_conditional": M}, hand_ten_gs, "10 GS draws"),
    ("gumbel_rao M=10", "gumbel_rao", {"tau": TAU, "num_conditional": M}, hand_gumbel_rao, "hand Gumbel-Rao"),
    ("reinmax", "reinmax", {"tau": 1.0}, hand_reinmax, "hand Algorithm 2"),
    ("decoupled_st_gumbel_softmax", "decoupled_st_gumbel_softmax", {"tau_forward": 0.5, "tau_backward": 2.0},
     hand_decoupled, "hand decoupled"),
]


def make_step(sample):
    theta = torch.randn(B, K, requires_grad=True)
    w = torch.randn(B, K)

    def step():
        theta.grad = None
        (sample(theta) * w).sum().backward()

    return step


def make_estimate_step(est):
    theta = torch.randn(B, K, requires_grad=True)
    w = torch.randn(B, K)
    objective = lambda z: (z * w).sum((-1, -2))  # noqa: E731

    def step():
        theta.grad = None
        est.estimate(objective, logits=theta).surrogate.backward()

    return step


def timeit(step, min_run_time):
    step()  # warm-up
    return Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=min_run_time).median


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (seconds)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rounds = args.rounds or (2 if args.quick else 7)
    min_run = 0.05 if args.quick else 0.2

    rows = []
    for label, name, cfg, hand, ref in CASES:
        est = relaxit.get(name, **cfg)
        lib = make_step(lambda th, est=est: est.distribution(logits=th).rsample())
        via_estimate = make_estimate_step(est)
        ref_step = make_step(hand)
        r_lib, r_est, t_lib, t_est, t_ref = [], [], [], [], []
        for _ in range(rounds):  # interleaved
            a = timeit(lib, min_run)
            b = timeit(ref_step, min_run)
            c = timeit(via_estimate, min_run)
            r_lib.append(a / b)
            r_est.append(c / b)
            t_lib.append(a)
            t_ref.append(b)
            t_est.append(c)
        rows.append((label, ref, statistics.median(t_ref), statistics.median(t_lib), statistics.median(r_lib),
                     statistics.median(t_est), statistics.median(r_est)))

    print(f"batch {B} x {K} categories, float32, CPU, {torch.get_num_threads()} thread(s), {rounds} interleaved rounds; "
          "forward + backward of (z * w).sum(); median ratios\n")
    print("| estimator | reference | reference (µs) | law.rsample (µs) | ratio | estimate() (µs) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, ref, tr, tl, rl, te, re in rows:
        print(f"| {label} | {ref} | {tr * 1e6:.0f} | {tl * 1e6:.0f} | {rl:.2f}x | {te * 1e6:.0f} | {re:.2f}x |")


if __name__ == "__main__":
    main()
