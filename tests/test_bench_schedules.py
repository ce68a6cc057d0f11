"""The bench advances temperature schedules once per optimisation step (kept apart from
tests/test_bench.py, which the bench's own rewrite owns)."""

from __future__ import annotations

import importlib.util

import pytest

_missing = [m for m in ("matplotlib", "sklearn", "tqdm") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"the bench extra is not installed ({_missing})")


def test_bench_training_loop_steps_the_schedules(tmp_path, monkeypatch):
    # the VAE loop; the toy tasks' loop (_train_logits) makes the same call on its estimator
    task = {"name": "vae-categorical", "latents": 2, "categories": 3, "encoder": [8], "decoder": [8],
            "variance_draws": 2, "eval_samples": 2, "test_size": 20}
    import relaxit.bench.tasks as tasks
    from relaxit.bench import run

    seen = []
    real = tasks.step_schedules

    def spy(module):
        real(module)
        seen.extend(m.tau for m in module.modules() if getattr(m, "name", None) == "gumbel_softmax")

    monkeypatch.setattr(tasks, "step_schedules", spy)
    tau = {"schedule": "linear", "start": 2.0, "end": 0.5, "steps": 4}
    task = {**task, "steps": 5, "checkpoints": 1, "num_samples": [2],
            "estimators": [{"name": "gumbel_softmax", "hard": True, "tau": tau}]}
    out = run({"tasks": [task], "output": str(tmp_path), "progress": False, "workers": 1}, quiet=True)
    assert not out["results"][0].get("error"), out["results"][0].get("error")
    assert seen == pytest.approx([1.625, 1.25, 0.875, 0.5, 0.5])
    assert out["config"]["tasks"][0]["estimators"][0]["estimator"]["tau"]["schedule"] == "linear"
