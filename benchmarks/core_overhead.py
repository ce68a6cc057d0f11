"""Framework overhead, as ratios measured in one run.

1. ``import relaxit; relaxit.get("gumbel_softmax")`` on top of ``import torch, pyro``
   (subprocesses, wall time, median of repeats; ``benchmarks/startup.py`` measures the
   start-up cases in CPU time, with confidence intervals).
2. ``relaxit.get("gumbel_softmax", tau=0.5).distribution(logits=x).rsample()`` against
   ``torch.nn.functional.gumbel_softmax(x, tau=0.5)`` at 1024x10 and 64x1000, with torch's
   argument validation on (its default) and off.
3. ``estimate()`` against the raw formula ``f(gumbel_softmax(x)).mean(0)``: added microseconds.

relaxit draws Gumbel noise on CPU from a float64 uniform (``relaxit_core.distributions.gumbel_like``),
which is cheaper there than the ``exponential_`` of ``F.gumbel_softmax``.  So that this saving
does not hide the framework's own cost, rows marked "same noise" compare with the plain formula
``softmax((x + gumbel_like(x)) / tau)``: their difference is the Python overhead of the law and of
``estimate``.

Usage: ``python benchmarks/core_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import relaxit
from relaxit_core.distributions import gumbel_like


def import_time(stmt: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit(fn, min_run_time: float) -> float:
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (seconds)")
    args = ap.parse_args()
    repeats, run_time = (3, 0.2) if args.quick else (9, 1.0)
    torch.set_num_threads(1)

    base, both = [], []
    for _ in range(repeats):  # interleave so that machine load affects both alike
        base.append(import_time("import torch, pyro", 1))
        both.append(import_time("import torch, pyro, relaxit; relaxit.get('gumbel_softmax')", 1))
    b, r = statistics.median(base), statistics.median(both)
    print("| measure | baseline | relaxit | ratio |\n|---|---|---|---|")
    print(f"| import + get('gumbel_softmax') (s) | {b:.3f} | {r:.3f} | {r / b:.3f} |")

    est = relaxit.get("gumbel_softmax", tau=0.5)
    for shape in ((1024, 10), (64, 1000)):
        x = torch.randn(shape)
        for validate in (True, False):
            torch.distributions.Distribution.set_default_validate_args(validate)
            ours = lambda: est.distribution(logits=x).rsample()  # noqa: E731
            ref = lambda: F.gumbel_softmax(x, tau=0.5)  # noqa: E731
            same = lambda: ((x + gumbel_like(x.shape, x)) / 0.5).softmax(-1)  # noqa: E731
            t_ref1, t_ours, t_ref2 = timeit(ref, run_time), timeit(ours, run_time), timeit(ref, run_time)
            t_ref, t_same = min(t_ref1, t_ref2), timeit(same, run_time)
            name = f"rsample {shape[0]}x{shape[1]} validate={validate} (us)"
            print(f"| {name} | {t_ref * 1e6:.1f} | {t_ours * 1e6:.1f} | {t_ours / t_ref:.3f} |")
            print(f"| {name}, same noise | {t_same * 1e6:.1f} | {t_ours * 1e6:.1f} | {t_ours / t_same:.3f} |")
    torch.distributions.Distribution.set_default_validate_args(True)

    x = torch.randn(1024, 10, requires_grad=True)
    w = torch.randn(10)
    f = lambda z: (z * w).sum(-1)  # noqa: E731
    for validate in (True, False):
        torch.distributions.Distribution.set_default_validate_args(validate)
        ours = lambda: est.estimate(f, num_samples=1, logits=x).surrogate  # noqa: E731
        ref = lambda: f(F.gumbel_softmax(x, tau=0.5).unsqueeze(0)).mean(0)  # noqa: E731
        same = lambda: f(((x + gumbel_like((1,) + x.shape, x)) / 0.5).softmax(-1)).mean(0)  # noqa: E731
        t_ref, t_ours, t_same = timeit(ref, run_time), timeit(ours, run_time), timeit(same, run_time)
        name = f"estimate() 1024x10 validate={validate} (us)"
        print(f"| {name} | {t_ref * 1e6:.1f} | {t_ours * 1e6:.1f} | {(t_ours - t_ref) * 1e6:+.1f} us |")
        print(f"| {name}, same noise | {t_same * 1e6:.1f} | {t_ours * 1e6:.1f} | {(t_ours - t_same) * 1e6:+.1f} us |")
    torch.distributions.Distribution.set_default_validate_args(True)


if __name__ == "__main__":
    main()
