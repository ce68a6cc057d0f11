"""Statistics shared by the benchmark scripts (the standard library only, so that the peers'
venv can use it too)."""

from __future__ import annotations

import math
import statistics


def median_ci(xs) -> tuple[float, float, float]:
    """Median of ``xs`` and a distribution-free ~95% confidence interval of it: the order
    statistics ``x_(j)`` and ``x_(n+1-j)`` with ``j`` the largest index such that
    ``P(Bin(n, 1/2) <= j - 1) <= 0.025``.  Under 6 values: the range."""
    xs = sorted(xs)
    n = len(xs)
    med = statistics.median(xs)
    if n < 6:
        return med, xs[0], xs[-1]
    cdf, j = 0.0, 0
    while cdf + math.comb(n, j) / 2**n <= 0.025:
        cdf, j = cdf + math.comb(n, j) / 2**n, j + 1
    j = max(j, 1)
    return med, xs[j - 1], xs[n - j]


def paired_times(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Call ``first()`` then ``second()`` once each per round, ``rounds`` times, after one
    warm-up call of each, timing every call by the CPU time of the calling thread (so that
    other processes' time slices on a loaded machine do not count): the two lists of
    seconds, paired by round (take ratios round by round)."""
    import time

    first(), second()
    t_first, t_second = [], []
    for _ in range(rounds):
        t0 = time.thread_time()
        first()
        t1 = time.thread_time()
        second()
        t2 = time.thread_time()
        t_first.append(t1 - t0)
        t_second.append(t2 - t1)
    return t_first, t_second


def interleaved_times(cases, rounds: int, seed: int = 0) -> dict:
    """``cases``: ``{label: zero-arg callable}`` -> ``{label: [seconds, one per round]}``.

    Each round calls every case once, in an order shuffled anew each round (``seed`` fixes
    the shuffles), after two warm-up calls of each; each call is timed by the CPU time of the
    calling thread (torch on one thread), so that other processes' time slices on a loaded
    machine do not count; garbage collection off while timing.  Take ratios round by round.
    The shuffle spreads over every case what running after another costs: a case that
    follows one with large buffers finds the caches cold and the allocator's pages elsewhere
    (in a fixed order, RODEO in ``cv_speed.py`` measured 10-20% slower right after its dense
    hand-written version).
    """
    import gc
    import random
    import time

    times = {label: [] for label in cases}
    for fn in cases.values():
        fn()
        fn()
    order = list(cases.items())
    rng = random.Random(seed)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for label, fn in order:
                t0 = time.thread_time()
                fn()
                times[label].append(time.thread_time() - t0)
    finally:
        if gc_was:
            gc.enable()
    return times
