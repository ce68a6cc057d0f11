"""Re-run every speed benchmark of the project, one after the other, and keep their outputs.

The performance page (``docs/results/performance.md``) is written from these outputs: each
script prints its own Markdown tables of ratios (relaxit against a hand-written torch formula
of the same method, and against the peers), measured interleaved within its own run.  The
scripts run one at a time so that they do not load the machine for each other.

    python benchmarks/speed_table.py                        # everything, into benchmarks/results/speed/
    python benchmarks/speed_table.py --quick                # smoke run of every script
    python benchmarks/speed_table.py --only cv_speed topk_speed
    python benchmarks/speed_table.py --peers /tmp/relaxit-peers/bin/python   # add the peers' rows

The peers (storchastic 0.3.7, relaxit 1.2.1) live in their own venv, made by
``benchmarks/peers/setup.sh``; without ``--peers`` their script is skipped and says so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# output name -> (script, arguments of the full run, arguments of the smoke run)
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "startup": ("startup", [], ["--quick"]),
    "core_overhead": ("core_overhead", [], ["--quick"]),
    "hardening_overhead": ("hardening_overhead", [], ["--rounds", "3", "--min-time", "0.02"]),
    "binary_rsample": ("binary_rsample", [], ["--quick"]),
    "binary_rsample_validate": ("binary_rsample", ["--validate"], ["--quick", "--validate"]),
    "simplex_rsample": ("simplex_rsample", [], ["--quick"]),
    "st_speed": ("st_speed", [], ["--quick"]),
    "topk_speed": ("topk_speed", ["--hand"], ["--quick", "--hand"]),
    "topk_loop": ("topk_speed", [], ["--quick"]),
    "topk_loop_kept_heap": ("topk_speed", [], ["--quick"]),  # with KEPT_HEAP in the environment
    "subset_speed": ("subset_speed", [], ["--quick"]),
    "cv_speed": ("cv_speed", [], ["--quick"]),
    "newest_cost": ("newest_cost", ["--ks", "2", "3", "--rounds", "9"], ["--quick"]),
    "pyro_elbo": ("pyro_elbo", [], ["--quick"]),
}


KEPT_HEAP = {"MALLOC_TRIM_THRESHOLD_": "1073741824", "MALLOC_MMAP_THRESHOLD_": "1073741824",
             "MALLOC_TOP_PAD_": "67108864"}
"""glibc told to keep its heap (no trimming, no fresh mappings for large blocks): the loop of k
softmaxes then pays no page faults for its fresh tensors (``topk_loop_kept_heap``)."""
ENV = {"topk_loop_kept_heap": KEPT_HEAP}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of every script (seconds each)")
    ap.add_argument("--only", nargs="*", default=[], help=f"scripts to run (default: all): {', '.join(SCRIPTS)}, peer_speed")
    ap.add_argument("--peers", default=None, help="python of the peers' venv (benchmarks/peers/setup.sh)")
    ap.add_argument("--out", default=str(HERE / "results" / "speed"), help="folder for the outputs")
    args = ap.parse_args(argv)
    names = list(SCRIPTS) + ["peer_speed"]
    unknown = [n for n in args.only if n not in names]
    if unknown:
        ap.error(f"unknown script(s) {unknown}; choose from {names}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
              f"python {platform.python_version()}")
    failed = []
    for name in names:
        if args.only and name not in args.only:
            continue
        if name == "peer_speed":
            if not args.peers:
                print("peer_speed: skipped (no --peers venv; see benchmarks/peers/setup.sh)", flush=True)
                continue
            cmd = [args.peers, str(HERE / "peers" / "peer_speed.py")] + (["--quick"] if args.quick else [])
        else:
            script, full, quick = SCRIPTS[name]
            cmd = [sys.executable, str(HERE / f"{script}.py")] + (quick if args.quick else full)
        print(f"{name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        env = dict(os.environ, **ENV.get(name, {}))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        took = time.monotonic() - t0
        shown = " ".join(f"{k}={v}" for k, v in ENV.get(name, {}).items())
        text = (f"<!-- {header}; {shown + ' ' if shown else ''}"
                f"{' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}; {took:.0f} s -->\n\n")
        text += proc.stdout
        if proc.returncode:
            failed.append(name)
            text += f"\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-4000:]}\n```\n"
        (out / f"{name}.md").write_text(text)
        print(f"  {'FAILED' if proc.returncode else 'done'} in {took:.0f} s -> {out / (name + '.md')}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
