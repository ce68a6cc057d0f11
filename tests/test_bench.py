"""Tests of ``relaxit bench``: the CLI end to end (tiny step counts), the config path and its
exact reproducibility, the process pool and Ray backends, the MNIST loader, estimator
selection from the registry, and estimators that own parameters/buffers under DDP."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch

import importlib.util  # noqa: E402

# Checked without importing, so that the DDP test's spawned processes (which import this
# module to find their target) stay light.
_missing = [m for m in ("matplotlib", "sklearn", "tqdm") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"the bench extra is not installed ({_missing}): pip install 'relaxit[bench]'")

import relaxit  # noqa: E402
import relaxit_core  # noqa: E402
from relaxit.bench import plan, run  # noqa: E402
from relaxit.bench.cli import config_from_args  # noqa: E402
from relaxit.bench.data import load_dataset, load_mnist  # noqa: E402
from relaxit.cli import build_parser, main  # noqa: E402

# A VAE task small enough for tests (the default preset's model, fewer evaluations).
TINY_VAE = {"steps": 4, "checkpoints": 2, "variance_draws": 3, "eval_samples": 4, "test_size": 40}
TINY_TOY = {"steps": 6, "checkpoints": 2, "bias_draws": 200, "variance_draws": 16}


def _cli_args(*argv: str):
    return build_parser().parse_args(["bench", *argv])


def _numbers(results: list[dict]) -> list:
    """Everything a run computed except wall-clock times."""
    return [
        (r["run_id"], r["metrics"], {k: v for k, v in r["curves"].items() if k != "time"})
        for r in sorted(results, key=lambda r: r["run_id"])
    ]


# ------------------------------------------------------------------------- CLI
def test_cli_end_to_end_writes_report(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--tasks", "toy,vae-categorical", "--steps", "3", "--no-variants",
               "--workers", "1", "--output", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "vae-categorical" in printed and "test -ELBO" in printed and "x fastest" in printed
    for name in ("results.json", "results.csv", "report.md", "config.json", "toy_curves.png", "toy_grad_var.png",
                 "toy_bias_variance.png", "vae-categorical_curves.png", "vae-categorical_grad_var.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    assert data["versions"]["torch"] == torch.__version__.split("+")[0] or data["versions"]["torch"] == torch.__version__
    assert data["seeds"] == [0] and data["config"]["tasks"][0]["name"] == "toy"
    names = {r["estimator"]["name"] for r in data["runs"]}
    fitting = {i.name for i in relaxit.available() if {"bernoulli", "categorical"} & set(i.families)}
    assert names <= fitting and names  # every run is a registered estimator
    for r in data["runs"]:
        assert not r.get("error"), r.get("error")
        assert r["timing"]["ms_per_step"] > 0 and r["curves"]["step"][-1] == 3
        if r["task"] == "vae-categorical":
            m = r["metrics"]
            assert m["test_neg_iwae"] <= m["test_neg_elbo"] + 1e-6 or m["test_neg_iwae"] > 0
            assert m["grad_var"] >= 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(data["runs"])
    report = (out / "report.md").read_text()
    assert "![vae-categorical_curves.png](vae-categorical_curves.png)" in report
    assert "Observed ranking" not in report and "1 seed: no error bars and no significance test" in report


def test_cli_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    for option in ("--preset", "--config", "--tasks", "--estimators", "--steps", "--seeds", "--output",
                   "--workers", "--backend", "--ray-address", "--device", "--data"):
        assert option in text


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["bench", "--steps", "0", "--output", str(tmp_path)]) == 2
    assert "steps" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda", "--output", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_default_preset_selects_every_fitting_estimator():
    """The default suite trains every registered estimator whose families fit a task
    (estimators that need other arguments or more samples are skipped with a note)."""
    p = plan(config_from_args(_cli_args()))
    chosen = {(r.task_id, r.estimator["name"]) for r in p.runs}
    for info in relaxit.available():
        for task in ("toy", "vae-bernoulli", "toy-categorical", "vae-categorical"):
            family = "bernoulli" if task.endswith(("toy", "bernoulli")) else "categorical"
            if family in info.families:
                assert (task, info.name) in chosen or any(info.name in n for n in p.notes), (task, info.name)
    assert ("vae-categorical", "gumbel_softmax") in chosen
    labels = {r.label for r in p.runs if r.task_id == "vae-categorical"}
    assert "gumbel_softmax(hard=true)" in labels  # a variant of a boolean field
    assert p.config.workers == 2


# -------------------------------------------------------------- config path
def test_config_file_reproduces_run_exactly_and_workers_do_not_matter(tmp_path):
    yaml = pytest.importorskip("yaml")
    config = {
        "seeds": [3],
        "tasks": [
            {"name": "toy", **TINY_TOY, "estimators": [{"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"},
                                                       {"name": "relaxed_bernoulli", "tau": 0.5}]},
            {"name": "vae-bernoulli", **TINY_VAE, "latents": 6, "encoder": [16], "decoder": [16],
             "estimators": [{"estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "moving_average"}, "label": "ma"},
                            {"name": "relaxed_bernoulli", "hard": True}]},
        ],
        "output": str(tmp_path / "a"),
        "progress": False,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    first = run(path, quiet=True)
    assert [r["label"] for r in first["results"] if r["task"] == "vae-bernoulli"] == ["ma", "relaxed_bernoulli(hard=true)"]
    # The written config.json, run again with a process pool of 2, gives the same numbers.
    args = _cli_args("--config", str(tmp_path / "a" / "config.json"), "--workers", "2", "--output", str(tmp_path / "b"))
    second = run(config_from_args(args), quiet=True)
    assert _numbers(second["results"]) == _numbers(first["results"])
    assert second["config"]["tasks"] == first["config"]["tasks"]
    # A different seed gives different numbers (the check above can fail).
    third = run({**config, "tasks": config["tasks"][:1], "seeds": [4], "output": str(tmp_path / "c")}, quiet=True)
    toy = [r for r in first["results"] if r["task"] == "toy"]
    assert [n[1:] for n in _numbers(third["results"])] != [n[1:] for n in _numbers(toy)]


@pytest.mark.parametrize("name", ["default", "shi2022"])
def test_resolved_preset_plans_the_same_runs(name):
    """The resolved config (what config.json holds) plans exactly the runs of the preset, also
    when an estimator is skipped at some K (disarm at K = 3 in shi2022)."""
    from relaxit.bench import preset

    first = plan(preset(name))
    second = plan(first.config.model_dump(mode="json"))
    assert [r.run_id for r in second.runs] == [r.run_id for r in first.runs]
    assert [r.estimator for r in second.runs] == [r.estimator for r in first.runs]
    assert second.config == first.config


def test_explicit_estimators_are_validated_through_the_registry():
    base = {"tasks": [{"name": "toy", **TINY_TOY, "num_samples": 1, "estimators": [{"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}]}]}
    with pytest.raises(ValueError, match="num_samples >= 2"):
        plan(base)
    optional = {"tasks": [{"name": "toy", **TINY_TOY, "num_samples": 1,
                           "estimators": [{"estimator": {"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"}, "optional": True},
                                          {"estimator": {"name": "no_such_method"}, "optional": True, "label": "nsm"}]}]}
    p = plan(optional)
    assert not p.runs and any("num_samples >= 2" in n for n in p.notes) and any("nsm" in n for n in p.notes)
    with pytest.raises(relaxit_core.UnknownEstimatorError):
        plan({"tasks": [{"name": "toy", "estimators": [{"name": "reinforc"}]}]})
    with pytest.raises(relaxit_core.ConfigError):
        plan({"tasks": [{"name": "toy", "estimators": [{"name": "gumbel_softmax", "tau": -1}]}]})
    # family is filled from the task: reinforce serves the categorical toy without saying so
    p = plan({"tasks": [{"name": "toy-categorical", **TINY_TOY, "estimators": [{"name": "reinforce"}]}]})
    assert p.runs[0].estimator["family"] == "categorical"


def test_vae_iwae_objective(tmp_path):
    """objective='iwae' trains through estimate(reduce='logmeanexp') with the model's own
    log-weights; relaxations without HARD samples are skipped with a note."""
    task = {"name": "vae-bernoulli", **TINY_VAE, "latents": 4, "encoder": [8], "decoder": [8], "objective": "iwae",
            "estimators": [{"name": "reinforce", "family": "bernoulli"}, {"estimator": {"name": "relaxed_bernoulli"}, "optional": True},
                           {"name": "relaxed_bernoulli", "hard": True}]}
    out = run({"tasks": [task], "output": str(tmp_path), "progress": False}, quiet=True)
    assert {r["label"] for r in out["results"]} == {"reinforce", "relaxed_bernoulli(hard=true)"}
    assert all(r["reduce"] == "logmeanexp" and not r.get("error") for r in out["results"])
    assert any("HARD" in n for n in out["notes"])


# ------------------------------------------------------------ data and shi2022
def test_mnist_loader_formats(tmp_path):
    rng = np.random.RandomState(0)
    train, test = (rng.rand(7, 784) > 0.5).astype(np.uint8), (rng.rand(3, 28, 28) > 0.5).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", train=train, test=test)
    a, b = load_mnist(tmp_path / "mnist.npz")
    assert a.shape == (7, 784) and b.shape == (3, 784) and a.dtype == np.float32
    np.testing.assert_array_equal(a, train) and np.testing.assert_array_equal(b, test.reshape(3, -1))
    grey = rng.randint(0, 256, size=(5, 784))
    np.savez(tmp_path / "grey.npz", train=grey, test=grey)
    np.testing.assert_array_equal(load_mnist(tmp_path / "grey.npz")[0], (grey > 127.5).astype(np.float32))
    folder = tmp_path / "amat"
    folder.mkdir()
    np.savetxt(folder / "binarized_mnist_train.amat", train, fmt="%d")
    np.savetxt(folder / "binarized_mnist_test.amat", test.reshape(3, -1), fmt="%d")
    c, d = load_dataset(str(folder))
    np.testing.assert_array_equal(c, train) and np.testing.assert_array_equal(d, test.reshape(3, -1))
    np.testing.assert_array_equal(load_mnist(folder / "binarized_mnist_train.amat")[1], d)
    np.savez(tmp_path / "bad.npz", train=train)
    with pytest.raises(ValueError, match="'test'"):
        load_mnist(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path / "missing.npz")
    digits_train, digits_test = load_dataset("digits")
    assert digits_train.shape == (1437, 64) and digits_test.shape == (360, 64)
    assert set(np.unique(digits_train)) == {0.0, 1.0}
    from sklearn.datasets import load_digits

    from relaxit.bench.data import _digits_pixels

    np.testing.assert_array_equal(_digits_pixels(), load_digits().data)  # the fast path reads the same file


def test_shi2022_preset_on_local_mnist(tmp_path):
    rng = np.random.RandomState(1)
    np.savez(tmp_path / "mnist.npz", train=(rng.rand(120, 784) > 0.7), test=(rng.rand(20, 784) > 0.7))
    args = _cli_args("--preset", "shi2022", "--data", str(tmp_path / "mnist.npz"), "--steps", "2", "--seeds", "0",
                     "--output", str(tmp_path / "out"), "--no-progress")
    cfg = config_from_args(args)
    task = cfg["tasks"][0]
    assert task["latents"] == 200 and task["encoder"] == [200, 200] and task["decoder"] == [200]
    assert task["batch_size"] == 100 and task["lr"] == 1e-3 and task["num_samples"] == [2, 3]
    task.update(checkpoints=1, variance_draws=2, eval_samples=2)
    p = plan(cfg)
    labels = {r.label for r in p.runs}
    assert "rloo" in labels  # reinforce(baseline=leave_one_out) is always registered
    registered = {i.name for i in relaxit.available()}
    for name in ("disarm", "arms", "double_cv", "relax", "rodeo"):
        assert (name in labels) == (name in registered) or any(name in n for n in p.notes)
        if name not in registered:
            assert any(f"{name!r} is not registered" in n for n in p.notes)
    out = run(cfg, quiet=True)
    assert {r["num_samples"] for r in out["results"]} == {2, 3}
    for r in out["results"]:
        assert not r.get("error"), r["error"]
        assert np.isfinite(r["metrics"]["test_neg_elbo"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "K = 2" not in report or "| K |" in report  # two Ks: a K column


# ------------------------------------------------------------ subset task
def test_subset_task_with_a_runtime_registered_estimator(tmp_path):
    """The subset task trains whatever serves the 'subset' family; here a test estimator
    registered at run time (straight-through Gumbel top-k), found through the registry."""
    import pyro.distributions as pdist
    from pydantic import Field
    from torch.distributions import constraints

    from relaxit_core.surrogate import straight_through

    class TopK(pdist.TorchDistribution):
        arg_constraints = {"logits": constraints.real_vector}
        support = constraints.real_vector
        has_rsample = True

        def __init__(self, logits, k):
            self.logits, self.k = logits, k
            super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

        def rsample(self, sample_shape=torch.Size()):
            g = -torch.log(-torch.log(torch.rand(self._extended_shape(sample_shape)).clamp_min(1e-12)))
            perturbed = self.logits + g
            hard = torch.zeros_like(perturbed).scatter_(-1, perturbed.topk(self.k).indices, 1.0)
            return straight_through(hard, self.k * perturbed.softmax(-1))

    class STTopK(relaxit_core.EstimatorBase):
        """Straight-through Gumbel top-k (test estimator)."""

        name: ClassVar[str] = "test_st_topk"
        family: ClassVar[str] = "subset"
        params: ClassVar[tuple[str, ...]] = ("logits",)
        capabilities: ClassVar[frozenset] = frozenset({relaxit_core.Capability.RSAMPLE, relaxit_core.Capability.HARD})

        class Config(relaxit_core.EstimatorConfig):
            name: Literal["test_st_topk"] = "test_st_topk"
            k: int = Field(1, ge=1, description="subset size")

        def build_distribution(self, logits):
            return TopK(logits, self.config.k)

    def names(p):
        return {r.estimator["name"] for r in p.runs}

    assert "test_st_topk" not in names(plan({"tasks": [{"name": "subset"}]}))
    relaxit.register(STTopK)
    try:
        out = run({"tasks": [{"name": "subset", "steps": 60, "checkpoints": 2, "variance_draws": 8, "k": 3}],
                   "output": str(tmp_path), "progress": False}, quiet=True)
    finally:
        from relaxit_core.registry import registry

        registry.unregister("test_st_topk")
    (r,) = [r for r in out["results"] if r["estimator"]["name"] == "test_st_topk"]
    assert not r.get("error"), r.get("error")
    assert r["estimator"] == {"name": "test_st_topk", "k": 3}  # k filled from the task
    assert r["metrics"]["test_mse"] < r["curves"]["test_mse"][0]  # it learned something
    assert (tmp_path / "subset_curves.png").is_file()


# ---------------------------------------------------------------- Ray backend
def test_ray_backend_matches_local(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra: pip install 'relaxit[ray]'")
    config = {"tasks": [{"name": "toy", **TINY_TOY, "estimators": [{"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"},
                                                                    {"name": "relaxed_bernoulli"}]}],
              "progress": False}
    local = run({**config, "output": str(tmp_path / "local")}, quiet=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run({**config, "backend": "ray", "workers": 2, "output": str(tmp_path / "ray")}, quiet=True)
    finally:
        ray.shutdown()
    assert _numbers(remote["results"]) == _numbers(local["results"])


# ----------------------------------------------------------------------- DDP
def _stateful_specs() -> list[dict]:
    """Every registered estimator config (over its conformance configs) for the Bernoulli or
    categorical family whose module owns parameters or buffers."""
    specs = []
    for info in relaxit.available():
        cls = info.cls
        for update in getattr(cls, "conformance_configs", ({},)):
            try:
                est = relaxit.build({"name": info.name, **update})
            except relaxit_core.ConfigError:
                continue
            if getattr(est, "family", None) not in ("bernoulli", "categorical") or "logits" not in est.params:
                continue
            if any(True for _ in est.parameters()) or any(True for _ in est.buffers()):
                specs.append(est.config.model_dump(mode="json"))
    return specs


def _ddp_worker(rank: int, world: int, port: int, specs: list[dict], out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from relaxit.bench.tasks import DiscreteVAE

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    report = {}
    for i, spec in enumerate(specs):
        torch.manual_seed(0)  # same initial model on both ranks
        est = relaxit.build(spec)
        num_samples = max(2, getattr(est, "min_num_samples", 1))
        model = DiscreteVAE(est, x_dim=12, latents=3, categories=None if est.family == "bernoulli" else 3,
                            encoder=(8,), decoder=(8,), num_samples=num_samples)
        initial = [p.detach().clone() for p in model.parameters()]
        ddp = DDP(model, find_unused_parameters=True)
        seen = {}
        model.register_forward_pre_hook(lambda m, a: seen.update({k: v.clone() for k, v in m.named_buffers()}))
        opt = torch.optim.Adam(ddp.parameters(), lr=0.05)
        torch.manual_seed(100 + rank)  # different data and samples on each rank
        for _ in range(4):
            x = (torch.rand(5, 12) < 0.5).float()
            loss = ddp(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        params = {n: p.detach() for n, p in model.named_parameters()}
        changed = any(not torch.equal(a, b) for a, b in zip(initial, params.values()))
        est_params = [n for n in params if n.startswith("estimator.")]
        report[i] = {"params": params, "buffers": seen, "changed": changed, "estimator_params": est_params}
    torch.save(report, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_keeps_estimator_parameters_and_buffers_identical_across_ranks(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    specs = _stateful_specs()
    assert any(s["name"] == "reinforce" and s["baseline"] == "moving_average" for s in specs)
    mp.spawn(_ddp_worker, args=(2, _free_port(), specs, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for i, spec in enumerate(specs):
        a, b = r0[i], r1[i]
        assert a["changed"], spec  # training happened
        assert a["params"].keys() == b["params"].keys()
        for name in a["params"]:
            assert torch.equal(a["params"][name], b["params"][name]), (spec, name)
        # Buffers (e.g. the moving-average baseline) as DDP broadcast them before the last step.
        assert a["buffers"].keys() == b["buffers"].keys(), spec
        for name in a["buffers"]:
            assert torch.equal(a["buffers"][name], b["buffers"][name]), (spec, name)
