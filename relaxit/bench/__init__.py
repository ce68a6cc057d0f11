"""``relaxit bench``: train and compare every registered estimator on built-in tasks.

One command answers "which estimator should I use for my discrete latent, and what does it
cost?"::

    relaxit bench                      # default suite (measured run time: the README)
    relaxit bench --tasks vae-categorical --estimators gumbel_softmax,reinforce --steps 2000
    relaxit bench --preset paper --workers 8          # larger models, more steps, 3 seeds
    relaxit bench --preset shi2022 --data ~/data/binarized_mnist.npz
    relaxit bench --config my_run.yaml                # the whole run from a file
    relaxit bench --config bench-out/config.json  # reproduce a run exactly

Tasks (``relaxit.bench.tasks``): ``toy`` and ``toy-categorical`` (the REBAR/RELAX toy
``E[(z - t)^2]``: bias and variance against the exact gradient by enumeration, and training
curves), ``vae-bernoulli`` and ``vae-categorical`` (VAEs on scikit-learn's bundled 8x8
digits, binarised, fixed split; test -ELBO, IWAE bound, encoder-gradient variance, time per
step) and ``subset`` (select k of n features; estimators of the ``subset`` family).

Estimators are chosen from the registry by family (``relaxit.bench.selection``) and
built with :func:`relaxit.build`: a third-party plugin is benchmarked by being installed.

Outputs (``--output``, default ``bench-out/``): ``results.json`` (versions, seeds,
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
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaxit.bench.config import BenchConfig, EstimatorEntry, SubsetTask, ToyTask, VAETask, load_config
from relaxit.bench.presets import PRESETS, preset

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


def plan(config: BenchConfig | Mapping[str, Any] | str | Path):
    """The resolved config, the runs and the notes of ``config`` (nothing is run)."""
    from relaxit.bench.selection import resolve

    return resolve(_as_config(config))


def run(
    config: BenchConfig | Mapping[str, Any] | str | Path,
    *,
    command: str | None = None,
    stream=None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the bench described by ``config`` and write its outputs.

    Returns a mapping with ``output`` (the directory), ``config`` (resolved, JSON-ready),
    ``results`` (one per run), ``summary`` (per-task tables), ``notes`` and ``wall_s``.
    """
    import relaxit
    from relaxit.bench.report import format_tables, write_outputs
    from relaxit.bench.runner import execute

    stream = stream or sys.stdout
    t0 = time.perf_counter()
    cfg0 = _as_config(config)
    _check_device(cfg0.device)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    the_plan = plan(cfg0)
    cfg = the_plan.config
    if not quiet:
        for note in the_plan.notes:
            print(f"note: {note}", file=stream)
    results = execute(
        the_plan.runs,
        workers=cfg.workers,
        backend=cfg.backend,
        ray_address=cfg.ray_address,
        progress=cfg.progress and not quiet,
    )
    wall = time.perf_counter() - t0
    used = sorted({r.estimator["name"] for r in the_plan.runs})
    estimators = {}
    for name in used:
        info = relaxit.describe(name).to_dict()
        info.pop("config_schema", None)
        estimators[name] = info
    cfg_json = cfg.model_dump(mode="json")
    out = Path(cfg.output)
    summary = write_outputs(
        out,
        config=cfg_json,
        results=results,
        notes=the_plan.notes,
        wall_s=wall,
        started=started,
        command=command or "relaxit.bench.run(...)",
        estimators=estimators,
    )
    if not quiet:
        print(format_tables(summary), file=stream)
        print(f"\n{len(results)} runs in {wall:.1f} s; report in {out / 'report.md'}", file=stream)
    return {"output": out, "config": cfg_json, "results": results, "summary": summary, "notes": the_plan.notes, "wall_s": wall}
