"""Choosing the estimators of each task from the registry, and expanding the run grid.

The bench knows no method by its class or its name: a task trains every registered
estimator whose ``families`` include the task's family (or the estimators the config
lists), reached only through :func:`relaxit.available`, :func:`relaxit.validate` and
:func:`relaxit.build`.  Before a run is scheduled, each candidate is built and probed with
one small ``estimate()`` call shaped like the task's; one that cannot serve the task
(other tensor arguments, a larger minimum ``num_samples``, ...) is skipped with a note.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from typing import Any

from relaxit.bench.config import BenchConfig, EstimatorEntry

__all__ = ["Run", "Plan", "resolve", "estimator_label"]

_TASK_FILLED_FIELDS = ("family", "k")


@dataclass
class Run:
    """One training run: a task, an estimator config, a number of samples and a seed."""

    run_id: str
    task_id: str
    task: dict[str, Any]
    estimator: dict[str, Any]
    label: str
    num_samples: int
    seed: int
    device: str
    threads: int
    reduce: str = "mean"
    steps: int = 0  # progress units (training steps); 0: the task's "steps"

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = int(self.task["steps"])

    def cost(self) -> float:
        """A rough relative cost, to start the longest runs first."""
        steps = self.steps
        if self.task["name"] == "gradient-card":
            return steps * (3.0 if self.task["model"].startswith("vae") else 1.0)
        if self.task["name"].startswith("vae"):
            width = max([self.task["latents"] * 4, *self.task["encoder"], *self.task["decoder"]])
            return steps * self.num_samples * (1 + width / 128)
        return steps * 0.2


@dataclass
class Plan:
    """The resolved config (explicit estimators), the runs, and notes on what was skipped."""

    config: BenchConfig
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


def estimator_label(spec: dict[str, Any], family: str, k: int | None = None) -> str:
    """``name(field=value, ...)`` listing the fields that differ from the defaults (the
    task's family and ``k`` are not shown)."""
    import relaxit

    base = {"name": spec["name"]}
    cls_fields = _config_fields(spec["name"])
    if "family" in cls_fields:
        base["family"] = family
    if "k" in cls_fields and k is not None:
        base["k"] = k
    default = relaxit.validate(base).model_dump(mode="json")
    diff = [f"{key}={_fmt(v)}" for key, v in spec.items() if key != "name" and default.get(key) != v]
    return spec["name"] + (f"({', '.join(diff)})" if diff else "")


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _config_fields(name: str) -> dict[str, Any]:
    import relaxit

    info = relaxit.describe(name)
    return dict(info.cls.Config.model_fields)


def _fill(spec: dict[str, Any], family: str, k: int | None) -> dict[str, Any]:
    fields = _config_fields(spec["name"])
    spec = dict(spec)
    if "family" in fields and "family" not in spec:
        spec["family"] = family
    if "k" in fields and "k" not in spec and k is not None:
        spec["k"] = k
    return spec


def _variants(name: str, family: str, k: int | None, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The default config and one-at-a-time changes of its boolean and choice fields
    (only those named in ``only`` when given)."""
    import relaxit
    from relaxit_core import ConfigError

    base = _fill({"name": name}, family, k)
    out = [base]
    for fname, finfo in _config_fields(name).items():
        if fname in ("name", *_TASK_FILLED_FIELDS) or (only is not None and fname not in only):
            continue
        ann = finfo.annotation
        if ann is bool:
            options = [not finfo.default]
        elif typing.get_origin(ann) is typing.Literal:
            options = [v for v in typing.get_args(ann) if v != finfo.default]
        else:
            continue
        for value in options:
            spec = {**base, fname: value}
            try:
                relaxit.validate(spec)
            except ConfigError:
                continue
            out.append(spec)
    return out


def _probe(spec: dict[str, Any], family: str, num_samples: int | None, task: Any) -> tuple[str | None, str]:
    """Build the estimator and make one small ``estimate()`` call like the task's
    (``num_samples=None``: the estimator's smallest; the gradient card compares estimators
    of the discrete objective's mean, so it needs ``reduce="mean"``).

    Returns ``(reason it does not fit or None, reduce to use)``.
    """
    import torch

    import relaxit

    try:
        est = relaxit.build(spec)
    except Exception as exc:  # noqa: BLE001 - any failure means "does not fit"
        return f"cannot be built: {exc}", "mean"
    if getattr(est, "family", family) != family:
        return f"serves family {est.family!r}, the task needs {family!r}", "mean"
    if getattr(task, "name", "") == "vae-pyro" and any(c == "rsample" for c in getattr(est, "capabilities", ())):
        return "a pathwise estimator: in Pyro its law goes in the guide, EstimatorELBO does not take it at a site", "mean"
    params = getattr(est, "params", ("logits",))
    if "logits" not in params:
        return f"takes {tuple(params)}; the task passes logits", "mean"
    reductions = getattr(est, "reductions", ("mean",))
    wants = "elbo" if getattr(task, "name", "") == "gradient-card" else getattr(task, "objective", "auto")
    if wants == "auto":
        reduce = "mean" if "mean" in reductions else "logmeanexp"
    else:
        reduce = "mean" if wants == "elbo" else "logmeanexp"
    if reduce not in reductions:
        return f"does not support reduce={reduce!r} (supports {tuple(reductions)})", reduce
    if reduce == "logmeanexp" and "hard" not in {str(c) for c in getattr(est, "capabilities", ())}:
        return "the IWAE objective needs exactly discrete (HARD) samples", reduce
    minimum = getattr(est, "min_num_samples", 1)
    if num_samples is None:
        num_samples = minimum
    if num_samples < minimum:
        return f"needs num_samples >= {minimum}, the task uses K = {num_samples}", reduce
    shape = {"bernoulli": (3, 4), "categorical": (3, 2, 5), "subset": (3, getattr(task, "features", 6))}[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        logits = torch.randn(shape, requires_grad=True)
        ndim = len(shape) + 1

        def objective(z: torch.Tensor) -> torch.Tensor:
            return (z - 0.3).pow(2).flatten(2).sum(-1) if z.dim() >= ndim else (z - 0.3).pow(2).sum(-1)

        try:
            out = est.estimate(objective, num_samples=num_samples, reduce=reduce, logits=logits)
            (grad,) = torch.autograd.grad(out.surrogate.sum(), [logits], allow_unused=True)
        except Exception as exc:  # noqa: BLE001
            return f"probe estimate() failed: {type(exc).__name__}: {exc}", reduce
    if tuple(out.samples.shape) != (num_samples, *shape):
        return f"samples have shape {tuple(out.samples.shape)}, expected {(num_samples, *shape)}", reduce
    if grad is None or not bool(torch.isfinite(grad).all()):
        return "no finite gradient reaches the logits", reduce
    return None, reduce


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def resolve(config: BenchConfig) -> Plan:
    """Choose each task's estimators, drop what does not fit (with notes) and expand the grid
    task x estimator x K x seed.  The returned config lists every estimator explicitly."""
    import relaxit
    notes: list[str] = []
    tasks = []
    runs: list[Run] = []
    registered = {i.name: i for i in relaxit.available()}
    for name in config.estimators or ():
        if name not in registered:
            relaxit.describe(name)  # raises UnknownEstimatorError naming close matches
    for task in config.tasks:
        family = task.family
        card = task.name == "gradient-card"
        k = getattr(task, "k", None)
        entries: list[tuple[dict[str, Any], str | None, bool, bool]] = []  # spec, label, optional, auto
        if task.estimators is None:
            for name, info in registered.items():
                if family not in info.families:
                    continue
                if config.estimators and name not in config.estimators:
                    continue
                specs = _variants(name, family, k, task.variant_fields) if task.variants else [_fill({"name": name}, family, k)]
                entries.extend((s, None, True, True) for s in specs)
        else:
            for entry in task.estimators:
                name = entry.estimator["name"]
                if config.estimators and name not in config.estimators:
                    continue
                if name not in registered:
                    if entry.optional:
                        notes.append(f"{task.id}: {entry.label or name} skipped: {name!r} is not registered")
                        continue
                    relaxit.describe(name)  # raises UnknownEstimatorError naming close matches
                entries.append((_fill(entry.estimator, family, k), entry.label, entry.optional, False))
        kept: list[EstimatorEntry] = []
        seen: set[str] = set()
        for spec, label, optional, auto in entries:
            full = relaxit.validate(spec).model_dump(mode="json")
            key = repr(sorted(full.items()))
            if key in seen:
                continue
            seen.add(key)
            label = label or estimator_label(full, family, k)
            fits_any = False
            for num_samples in task.num_samples:
                reason, reduce = _probe(full, family, None if card else num_samples, task)
                if reason is not None:
                    msg = f"{task.id}: {label} (K={num_samples}) skipped: {reason}"
                    if not (optional or auto):
                        raise ValueError(msg)
                    notes.append(msg)
                    continue
                fits_any = True
                for seed in task.seeds or config.seeds:
                    suffix = f"{'E' if card else 'K'}{num_samples}/s{seed}"
                    runs.append(
                        Run(
                            run_id=f"{task.id}/{_safe(label)}/{suffix}",
                            task_id=task.id,
                            task=task.model_dump(mode="json", exclude={"estimators"}),
                            estimator=full,
                            label=label,
                            num_samples=num_samples,
                            seed=seed,
                            device=config.device,
                            threads=config.threads,
                            reduce=reduce,
                            steps=task.steps,
                        )
                    )
            if fits_any:
                # an entry that was skipped at some K stays optional, so that the resolved
                # config reproduces the same runs (and notes) instead of failing there
                kept.append(EstimatorEntry(estimator=full, label=label, optional=optional or auto))
        if not kept:
            notes.append(f"{task.id}: no registered estimator fits the {family!r} family; task skipped")
        tasks.append(task.model_copy(update={"estimators": kept, "variants": False}))
    resolved = config.model_copy(update={"tasks": tasks})
    # Round-trip through validation so the resolved config is a plain, valid BenchConfig.
    resolved = BenchConfig.model_validate(resolved.model_dump(mode="json"))
    return Plan(config=resolved, runs=runs, notes=notes)

