"""Start-up cost: CPU time of a fresh interpreter, as a ratio to ``import torch, pyro``.

Each case runs in its own child process; its CPU time is the child's user + system time
(``os.wait4``), so that the load the other processes put on a shared machine counts much
less than in wall time.  The runs are interleaved in pairs: one round runs, for each case
in a shuffled order, that case and the baseline one right after the other (in a random
order), and the case's time is divided by the baseline's time *of its pair*, so that a
change of the machine's load between pairs cancels.  The table gives the median of these
ratios with a distribution-free ~95% confidence interval (binomial order statistics), and
the median difference in milliseconds.

Cases: ``import relaxit``; ``import relaxit; relaxit.get("gumbel_softmax")`` (target:
<= 1.05); ``... relaxit.available()`` (every plugin); ``pydantic: one model`` (``import
torch, pyro`` plus pydantic imported and one one-field model validated: the floor under
anything whose configs are pydantic models, interpreter exit included); ``relaxit --help``
and ``relaxit list`` (the console script's own code, ``relaxit.cli:main``), which should
not import torch at all; each row also says whether the child imported torch.

A second table measures the same cases that import torch *after* ``import torch, pyro`` in
one process (``--same-process``, default 21 children per case): the CPU time added by the
case's own statement, read with ``time.process_time`` around it, and the ratio ``(torch and
pyro's import + the addition) / torch and pyro's import`` of that same child.  Both terms come
from one process, so the variance of torch's own import (several percent between fresh
interpreters, as wide as the target's margin) cancels; the interpreter's start is left out of
both, which makes this ratio slightly larger than the first table's (conservative).

Byte code: ``pip install`` compiles every module to byte code, and torch and Pyro are read
from theirs.  So that relaxit is not the only package compiled from source at every run
(as it would be with ``PYTHONDONTWRITEBYTECODE=1`` in the environment), the children run
without that variable and one warm-up round, not counted, writes relaxit's byte code
(``__pycache__``, ignored by git); ``--no-bytecode`` keeps the variable as it is.

Usage: ``python benchmarks/startup.py [--rounds 9] [--same-process 21] [--no-bytecode]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys

from _stats import median_ci  # noqa: E402

BASELINE = "import torch, pyro"

# The console script ``relaxit`` runs ``relaxit.cli:main``; this is the same code, with a
# report of whether torch was imported appended on stderr.
_CLI = (
    "import sys\n"
    "from relaxit.cli import main\n"
    "sys.argv = ['relaxit', *{argv!r}]\n"
    "try:\n"
    "    rc = main()\n"
    "finally:\n"
    "    sys.stderr.write('\\nTORCH=%d\\n' % ('torch' in sys.modules))\n"
    "sys.exit(rc)\n"
)
_PY = "{stmt}\nimport sys\nsys.stderr.write('\\nTORCH=%d\\n' % ('torch' in sys.modules))\n"

CASES = {
    "import torch, pyro": _PY.format(stmt=BASELINE),
    "import relaxit": _PY.format(stmt="import relaxit"),
    "import relaxit; relaxit.get('gumbel_softmax')": _PY.format(
        stmt="import relaxit; relaxit.get('gumbel_softmax')"),
    "import relaxit; relaxit.available()": _PY.format(stmt="import relaxit; relaxit.available()"),
    # the floor under any pydantic config: pydantic imported, one model validated (reference)
    "pydantic: one model": _PY.format(
        stmt="import torch, pyro\nfrom pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 1\nM()"),
    "relaxit --help": _CLI.format(argv=["--help"]),
    "relaxit list": _CLI.format(argv=["list"]),
    "relaxit list --family subset": _CLI.format(argv=["list", "--family", "subset"]),
}


# the statement of each case that imports torch, for the same-process table
SAME_PROCESS = {
    "import relaxit; relaxit.get('gumbel_softmax')": "import relaxit; relaxit.get('gumbel_softmax')",
    "import relaxit; relaxit.available()": "import relaxit; relaxit.available()",
    "pydantic: one model": "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 1\nM()",
}
_TIMED = (
    "import time\n"
    "t0 = time.process_time()\n"
    "import torch, pyro\n"
    "t1 = time.process_time()\n"
    "{stmt}\n"
    "t2 = time.process_time()\n"
    "print(t1 - t0, t2 - t1)\n"
)


def same_process(stmt: str, env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds of ``import torch, pyro`` and of ``stmt`` run after it, in one child."""
    out = subprocess.run([sys.executable, "-c", _TIMED.format(stmt=stmt)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def cpu_time(code: str, env: dict[str, str]) -> tuple[float, bool]:
    """User + system CPU seconds of a child running ``code``, and whether it imported torch."""
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode not in (0,):
        raise RuntimeError(f"child failed ({proc.returncode}): {code!r}\n{err.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime, b"TORCH=1" in err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as it is in the environment")
    ap.add_argument("--same-process", type=int, default=21, metavar="N",
                    help="children per case of the same-process table (default 21; 0: none)")
    ap.add_argument("--cases", nargs="*", help="only these cases (the baseline always runs)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 3 same-process children: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.same_process = 2, 3
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not args.no_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    cases = {k: v for k, v in CASES.items() if not args.cases or k == BASELINE or k in args.cases}
    rng = random.Random(0)
    for name, code in cases.items():  # warm-up (byte code, file-system cache): not counted
        cpu_time(code, env)
    times: dict[str, list[float]] = {k: [] for k in cases}
    pairs: dict[str, list[float]] = {k: [] for k in cases}  # the baseline run paired with each
    torch_seen: dict[str, bool] = {}
    for _ in range(args.rounds):
        order = [k for k in cases if k != BASELINE]
        rng.shuffle(order)
        for name in order:
            first_base = rng.random() < 0.5
            if first_base:
                b, _ = cpu_time(cases[BASELINE], env)
            t, imported = cpu_time(cases[name], env)
            if not first_base:
                b, _ = cpu_time(cases[BASELINE], env)
            times[name].append(t)
            pairs[name].append(b)
            times[BASELINE].append(b)
            torch_seen[name] = torch_seen.get(name, False) or imported
    torch_seen[BASELINE] = True
    print(f"CPU time (user + sys) of a fresh interpreter; {args.rounds} rounds, each case paired with a "
          f"baseline run; ratio: case / its paired `{BASELINE}`, median [~95% CI]")
    print("| case | CPU s | ratio to `import torch, pyro` | difference (ms) | imports torch |")
    print("|---|---:|---:|---:|:---:|")
    print(f"| `{BASELINE}` | {statistics.median(times[BASELINE]):.3f} | 1 | 0 | yes |")
    for name in cases:
        if name == BASELINE:
            continue
        m = statistics.median(times[name])
        r, lo, hi = median_ci([t / b for t, b in zip(times[name], pairs[name])])
        d, dlo, dhi = median_ci([(t - b) * 1e3 for t, b in zip(times[name], pairs[name])])
        print(f"| `{name}` | {m:.3f} | {r:.3f} [{lo:.3f}, {hi:.3f}] | {d:+.0f} [{dlo:+.0f}, {dhi:+.0f}] | "
              f"{'yes' if torch_seen[name] else 'no'} |")
    timed = [k for k in SAME_PROCESS if k in cases]
    if args.same_process <= 0 or not timed:
        return
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in timed}
    for _ in range(args.same_process):
        rng.shuffle(timed)
        for name in timed:
            runs[name].append(same_process(SAME_PROCESS[name], env))
    print(f"\nSame process: the statement's CPU time after `{BASELINE}` in one child ({args.same_process} "
          "children per case); ratio: (import + statement) / import of that child, median [~95% CI]")
    print(f"| case | `{BASELINE}` s | added (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name in SAME_PROCESS:
        if name not in runs:
            continue
        base = statistics.median(b for b, _ in runs[name])
        d, dlo, dhi = median_ci([a * 1e3 for _, a in runs[name]])
        r, lo, hi = median_ci([(b + a) / b for b, a in runs[name]])
        print(f"| `{name}` | {base:.3f} | {d:.0f} [{dlo:.0f}, {dhi:.0f}] | {r:.3f} [{lo:.3f}, {hi:.3f}] |")

if __name__ == "__main__":
    main()
