"""The run config of ``relaxit bench``: tasks, estimators, seeds and execution settings.

A whole run is one :class:`BenchConfig`, loadable from YAML or JSON (``--config FILE``).
After resolution (:func:`relaxit.bench.selection.resolve`) every task lists its estimators
explicitly, with every config field; that resolved config is written as ``config.json``
next to the results, and feeding it back with ``--config`` reproduces the run exactly
(same seeds, same numbers on the same software and device).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BenchConfig",
    "EstimatorEntry",
    "ToyTask",
    "VAETask",
    "SubsetTask",
    "PyroVAETask",
    "L2XTask",
    "GradientCardTask",
    "TaskConfig",
    "TASK_FAMILIES",
    "TASKS",
    "TaskInfo",
    "load_config",
]



class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EstimatorEntry(_Frozen):
    """One estimator of a task: an estimator config mapping (validated by the registry)
    with an optional display label.

    In a config file an entry is either the estimator mapping itself
    (``{name: reinforce, baseline: leave_one_out}``) or
    ``{estimator: {...}, label: rloo, optional: true}``.  ``family`` (and ``k`` for the
    subset task) are filled from the task when the estimator's config has such a field and
    the entry leaves it out.
    """

    estimator: dict[str, Any] = Field(description="Estimator config mapping with a 'name' key.")
    label: str | None = Field(None, description="Name shown in tables and plots (default: derived from the config).")
    optional: bool = Field(
        False, description="Skip with a note (instead of failing) when the estimator is not registered or does not fit."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_mapping(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"estimator": {"name": data}}
        if isinstance(data, Mapping) and "estimator" not in data and "name" in data:
            return {"estimator": dict(data)}
        return data

    @model_validator(mode="after")
    def _has_name(self) -> "EstimatorEntry":
        if not isinstance(self.estimator.get("name"), str):
            raise ValueError("an estimator entry needs a 'name'")
        return self


class _TaskBase(_Frozen):
    label: str | None = Field(None, description="Task name in tables, file names and run ids (default: its name).")
    steps: int = Field(ge=1, description="Training steps per run.")
    num_samples: list[Annotated[int, Field(ge=1)]] = Field(
        [2], min_length=1, description="Samples K per estimate() call; a list makes one run per K."
    )
    lr: float = Field(gt=0, description="Adam learning rate.")
    checkpoints: int = Field(
        10, ge=1, description="Evaluations (metrics and gradient variance) spread evenly over training."
    )
    estimators: list[EstimatorEntry] | None = Field(
        None, description="Estimators to train; null = every registered estimator that fits the task."
    )
    variants: bool = Field(
        True,
        description=(
            "With automatic selection, also run one-at-a-time variants of each estimator's "
            "boolean and choice config fields (e.g. hard=true, baseline=leave_one_out)."
        ),
    )
    variant_fields: list[str] | None = Field(
        None,
        description="Config fields that variants may change (null = every boolean and choice field).",
    )

    @model_validator(mode="before")
    @classmethod
    def _scalar_k(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("num_samples"), int):
            data = {**data, "num_samples": [data["num_samples"]]}
        return data

    seeds: list[int] | None = Field(
        None, min_length=1, description="Seeds of this task's runs (default: the run's 'seeds')."
    )

    @property
    def family(self) -> str:
        return TASKS[self.name].family  # type: ignore[attr-defined]

    @property
    def id(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]


class ToyTask(_TaskBase):
    """The REBAR/RELAX toy: minimise ``E_q[(z - t)^2]`` (Tucker et al. 2017, Sec. 6.1;
    Grathwohl et al. 2018, Sec. 6.1 and Fig. 1) with ``q`` independent Bernoulli over
    ``dim`` variables (``toy``) or one categorical over ``categories`` values
    ``c_j = j / (categories - 1)``, ``f = (c·z - t)^2`` (``toy-categorical``)."""

    name: Literal["toy", "toy-categorical"]
    steps: int = Field(500, ge=1, description="Training steps per run.")
    lr: float = Field(0.01, gt=0, description="Adam learning rate.")
    target: float = Field(0.45, description="The target t (0.45 in REBAR's Sec. 6.1, 0.499 in RELAX's Fig. 1).")
    dim: int = Field(1, ge=1, le=12, description="Number of Bernoulli variables (toy).")
    categories: int = Field(4, ge=2, le=64, description="Number of categories (toy-categorical).")
    bias_draws: int = Field(
        20000, ge=2, description="Independent gradient estimates for bias and variance at the initial logits (0)."
    )
    variance_draws: int = Field(256, ge=2, description="Gradient estimates per checkpoint for the variance curve.")


class VAETask(_TaskBase):
    """A VAE with discrete latents: Bernoulli (``vae-bernoulli``) or ``latents`` one-hot
    categorical variables of ``categories`` classes (``vae-categorical``), on binarised
    digits (scikit-learn's bundled 8x8 set; fixed split) or a local binarised MNIST."""

    name: Literal["vae-bernoulli", "vae-categorical"]
    steps: int = Field(400, ge=1, description="Training steps per run.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    data: str = Field("digits", description="'digits' (embedded) or the path of a binarised MNIST file/folder.")
    latents: int = Field(16, ge=1, description="Number of latent variables.")
    categories: int = Field(8, ge=2, description="Categories per latent variable (vae-categorical).")
    encoder: list[int] = Field([128], description="Hidden layer widths of the encoder MLP.")
    decoder: list[int] = Field([128], description="Hidden layer widths of the decoder MLP.")
    activation: Literal["relu", "leaky_relu", "tanh"] = Field("leaky_relu", description="Hidden activation.")
    batch_size: int = Field(100, ge=1, description="Minibatch size.")
    objective: Literal["auto", "elbo", "iwae"] = Field(
        "auto",
        description=(
            "Training objective: 'elbo' (E_q[-log p(x|z)] through estimate() plus the analytic KL), "
            "'iwae' (the K-sample bound through estimate(reduce='logmeanexp')), or 'auto' "
            "(elbo unless the estimator only supports logmeanexp)."
        ),
    )
    eval_samples: int = Field(64, ge=1, description="Samples per test example for the test -ELBO and the IWAE bound.")
    test_size: int | None = Field(None, ge=1, description="Evaluate on the first N test examples (all when null).")
    variance_draws: int = Field(16, ge=2, description="Gradient estimates per checkpoint for the encoder-gradient variance.")


class PyroVAETask(_TaskBase):
    """The Bernoulli VAE of ``vae-bernoulli`` (same fields, same defaults) written as a Pyro
    model and guide and trained through :class:`relaxit.pyro.EstimatorELBO` with the run's
    estimator at the latent site and ``num_particles = K`` (``vae-pyro``).  Only estimators
    that EstimatorELBO takes at a guide site fit (not pathwise ones)."""

    name: Literal["vae-pyro"]
    steps: int = Field(400, ge=1, description="Training steps per run.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    data: str = Field("digits", description="'digits' (embedded) or the path of a binarised MNIST file/folder.")
    latents: int = Field(16, ge=1, description="Number of Bernoulli latent variables.")
    encoder: list[int] = Field([128], description="Hidden layer widths of the encoder MLP.")
    decoder: list[int] = Field([128], description="Hidden layer widths of the decoder MLP.")
    activation: Literal["relu", "leaky_relu", "tanh"] = Field("leaky_relu", description="Hidden activation.")
    batch_size: int = Field(100, ge=1, description="Minibatch size.")
    objective: Literal["elbo", "iwae"] = Field(
        "elbo", description="EstimatorELBO's bound: 'elbo' or 'iwae' (the K-particle importance-weighted bound)."
    )
    eval_samples: int = Field(64, ge=1, description="Samples per test example for the test -ELBO and the IWAE bound.")
    test_size: int | None = Field(None, ge=1, description="Evaluate on the first N test examples (all when null).")
    variance_draws: int = Field(16, ge=2, description="Gradient estimates per checkpoint for the encoder-gradient variance.")


class SubsetTask(_TaskBase):
    """Learning to select ``k`` of ``features`` features for a linear regression on
    generated data (only ``k`` features are informative), with a k-hot latent mask."""

    name: Literal["subset"]
    steps: int = Field(400, ge=1, description="Training steps per run.")
    lr: float = Field(0.05, gt=0, description="Adam learning rate.")
    features: int = Field(20, ge=2, description="Number of features n.")
    k: int = Field(4, ge=1, description="Number of features to select (and of informative features).")
    train_size: int = Field(512, ge=8, description="Training examples.")
    noise: float = Field(0.1, ge=0, description="Noise standard deviation of the response.")
    variance_draws: int = Field(64, ge=2, description="Gradient estimates per checkpoint for the variance curve.")


class L2XTask(_TaskBase):
    """Learning to explain (Chen et al. 2018) on the bundled 8x8 digits (``l2x-digits``):
    select ``k`` of the 64 pixels (a k-hot latent from the explainer's logits) that let a
    small classifier predict the digit; metric: test accuracy with the hard top-k
    selection of the explainer's logits."""

    name: Literal["l2x-digits"]
    steps: int = Field(600, ge=1, description="Training steps per run.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate (explainer, predictor and the estimator's own parameters).")
    num_samples: list[Annotated[int, Field(ge=1)]] = Field(
        [4], min_length=1, description="Samples K per estimate() call; a list makes one run per K."
    )
    k: int = Field(8, ge=1, le=63, description="Pixels selected per image.")
    hidden: int = Field(64, ge=1, description="Hidden width of the explainer (64-h-64) and predictor (64-h-10) MLPs.")
    batch_size: int = Field(64, ge=1, description="Minibatch size.")
    variance_draws: int = Field(16, ge=2, description="Gradient estimates per checkpoint for the explainer-gradient variance.")

    @property
    def features(self) -> int:
        """The number of pixels the subset is drawn from."""
        return 64


#: Models of the gradient card and the family of their latents.
CARD_MODELS: dict[str, str] = {
    "toy": "bernoulli",
    "toy-categorical": "categorical",
    "poly": "bernoulli",
    "vae-bernoulli": "bernoulli",
    "vae-categorical": "categorical",
}


class GradientCardTask(_Frozen):
    """The report card: estimators' gradients against the exact gradient of the same
    objective, at equal objective evaluations, at checkpoints of one exact-gradient training
    run (see :mod:`relaxit.bench.card`).  One task per model; every estimator of the
    model's family is compared."""

    name: Literal["gradient-card"]
    model: Literal["toy", "toy-categorical", "poly", "vae-bernoulli", "vae-categorical"] = Field(
        description="toy: E[(z - t)^2], one Bernoulli latent (Tucker et al. 2017); toy-categorical: "
        "(c.z - t)^2 over `categories` values; poly: mean |z - 0.45|^p over 128 Bernoulli latents "
        "(Liu et al. 2023, ReinMax); vae-bernoulli / vae-categorical: a VAE on the 8x8 digits whose "
        "latent space is enumerated for the exact gradient w.r.t. the encoder logits."
    )
    label: str | None = Field(None, description="Task name in tables, file names and run ids (default: card-<model>).")
    budget: int = Field(
        12, ge=1, description="Objective evaluations per gradient estimate (each estimator's num_samples is "
        "the largest whose est.evaluations() fits; the smallest it allows when none does)."
    )
    draws: int = Field(512, ge=8, description="Independent gradient estimates per checkpoint (one batched estimate() call).")
    warmup: int = Field(
        50, ge=0, description="Steps that train an estimator's own state (control variates, baselines) "
        "on the frozen model at each checkpoint before it is frozen and drawn from."
    )
    warmup_lr: float = Field(1e-2, gt=0, description="Adam learning rate of the warm-up.")
    train_steps: int = Field(200, ge=2, description="Steps of the exact-gradient training run whose start, middle and end are the checkpoints.")
    train_lr: float = Field(1e-2, gt=0, description="Adam learning rate of the exact-gradient training run.")
    target: float = Field(0.45, description="t of the toys; the ReinMax polynomial's centre (0.45).")
    power: float = Field(2.0, gt=0, description="p of the polynomial toy.")
    dim: int = Field(128, ge=1, le=4096, description="Latents of the polynomial toy (128 in ReinMax).")
    categories: int = Field(
        description="Categories of toy-categorical (default 4); of each latent of vae-categorical (default 8).", ge=2, le=64
    )
    latents: int = Field(
        description="VAE latents (default 12 Bernoulli: 4096 codes; 4 categorical: 8^4 = 4096 codes).", ge=1, le=16
    )
    hidden: list[int] = Field(
        [64, 32], description="Encoder widths (decoder mirrored): ReinMax's 784-512-256 scaled to the 64 pixels."
    )
    batch: int = Field(16, ge=1, description="VAE: data points whose encoder logits are differentiated.")
    estimators: list[EstimatorEntry] | None = Field(
        None, description="Estimators to compare; null = every registered estimator of the model's family."
    )
    variants: bool = Field(True, description="Also one-at-a-time variants of boolean and choice config fields.")
    variant_fields: list[str] | None = Field(None, description="Config fields that variants may change (null = every boolean and choice field).")
    seeds: list[int] | None = Field(None, min_length=1, description="Seeds of this task's runs (default: the run's 'seeds').")

    @model_validator(mode="before")
    @classmethod
    def _model_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            cat = data.get("model") == "vae-categorical"
            data = {"latents": 4 if cat else 12, "categories": 8 if cat else 4, **data}
        return data

    @model_validator(mode="after")
    def _enumerable(self) -> "GradientCardTask":
        if self.model.startswith("vae"):
            codes = 2**self.latents if self.model == "vae-bernoulli" else self.categories**self.latents
            if codes > 65536:
                raise ValueError(f"the {self.model} card enumerates {codes} latent codes; at most 65536")
        return self

    @property
    def family(self) -> str:
        return CARD_MODELS[self.model]

    @property
    def id(self) -> str:
        return self.label or f"card-{self.model}"

    @property
    def steps(self) -> int:
        """Progress units of one run: per checkpoint, the warm-up steps and the draws."""
        return 3 * (self.warmup + 1)

    @property
    def num_samples(self) -> list[int]:
        return [self.budget]


class TaskInfo:
    """What the bench knows of a task name: its config class, the family of its latents
    (None: the config says), the function that runs one run (``module:function``) and the
    report section it belongs to (``kind``)."""

    __slots__ = ("config", "_family", "runner", "kind")

    def __init__(self, config: type, family: str | None, runner: str, kind: str):
        self.config, self._family, self.runner, self.kind = config, family, runner, kind

    @property
    def family(self) -> str | None:
        return self._family


#: Every bench task, one line each: name -> (config class, family, runner, report kind).
#: A new task adds its config class (with ``name: Literal[...]``), a runner
#: ``run(run: dict, progress: Callable[[int], None]) -> {"metrics", "curves", "train_s"}`` and
#: one line here.  Its report kind may be new: the report then shows its first four numeric
#: metrics (``relaxit.bench.report.COLUMNS`` / ``CURVE`` give a kind its own columns and plots).
TASKS: dict[str, TaskInfo] = {
    "gradient-card": TaskInfo(GradientCardTask, None, "relaxit.bench.card:run_card", "card"),
    "toy": TaskInfo(ToyTask, "bernoulli", "relaxit.bench.tasks:run_toy", "toy"),
    "toy-categorical": TaskInfo(ToyTask, "categorical", "relaxit.bench.tasks:run_toy", "toy"),
    "vae-bernoulli": TaskInfo(VAETask, "bernoulli", "relaxit.bench.tasks:run_vae", "vae"),
    "vae-categorical": TaskInfo(VAETask, "categorical", "relaxit.bench.tasks:run_vae", "vae"),
    "subset": TaskInfo(SubsetTask, "subset", "relaxit.bench.tasks:run_subset", "subset"),
    "vae-pyro": TaskInfo(PyroVAETask, "bernoulli", "relaxit.bench.tasks:run_vae_pyro", "vae"),
    "l2x-digits": TaskInfo(L2XTask, "subset", "relaxit.bench.tasks:run_l2x", "l2x"),
}

#: The discrete family each training task trains (kept for compatibility).
TASK_FAMILIES: dict[str, str] = {k: v.family for k, v in TASKS.items() if v.family}

TaskConfig = Annotated[
    Union[tuple(dict.fromkeys(info.config for info in TASKS.values()))],  # type: ignore[misc]
    Field(discriminator="name"),
]


class BenchConfig(_Frozen):
    """A whole bench run."""

    preset: str | None = Field(None, description="The preset this config came from (informational).")
    seeds: list[int] = Field([0], min_length=1, description="Seeds; one run per task x estimator x K x seed.")
    tasks: list[TaskConfig] = Field(description="The tasks to run.")
    estimators: list[str] | None = Field(
        None, description="Only estimators with these registry names (applied to automatic selection)."
    )
    output: str = Field("bench-out", description="Output directory.")
    workers: int = Field(1, ge=1, le=1024, description="Parallel worker processes (local backend) or concurrent Ray tasks.")
    backend: Literal["local", "ray"] = Field("local", description="Where runs execute: a local process pool, or Ray.")
    ray_address: str | None = Field(None, description="Ray cluster address ('auto', 'ray://host:10001'); local Ray when null.")
    device: str = Field("cpu", description="torch device of every run, e.g. 'cpu', 'cuda', 'cuda:1'.")
    threads: int = Field(1, ge=1, description="torch threads per run (fixed so that numbers do not depend on workers).")
    progress: bool = Field(True, description="Progress bars (on a terminal) and one summary line per finished run.")

    @model_validator(mode="after")
    def _unique_task_ids(self) -> "BenchConfig":
        ids = [t.id for t in self.tasks]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"task ids must be unique (set 'label'): {dup}")
        return self


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a bench config mapping from a YAML or JSON file.

    A ``results.json`` written by the bench is accepted too (its ``config`` is used).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - bench extra installs it
            raise RuntimeError("YAML configs need pyyaml: pip install 'relaxit[bench]'") from exc
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a bench config must be a mapping, got {type(data).__name__}")
    if "config" in data and "runs" in data:  # a results.json
        data = data["config"]
    return data
