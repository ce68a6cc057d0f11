"""The bench's later tasks and presets: ``vae-pyro`` (the Bernoulli VAE inside Pyro through
EstimatorELBO), and the resolved config of every preset planning the same runs."""

from __future__ import annotations

import importlib.util

import pytest

_missing = [m for m in ("matplotlib", "sklearn", "tqdm") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"the bench extra is not installed ({_missing})")

from relaxit.bench import plan, preset, run  # noqa: E402
from relaxit.bench.presets import PRESETS  # noqa: E402

TINY_VAE = {"steps": 4, "checkpoints": 2, "variance_draws": 3, "eval_samples": 4, "test_size": 40,
            "latents": 6, "encoder": [16], "decoder": [16]}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_a_config_that_plans_the_same_runs(name):
    first = plan(preset(name))
    assert first.runs, name
    second = plan(first.config.model_dump(mode="json"))
    assert [r.run_id for r in second.runs] == [r.run_id for r in first.runs]
    assert [r.estimator for r in second.runs] == [r.estimator for r in first.runs]


def test_vae_pyro_matches_vae_bernoulli_setup_and_skips_pathwise_estimators(tmp_path):
    p = plan({"tasks": [{"name": "vae-pyro", **TINY_VAE}]})
    names = {r.estimator["name"] for r in p.runs}
    assert {"reinforce", "disarm"} <= names and "relaxed_bernoulli" not in names
    assert any("relaxed_bernoulli" in n and "pathwise" in n for n in p.notes)
    ests = [{"name": "reinforce", "baseline": "leave_one_out"}, "disarm", "relax"]
    out = run({"tasks": [{"name": "vae-pyro", **TINY_VAE, "estimators": ests},
                         {"name": "vae-bernoulli", **TINY_VAE, "estimators": ests[:2]}],
               "output": str(tmp_path), "progress": False}, quiet=True)
    res = {r["run_id"]: r for r in out["results"]}
    for r in res.values():
        assert not r.get("error"), r.get("error")
        assert r["metrics"]["grad_var"] > 0 and r["curves"]["step"] == [0, 2, 4]
    assert res["vae-pyro/relax/K2/s0"]["estimator"]["family"] == "bernoulli"  # filled from the task
    # same seed, same networks and data: the two tasks start from the same model, so their
    # test -ELBO at step 0 (estimator-independent) is the same
    a = res["vae-pyro/disarm/K2/s0"]["curves"]["test_neg_elbo"][0]
    b = res["vae-bernoulli/disarm/K2/s0"]["curves"]["test_neg_elbo"][0]
    assert a == pytest.approx(b, rel=1e-6)
    # training moved the model, and the Pyro ELBO's gradient is not the analytic-KL one
    assert res["vae-pyro/disarm/K2/s0"]["curves"]["test_neg_elbo"][-1] != a
    assert res["vae-pyro/disarm/K2/s0"]["metrics"] != res["vae-bernoulli/disarm/K2/s0"]["metrics"]
    import pyro

    assert not any(k.startswith("relaxit.") for k in pyro.get_param_store().keys())  # scratch store only


def test_l2x_digits_learns_an_explanation_with_subset_estimators(tmp_path):
    from relaxit.bench.data import load_digits_labelled

    x_tr, y_tr, x_te, y_te = load_digits_labelled()
    assert x_tr.shape == (1437, 64) and x_te.shape == (360, 64) and 0 <= x_tr.min() and x_tr.max() == 1
    assert set(y_tr.tolist()) == set(range(10))
    p = plan({"tasks": [{"name": "l2x-digits", "steps": 2, "k": 5}]})
    names = {r.estimator["name"] for r in p.runs}
    assert {"simple", "sfess", "imle", "aimle", "perturbed", "gumbel_topk"} <= names
    assert all(r.estimator["k"] == 5 for r in p.runs)  # k filled from the task
    ests = ["simple", {"name": "imle", "family": "subset"}]
    task = {"name": "l2x-digits", "steps": 150, "checkpoints": 1, "variance_draws": 3, "k": 8, "estimators": ests}
    out = run({"tasks": [task], "output": str(tmp_path), "progress": False}, quiet=True)
    for r in out["results"]:
        assert not r.get("error"), r.get("error")
        acc = r["curves"]["test_accuracy"]
        # chance is 0.1; with the 360 test digits a standard error at p = 0.5 is 0.026: a
        # trained explainer + predictor is far above the untrained one
        assert acc[-1] > acc[0] + 10 * 0.026, (r["label"], acc)
        assert r["metrics"]["grad_var"] > 0
    assert (tmp_path / "l2x-digits_curves.png").is_file()
    assert "test accuracy (top-k)" in (tmp_path / "report.md").read_text()


def test_anneal_preset_compares_fixed_and_annealed_temperatures_and_group_baselines(tmp_path):
    import math

    import relaxit
    from relaxit_core.schedules import step as step_schedules

    cfg = preset("anneal")
    p = plan(cfg)
    by_label = {}
    for r in p.runs:
        by_label.setdefault(r.label, r.estimator)
    assert len(by_label) == 6 and {r.num_samples for r in p.runs} == {4}  # equal samples
    assert {e["baseline"] for e in by_label.values() if e["name"] == "reinforce"} == {
        "leave_one_out", "group_mean", "group_normalized"}
    assert all(e["family"] == "categorical" for e in by_label.values() if e["name"] == "reinforce")
    taus = [e["tau"] for e in by_label.values() if e["name"] == "gumbel_softmax"]
    assert 1.0 in taus and 0.5 in taus
    (sched,) = [t for t in taus if isinstance(t, dict)]
    assert sched["schedule"] == "exponential" and sched["start"] == 1.0 and sched["end"] == 0.5
    # the schedule as the bench steps it: tau = max(end, start exp(-rate t)), t rounded down to `every`
    est = relaxit.build({"name": "gumbel_softmax", "tau": sched})
    steps = cfg["tasks"][0]["steps"]
    seen = {}
    for t in range(1, steps + 1):
        step_schedules(est)
        seen[t] = float(est.tau)
    for t in (1, 99, 100, 250, 1000, 1399, 1400, steps):
        want = max(sched["end"], sched["start"] * math.exp(-sched["rate"] * (t // sched["every"]) * sched["every"]))
        assert seen[t] == pytest.approx(want, rel=1e-6), t
    assert seen[1] == 1.0 and seen[steps] == 0.5 and seen[steps // 2] < 1.0
    # a tiny run of the preset's task: every estimator trains
    task = {**cfg["tasks"][0], "steps": 3, "checkpoints": 1, "variance_draws": 2, "eval_samples": 2, "test_size": 20,
            "latents": 2, "categories": 3, "encoder": [8], "decoder": [8]}
    out = run({**cfg, "workers": 1, "seeds": [0], "tasks": [task], "output": str(tmp_path), "progress": False}, quiet=True)
    assert len(out["results"]) == 6
    assert all(not r.get("error") for r in out["results"]), [r.get("error") for r in out["results"]]
