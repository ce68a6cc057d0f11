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
  card-toy, card-toy-categorical, card-poly, card-vae-bernoulli, card-vae-categorical
                         the gradient card (task 'gradient-card'): every estimator's gradient vs
                         the exact one at equal objective evaluations (the report's first table)
  toy, toy-categorical   REBAR/RELAX toy E[(z - t)^2]: bias/variance vs the exact gradient, curves
  vae-bernoulli          VAE, Bernoulli latents, binarised 8x8 digits (or --data MNIST)
  vae-categorical        VAE, categorical latents (8 x 8 categories by default)
  subset                 select k of n features (estimators of the 'subset' family)

presets: default (the suite run without arguments), paper (larger, 3 seeds),
  card (the longer gradient card behind the docs' "Which estimator for my problem?"),
  shi2022 (Shi et al. 2022, Table 1: 200 Bernoulli latents, K = 2, 3; RLOO, DisARM, ARMS,
  double CV, RELAX, RODEO when registered).

--steps and -K apply to the training tasks; the card runs each estimator at the budget
of objective evaluations of its task (--seeds replaces the card's own three seeds too).
Estimators default to every registered one that fits the task's family, plus one-at-a-time
variants of their boolean/choice config fields (--no-variants to turn off). --config FILE
(YAML or JSON) gives the whole run; the output directory's config.json reproduces a run.
--data takes a .npz (arrays 'train', 'test') or a folder of binarized_mnist_{train,test}.amat.
Interrupted runs: each finished run is appended to OUTPUT/results.jsonl at once; Ctrl-C
keeps them, writes a partial report and exits 130; --resume runs only what is missing;
--report-only rebuilds the report from results.jsonl. An output directory holding another
run's results is refused unless --overwrite.
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
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="finish the run saved in the output directory (its config.json): only missing runs")
    mode.add_argument("--overwrite", action="store_true", help="replace another run's results in the output directory")
    mode.add_argument("--report-only", action="store_true",
                      help="rebuild report.md, results.json/csv and plots from the output directory's results.jsonl")
    p.set_defaults(func=_run)
    return p


def _task_id(task: dict[str, Any]) -> str:
    if task.get("label"):
        return task["label"]
    return f"card-{task['model']}" if task["name"] == "gradient-card" else task["name"]


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The bench config mapping that the command line describes."""
    from relaxit.bench.config import load_config
    from relaxit.bench.presets import preset

    data = load_config(args.config) if args.config else preset(args.preset or "default")
    data = copy.deepcopy(data)
    if args.tasks:
        by_id = {_task_id(t): t for t in data["tasks"]}
        defaults = {_task_id(t): t for t in preset("default")["tasks"]}
        tasks = []
        for name in args.tasks:
            if name in by_id:
                tasks.append(by_id[name])
            elif name in defaults:
                tasks.append(defaults[name])
            else:
                import difflib

                from relaxit.bench.store import BenchError

                known = sorted({*by_id, *defaults})
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise BenchError(f"unknown task {name!r}.{hint} Known: {', '.join(known)}")
        data["tasks"] = tasks
    for task in data["tasks"]:
        card = task["name"] == "gradient-card"
        if args.steps is not None and not card:
            task["steps"] = args.steps
        if args.num_samples is not None and not card:
            task["num_samples"] = args.num_samples
        if args.data and task["name"].startswith("vae"):
            task["data"] = str(Path(args.data).expanduser())
        if args.no_variants:
            task["variants"] = False
    if args.seeds is not None:  # per-task seeds (the card's) give way to explicit ones
        for task in data["tasks"]:
            task.pop("seeds", None)
    for key in ("estimators", "seeds", "output", "workers", "backend", "ray_address", "device"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.no_progress:
        data["progress"] = False
    return data


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        more = f" (and {len(parts) - 2} more)" if len(parts) > 2 else ""
        return "invalid config: " + "; ".join(parts[:2]) + more
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return " ".join(text.split())


def _run(args: argparse.Namespace) -> int:
    """``relaxit bench``: exit 0 (done), 1 (some runs failed), 2 (a user error, one line on
    stderr, checked before any work), 130 (interrupted: finished runs kept, partial report)."""
    from relaxit.bench.runner import unblock_sigint

    unblock_sigint()  # Ctrl-C must reach this command, even if it started with SIGINT blocked
    try:
        return _bench(args)
    except KeyboardInterrupt:
        print("relaxit bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors are one line, never a traceback
        from pydantic import ValidationError

        from relaxit.bench.store import BenchError
        from relaxit_core.errors import RelaxitError

        user = (BenchError, RelaxitError, ValidationError, ValueError, OSError, LookupError)
        if isinstance(exc, user) or type(exc).__module__.startswith("yaml"):
            print(f"relaxit bench: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        raise


def _bench(args: argparse.Namespace) -> int:
    import relaxit.bench as bench
    from relaxit.bench.config import BenchConfig
    from relaxit.bench.report import format_tables, rebuild
    from relaxit.bench.store import BenchError

    output = Path(args.output or "bench-out")
    if args.report_only:
        if not (output / "config.json").is_file():
            raise BenchError(f"--report-only: {str(output)!r} holds no bench run (no config.json)")
        report = rebuild(output)
        print(format_tables(report["summary"]))
        state = f"PARTIAL: {len(report['missing'])} planned runs missing; " if report["missing"] else ""
        print(f"\n{state}{len(report['results'])} runs; report in {output / 'report.md'}")
        return 0
    if args.resume:
        defining = [o for o, v in (("--preset", args.preset), ("--tasks", args.tasks), ("--estimators", args.estimators),
                                   ("--steps", args.steps), ("--num-samples", args.num_samples), ("--seeds", args.seeds),
                                   ("--data", args.data), ("--no-variants", args.no_variants or None)) if v is not None]
        if defining:
            raise BenchError(f"--resume continues the run saved in {str(output)!r}; it takes no run options ({', '.join(defining)})")
        if args.config is None:
            if not (output / "config.json").is_file():
                raise BenchError(f"nothing to resume in {str(output)!r}: it has no config.json of an earlier run")
            args.config = output / "config.json"
    cfg = BenchConfig.model_validate(config_from_args(args))
    bench._check_device(cfg.device)
    command = "relaxit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "relaxit bench"
    if args.dry_run:
        the_plan = bench.plan(cfg)
        for note in the_plan.notes:
            print(f"note: {note}")
        for r in the_plan.runs:
            print(f"{r.run_id}\t{json.dumps(r.estimator, sort_keys=True)}\treduce={r.reduce}")
        print(json.dumps(the_plan.config.model_dump(mode="json"), indent=2))
        return 0
    out = bench.run(cfg, command=command, resume=args.resume, overwrite=args.overwrite)
    if out["interrupted"]:
        return 130
    return 1 if any(r.get("error") for r in out["results"]) else 0
