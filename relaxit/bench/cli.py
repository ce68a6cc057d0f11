"""The ``relaxit bench`` subcommand (argument parsing only; imports nothing heavy)."""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "config_from_args"]

EPILOG = """\
tasks:
  toy, toy-categorical   REBAR/RELAX toy E[(z - t)^2]: bias/variance vs the exact gradient, curves
  vae-bernoulli          VAE, Bernoulli latents, binarised 8x8 digits (or --data MNIST)
  vae-categorical        VAE, categorical latents (8 x 8 categories by default)
  subset                 select k of n features (estimators of the 'subset' family)

presets: default (the suite run without arguments), paper (larger, 3 seeds),
  shi2022 (Shi et al. 2022, Table 1: 200 Bernoulli latents, K = 2, 3; RLOO, DisARM, ARMS,
  double CV, RELAX, RODEO when registered).

Estimators default to every registered one that fits the task's family, plus one-at-a-time
variants of their boolean/choice config fields (--no-variants to turn off). --config FILE
(YAML or JSON) gives the whole run; the output directory's config.json reproduces a run.
--data takes a .npz (arrays 'train', 'test') or a folder of binarized_mnist_{train,test}.amat.
Ray: --backend ray [--ray-address auto|ray://host:10001]; see `python -c "import relaxit.bench;
help(relaxit.bench)"` for clusters and Slurm.
"""


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from relaxit.bench.presets import PRESETS

    p = sub.add_parser(
        "bench",
        help="train and compare estimators on built-in tasks; write a report with plots",
        description="Train every registered estimator that fits each task and write results.json, "
        "results.csv, report.md and plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), help="a named suite (default: 'default')")
    src.add_argument("--config", type=Path, metavar="FILE", help="YAML/JSON file with the whole run (or a results.json)")
    p.add_argument("--tasks", type=_name_list, metavar="T1,T2", help="only these tasks (names or labels)")
    p.add_argument("--estimators", type=_name_list, metavar="N1,N2", help="only these registry names")
    p.add_argument("--steps", type=int, metavar="N", help="training steps of every task")
    p.add_argument("--num-samples", "-K", type=_int_list, metavar="K1,K2", help="samples per estimate() call")
    p.add_argument("--seeds", type=_int_list, metavar="S1,S2", help="seeds (one run each)")
    p.add_argument("--output", "-o", metavar="DIR", help="output directory (default: bench-out)")
    p.add_argument("--workers", "-j", type=int, metavar="N", help="parallel processes / Ray tasks (default 1)")
    p.add_argument("--backend", choices=("local", "ray"), help="local process pool (default) or Ray")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--device", metavar="DEV", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--data", metavar="PATH", help="binarised MNIST for the VAE tasks instead of the 8x8 digits")
    p.add_argument("--no-variants", action="store_true", help="default configs only (no variants)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the runs; run nothing")
    p.set_defaults(func=_run)
    return p


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The bench config mapping that the command line describes."""
    from relaxit.bench.config import load_config
    from relaxit.bench.presets import preset

    data = load_config(args.config) if args.config else preset(args.preset or "default")
    data = copy.deepcopy(data)
    if args.tasks:
        by_id = {t.get("label") or t["name"]: t for t in data["tasks"]}
        defaults = {t["name"]: t for t in preset("default")["tasks"]}
        tasks = []
        for name in args.tasks:
            if name in by_id:
                tasks.append(by_id[name])
            elif name in defaults:
                tasks.append(defaults[name])
            else:
                known = sorted({*by_id, *defaults})
                raise SystemExit(f"relaxit bench: error: unknown task {name!r}; known: {', '.join(known)}")
        data["tasks"] = tasks
    for task in data["tasks"]:
        if args.steps is not None:
            task["steps"] = args.steps
        if args.num_samples:
            task["num_samples"] = args.num_samples
        if args.data and task["name"].startswith("vae"):
            task["data"] = str(Path(args.data).expanduser())
        if args.no_variants:
            task["variants"] = False
    for key in ("estimators", "seeds", "output", "workers", "backend", "ray_address", "device"):
        value = getattr(args, key)
        if value:
            data[key] = value
    if args.no_progress:
        data["progress"] = False
    return data


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    import relaxit.bench as bench
    from relaxit.bench.config import BenchConfig

    try:
        cfg = BenchConfig.model_validate(config_from_args(args))
    except ValidationError as exc:
        print(f"relaxit bench: invalid config:\n{exc}", file=sys.stderr)
        return 2
    try:
        bench._check_device(cfg.device)
    except (ValueError, RuntimeError) as exc:
        print(f"relaxit bench: error: {exc}", file=sys.stderr)
        return 2
    command = "relaxit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "relaxit bench"
    if args.dry_run:
        the_plan = bench.plan(cfg)
        for note in the_plan.notes:
            print(f"note: {note}")
        for r in the_plan.runs:
            print(f"{r.run_id}\t{json.dumps(r.estimator, sort_keys=True)}\treduce={r.reduce}")
        print(json.dumps(the_plan.config.model_dump(mode="json"), indent=2))
        return 0
    out = bench.run(cfg, command=command)
    return 1 if any(r.get("error") for r in out["results"]) else 0
