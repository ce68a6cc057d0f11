"""``relaxit bench``: train and compare every registered estimator on built-in tasks.

One command answers "which estimator should I use for my discrete latent, and what does it
cost?"::

    relaxit bench                      # default suite (measured run time: the README)
    relaxit bench --tasks vae-categorical --estimators gumbel_softmax,reinforce --steps 2000
    relaxit bench --preset paper --workers 8          # larger models, more steps, 3 seeds
    relaxit bench --preset shi2022 --data ~/data/binarized_mnist.npz
    relaxit bench --config my_run.yaml                # the whole run from a file
    relaxit bench --config bench-out/config.json  # reproduce a run exactly

The report opens with the gradient card (task ``gradient-card``, :mod:`relaxit.bench.card`):
every estimator's gradient against the exact gradient of the same objective, at an equal
number of objective evaluations, at three checkpoints of a shared training run, with
standard errors over seeds and paired significance tests.

Runs survive interruption: each finished run is appended to ``results.jsonl`` at once;
Ctrl-C keeps them, writes a partial report and exits 130; ``--resume`` runs what is missing;
``--report-only`` rebuilds the report; an output directory holding another run's results is
refused unless ``--overwrite``.

Training tasks (``relaxit.bench.tasks``): ``toy`` and ``toy-categorical`` (the REBAR/RELAX toy
``E[(z - t)^2]``: bias and variance against the exact gradient by enumeration, and training
curves), ``vae-bernoulli`` and ``vae-categorical`` (VAEs on scikit-learn's bundled 8x8
digits, binarised, fixed split; test -ELBO, IWAE bound, encoder-gradient variance, time per
step) and ``subset`` (select k of n features; estimators of the ``subset`` family).

Estimators are chosen from the registry by family (``relaxit.bench.selection``) and
built with :func:`relaxit.build`: a third-party plugin is benchmarked by being installed.

Outputs (``--output``, default ``bench-out/``): ``results.jsonl`` (one finished run a
line), ``results.json`` (versions, seeds,
config, notes, per-run metrics, curves and timings), ``results.csv``, ``report.md``
(tables and plots), PNG plots, and ``config.json``, the resolved config that reproduces the
run (same seeds, same numbers on the same software and device).

Scaling out.  Runs are independent.  ``--workers N`` runs them in a local process pool.
``--backend ray`` runs each as a Ray task (``pip install 'relaxit[ray]'``): without
``--ray-address`` a local Ray with ``--workers`` CPUs is started; on a cluster pass its
address (``--ray-address auto`` on a node of the cluster, or ``ray://head:10001``), e.g.::

    ray job submit --address http://head:8265 --runtime-env-json '{"pip": ["relaxit[bench]"]}' \\
        -- relaxit bench --preset paper --backend ray --ray-address auto

On Slurm, start a Ray cluster inside one allocation (``ray start --head`` on the first node,
``ray start --address $HEAD:6379`` on the others with ``srun``; see Ray's "Deploying on
Slurm" guide) and run the same command on the head node; or submit one job per config with
Hydra's submitit launcher, each job running ``relaxit bench --config <file>`` (the runs are
independent, so splitting a config by task or seed splits the work).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaxit.bench.config import BenchConfig, EstimatorEntry, SubsetTask, ToyTask, VAETask, load_config
from relaxit.bench.presets import PRESETS, preset
from relaxit.bench.store import BenchError

__all__ = [
    "BenchConfig",
    "EstimatorEntry",
    "ToyTask",
    "VAETask",
    "SubsetTask",
    "PRESETS",
    "preset",
    "load_config",
    "plan",
    "run",
    "BenchError",
]



def _as_config(config: BenchConfig | Mapping[str, Any] | str | Path) -> BenchConfig:
    if isinstance(config, BenchConfig):
        return config
    if isinstance(config, (str, Path)):
        config = load_config(config)
    return BenchConfig.model_validate(dict(config))


def _check_device(device: str) -> None:
    import torch

    dev = torch.device(device)  # raises on a malformed name
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")


def _check_inputs(cfg: BenchConfig) -> None:
    """What a run would otherwise find missing only after work has started."""
    import importlib.util

    if cfg.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise BenchError("the Ray backend needs Ray: pip install 'relaxit[ray]'")
    for task in cfg.tasks:
        data = getattr(task, "data", "digits")
        if data != "digits" and not Path(data).expanduser().exists():
            raise BenchError(f"{task.id}: no data at {data!r}")


def plan(config: BenchConfig | Mapping[str, Any] | str | Path):
    """The resolved config, the runs and the notes of ``config`` (nothing is run)."""
    from relaxit.bench.selection import resolve

    return resolve(_as_config(config))


_EXECUTION_FIELDS = ("output", "workers", "backend", "ray_address", "progress", "preset")


def _same_runs(saved: Mapping[str, Any], resolved: Mapping[str, Any]) -> bool:
    strip = lambda c: {k: v for k, v in c.items() if k not in _EXECUTION_FIELDS}  # noqa: E731
    return strip(saved) == strip(resolved)


def run(
    config: BenchConfig | Mapping[str, Any] | str | Path,
    *,
    command: str | None = None,
    stream=None,
    quiet: bool = False,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the bench described by ``config`` and write its outputs.

    The output directory is checked before any work: it must be writable and hold no other
    run's results (``overwrite=True`` replaces them; ``resume=True`` runs only the runs of
    that directory's config that have not finished).  Each finished run is appended to
    ``results.jsonl`` at once; the report is rebuilt from that file
    (:func:`relaxit.bench.report.rebuild`).  On ``KeyboardInterrupt`` the finished runs
    are kept, a report marked partial is written, and the result has ``interrupted=True``.

    Returns a mapping with ``output`` (the directory), ``config`` (resolved, JSON-ready),
    ``results`` (one per finished run), ``summary`` (per-task tables), ``notes``,
    ``wall_s``, ``interrupted`` and ``missing`` (planned runs without a result).

    Raises:
        relaxit.bench.store.BenchError: a user error (occupied or unwritable output, nothing
            to resume, a resumed config that differs, no runs selected).
    """
    from relaxit.bench import store
    from relaxit.bench.report import format_tables, rebuild
    from relaxit.bench.runner import execute

    stream = stream or sys.stdout
    t0 = time.perf_counter()
    cfg0 = _as_config(config)
    _check_device(cfg0.device)
    _check_inputs(cfg0)
    out = Path(cfg0.output)
    store.prepare(out, resume=resume, overwrite=overwrite, clear=False)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    the_plan = plan(cfg0)
    cfg = the_plan.config
    cfg_json = cfg.model_dump(mode="json")
    if not the_plan.runs:
        raise store.BenchError("no runs selected" + (": " + "; ".join(the_plan.notes[-3:]) if the_plan.notes else ""))
    if not quiet:
        for note in the_plan.notes:
            print(f"note: {note}", file=stream)
    todo = the_plan.runs
    if overwrite:
        store.clear(out)
    if resume:
        saved = json.loads((out / "config.json").read_text())
        if not _same_runs(saved, cfg_json):
            raise store.BenchError(
                f"--resume: the config differs from the one in {str(out / 'config.json')!r}; resume with "
                "`--config` of that file (or no run options), or start a new run with --overwrite / another --output"
            )
        done = {r["run_id"] for r in store.read_results(out) if not r.get("error")}
        todo = [r for r in the_plan.runs if r.run_id not in done]
        meta = store.read_meta(out)
        if not quiet:
            print(f"resume: {len(done)} runs finished earlier, {len(todo)} to run", file=stream)
    else:
        (out / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
        meta = {"command": command or "relaxit.bench.run(...)", "started": started, "sessions": []}
    meta.update(planned=[r.run_id for r in the_plan.runs], notes=the_plan.notes)
    meta.setdefault("sessions", []).append({"started": started, "command": command or "relaxit.bench.run(...)"})
    store.write_meta(out, meta)
    interrupted = False
    try:
        execute(
            todo,
            workers=cfg.workers,
            backend=cfg.backend,
            ray_address=cfg.ray_address,
            progress=cfg.progress and not quiet,
            on_result=lambda r: store.append_result(out, r),
        )
    except KeyboardInterrupt:
        interrupted = True
        if not quiet:
            print("\ninterrupted: keeping the finished runs; writing a partial report", file=stream)
    meta["sessions"][-1]["wall_s"] = time.perf_counter() - t0
    meta["sessions"][-1]["stopped_at"] = time.time()
    meta["sessions"][-1]["interrupted"] = interrupted
    store.write_meta(out, meta)
    report = rebuild(out)
    if not quiet:
        print(format_tables(report["summary"]), file=stream)
        state = f"PARTIAL: {len(report['missing'])} of {len(the_plan.runs)} runs missing; " if report["missing"] else ""
        print(f"\n{state}{len(report['results'])} runs; report in {out / 'report.md'}", file=stream)
    return {
        "output": out,
        "config": cfg_json,
        "results": report["results"],
        "summary": report["summary"],
        "notes": the_plan.notes,
        "wall_s": time.perf_counter() - t0,
        "interrupted": interrupted,
        "missing": report["missing"],
    }
