"""``relaxit bench`` as a research instrument: runs that survive interruption (a real bench
process gets SIGINT), resume, overwrite refusal, user errors as one line with exit 2, and the
gradient card (exact gradients, metrics, significance statements, plot styles)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

_missing = [m for m in ("matplotlib", "sklearn", "tqdm", "scipy") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"the bench extra is not installed ({_missing})")

from relaxit.bench import plan, run  # noqa: E402
from relaxit.bench.card import CardVAE, card_metrics, problem  # noqa: E402
from relaxit.bench.report import compare, styles  # noqa: E402
from relaxit.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK_TOY = {"name": "toy", "steps": 3, "checkpoints": 1, "bias_draws": 20, "variance_draws": 4}
QUICK = [{"name": "reinforce", "family": "bernoulli"}, {"name": "disarm"}, {"name": "arm"}]


def _config(out: Path, *, long: bool = False, workers: int = 1) -> dict:
    tasks = [{**QUICK_TOY, "estimators": QUICK}]
    if long:  # one run that would take hours
        tasks.append({**QUICK_TOY, "label": "toy-long", "steps": 10**8, "estimators": [QUICK[0]]})
    return {"seeds": [0], "workers": workers, "output": str(out), "progress": True, "tasks": tasks}


def _bench(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relaxit", "bench", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _lines(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------ interruption
@pytest.mark.parametrize("workers", [2, pytest.param(1, marks=pytest.mark.slow)])  # the pool is the harder case
def test_sigint_keeps_finished_runs_writes_partial_report_exits_130(tmp_path, workers):
    out = tmp_path / "out"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(_config(out, long=True, workers=workers)))
    # The command as a terminal starts it: SIGINT not ignored (a test run started in the
    # background of a non-interactive shell, or under nohup, ignores it, and an ignored SIGINT
    # is inherited across exec: the command then rightly keeps ignoring it), but blocked, as a
    # child of a thread that blocks it inherits it: the command must unblock it.
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # reset to the default at exec
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc = subprocess.Popen([sys.executable, "-m", "relaxit", "bench", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_handler)
    try:
        deadline = time.monotonic() + 120
        want = 3 if workers == 2 else 0  # serially the long run starts first (longest first)
        while time.monotonic() < deadline:
            if (out / "meta.json").exists() and len(_lines(out)) >= want and proc.poll() is None:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # inside the long run
        assert proc.poll() is None, proc.communicate()
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
        exited = time.time() - sent
        # the runs stop at once (meta.json records it before the report is rebuilt, which
        # imports matplotlib: slow on a loaded machine)
        stopped = json.loads((out / "meta.json").read_text())["sessions"][-1]["stopped_at"] - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert stopped < 5, stopped
    assert exited < 60, exited
    assert "Traceback" not in err
    finished = _lines(out)
    assert len(finished) == want and all(not r.get("error") for r in finished)
    report = (out / "report.md").read_text()
    assert "PARTIAL REPORT" in report and "toy-long/reinforce/K2/s0" in report
    data = json.loads((out / "results.json").read_text())
    quick = ["toy/reinforce/K2/s0", "toy/disarm/K2/s0", "toy/arm/K2/s0"]
    assert data["partial"] and data["missing"] == ([] if workers == 2 else quick) + ["toy-long/reinforce/K2/s0"]
    assert len(data["runs"]) == want


def test_resume_runs_only_missing_and_report_only_rebuilds(tmp_path):
    out = tmp_path / "out"
    first = run(_config(out), quiet=True)
    assert not first["missing"] and len(first["results"]) == 3
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # lost run + torn line
    again = run(out / "config.json", quiet=True, resume=True)
    assert not again["missing"] and len(again["results"]) == 3
    after = (out / "results.jsonl").read_text().splitlines()
    assert after[:2] == lines[:2]  # finished runs kept as they were
    assert json.loads(after[-1])["run_id"] == json.loads(lines[2])["run_id"]  # only the missing one ran
    # nothing left to run: resume is a no-op that still rebuilds the report
    assert len(run(out / "config.json", quiet=True, resume=True)["results"]) == 3
    (out / "report.md").unlink()
    assert main(["bench", "--report-only", "-o", str(out)]) == 0
    assert "## Training tasks" in (out / "report.md").read_text()


# ---------------------------------------------------------- user errors
def test_output_with_results_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    run(_config(out), quiet=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(_config(out)))
    assert main(["bench", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a typo in --estimators with --overwrite: refused before anything is removed
    assert main(["bench", "--config", str(cfg), "--estimators", "disarn", "--overwrite"]) == 2
    assert "Did you mean 'disarm'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["bench", "--config", str(cfg), "--overwrite", "--no-progress"]) == 0
    assert len(_lines(out)) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--estimators", "gumbel_softmx", "--tasks", "toy"], "Did you mean 'gumbel_softmax'"),
        (["--estimators", "gumbel_softmax", "--tasks", "toy"], "no runs selected"),
        (["--tasks", "toy", "-K", "0", "--no-variants"], "greater than or equal to 1"),
        (["--tasks", "toy", "--estimators", "gumbel_softmax,gumbel_rao"], "no runs selected"),
        (["--tasks", "toyy"], "Did you mean 'toy'"),
        (["--workers", "0"], "workers"),
        (["--resume", "--tasks", "toy"], "takes no run options"),
        (["--tasks", "vae-bernoulli", "--data", "/nonexistent/mnist.npz"], "no data at"),
        (["--config", "/nonexistent/run.yaml"], "No such file"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["bench", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "results.jsonl").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    t0 = time.monotonic()
    proc = _bench("--tasks", "toy", "-o", str(blocker / "sub"))
    assert proc.returncode == 2 and "cannot create the output directory" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------- the card
def _vae_task(model: str, **kw) -> dict:
    base = {"name": "gradient-card", "model": model, "hidden": [8], "batch": 3, "train_steps": 4, "draws": 64,
            "warmup": 2, "train_lr": 1e-2, "budget": 4}
    base.update(latents=3 if model == "vae-bernoulli" else 2, categories=3)
    return {**base, **kw}


@pytest.mark.parametrize("model", ["vae-bernoulli", "vae-categorical", "toy", "toy-categorical", "poly"])
def test_card_exact_gradient_matches_enumeration(model):
    """The closed forms and the VAE's decoder-once enumeration equal the generic enumeration
    of relaxit_core.diagnostics at every checkpoint."""
    from relaxit_core.diagnostics import exact_gradient

    from relaxit.bench.config import GradientCardTask

    task = GradientCardTask.model_validate(_vae_task(model, dim=5, train_steps=6)).model_dump(mode="json")
    prob = problem(task, seed=1)
    assert prob.steps == [0, 3, 6]
    for c in range(3):
        logits = prob.params[c].to(torch.float64)
        obj = prob.objective[c]
        g = exact_gradient(lambda z: obj(z.to(prob.dtype)).to(torch.float64), {"logits": logits}, prob.family)["logits"]
        tol = 1e-10 if prob.dtype == torch.float64 else 1e-4
        assert torch.allclose(prob.exact[c].to(torch.float64), g, rtol=tol, atol=tol * g.abs().max()), (c, prob.exact[c], g)
    assert not torch.equal(prob.params[0], prob.params[2])  # training moved the model


def test_card_metrics_definitions():
    torch.manual_seed(0)
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |g| = 5
    exact = card_metrics(g.expand(100, 2).clone(), g)
    assert exact["mse"] == 0 and exact["rel_bias"] == 0 and exact["rel_std"] == 0 and exact["cosine"] == pytest.approx(1)
    shifted = card_metrics((g + torch.tensor([1.0, 0.0], dtype=torch.float64)).expand(100, 2).clone(), g)
    assert shifted["rel_bias"] == pytest.approx(0.2) and shifted["mse"] == pytest.approx(0.04)
    # unbiased noise of known covariance: debiased bias ~ 0, rel_std and mse within 5 s.e.
    N, sigma = 4000, 2.0
    draws = g + sigma * torch.randn(N, 2, dtype=torch.float64)
    m = card_metrics(draws, g)
    true_std = math.sqrt(2) * sigma / 5
    assert abs(m["rel_std"] - true_std) < 5 * m["rel_std_se"]
    assert abs(m["mse"] - true_std**2) < 5 * m["mse_se"]
    assert m["rel_bias"] < 5 * m["rel_bias_se"]


def test_card_unbiased_estimators_show_no_bias_biased_ones_do(tmp_path):
    task = _vae_task("vae-bernoulli", draws=256, budget=4)
    ests = [{"name": "reinforce", "family": "bernoulli", "baseline": "leave_one_out"},
            {"name": "straight_through_bernoulli"}, {"name": "relax", "family": "bernoulli"}]
    out = run({"tasks": [{**task, "estimators": ests}], "seeds": [0, 1], "output": str(tmp_path / "o"),
               "progress": False}, quiet=True)
    by = {(r["label"], r["seed"]): r["metrics"] for r in out["results"]}
    for seed in (0, 1):
        rloo = by[("reinforce(baseline=leave_one_out)", seed)]
        st = by[("straight_through_bernoulli", seed)]
        assert rloo["evaluations"] == 4 and rloo["k"] == 4
        assert by[("relax", seed)]["k"] == 1  # three evaluations per sample: 1 fits 4, 2 does not
        assert rloo["rel_bias"] < 5 * rloo["rel_bias_se"] + 1e-12
        assert st["rel_bias"] > 5 * st["rel_bias_se"]
        assert st["stateful"] is False and by[("relax", seed)]["stateful"] is True
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    for r in data["runs"]:
        for key in ("rel_bias", "rel_std", "cosine", "mse"):
            assert key in r["metrics"] and key + "_se" in r["metrics"]
        assert len(r["curves"]["mse"]) == 3
    report = (tmp_path / "o" / "report.md").read_text()
    assert report.index("## Report card") < report.index("| estimator |")
    assert "one-sided paired t-test" in report and "![gradient_card.png](gradient_card.png)" in report
    assert (tmp_path / "o" / "gradient_card.png").is_file()


def test_significance_names_best_and_those_within_noise():
    def res(label, seed, vals):
        return {"task": "t", "task_name": "gradient-card", "label": label, "num_samples": 12, "seed": seed,
                "estimator": {"name": label}, "metrics": {"mse": sum(vals) / 3}, "curves": {"mse": vals}}

    results = []
    for s in range(3):
        results += [res("a", s, [1.0, 1.1, 0.9 + 0.01 * s]), res("b", s, [1.02, 1.08, 0.93 - 0.01 * s]),
                    res("c", s, [2.4, 2.7, 2.1 + 0.05 * s])]
    rows = [{"label": lab, "num_samples": 12, "kind": "card", "mse": statistics_mean(results, lab)} for lab in "abc"]
    cmp = compare(results, rows, "t", "mse")
    assert cmp["best"] == "a"
    assert [e["label"] for e in cmp["within"]] == ["b"]
    (worse,) = cmp["worse"]
    assert worse["label"] == "c" and worse["ratio"] and 2.2 < worse["effect"] < 2.6 and worse["p"] < 0.05


def statistics_mean(results, label):
    vals = [v for r in results if r["label"] == label for v in r["curves"]["mse"]]
    return sum(vals) / len(vals)


def test_styles_are_distinct_and_stable():
    labels = [f"est{i}" for i in range(60)]
    st = styles(labels)
    pairs = {(tuple(s["color"]), s["marker"]) for s in st.values()}
    assert len(pairs) == 60
    assert len({tuple(s["color"]) for s in list(st.values())[:40]}) == 40  # 40 distinct colours first
    assert styles(list(reversed(labels))) == st  # independent of the order met


def test_default_preset_has_the_card_first_with_three_seeds():
    p = plan(__import__("relaxit.bench", fromlist=["preset"]).preset("default"))
    first = p.config.tasks[0]
    assert first.name == "gradient-card" and first.seeds == [0, 1, 2]
    card_ids = {t.id for t in p.config.tasks if t.name == "gradient-card"}
    assert card_ids == {"card-toy", "card-toy-categorical", "card-poly", "card-vae-bernoulli", "card-vae-categorical"}
    assert all(r.seed in (0, 1, 2) for r in p.runs if r.task_id in card_ids)
    assert {r.seed for r in p.runs if r.task_id not in card_ids} == {0}
    for r in p.runs:
        if r.estimator["name"] in ("reinforce", "relax", "vimco", "indecater"):
            assert r.estimator["family"] in ("bernoulli", "categorical")


# ------------------------------------------------------------- the chooser
def _summary():
    def row(label, mse, ev=12):
        return {"label": label, "k": 12, "evaluations": ev, "mse": mse, "mse_se": 0.01, "rel_bias": 0.0, "rel_bias_se": 0.0,
                "rel_std": mse ** 0.5, "rel_std_se": 0.01, "cosine": 0.9, "cosine_se": 0.01}

    est = {
        "disarm": {"name": "disarm", "unbiased": True, "blackbox": True},
        "relax": {"name": "relax", "unbiased": True, "blackbox": False},
        "straight_through_bernoulli": {"name": "straight_through_bernoulli", "unbiased": False, "blackbox": False},
        "reinforce": {"name": "reinforce", "unbiased": True, "blackbox": True},
    }
    tasks = {
        "card-a": {"model": "toy", "family": "bernoulli", "budget": 12,
                   "rows": [row("disarm", 0.2), row("relax", 0.1), row("straight_through_bernoulli", 0.05), row("reinforce", 3.0)]},
        "card-b": {"model": "poly", "family": "bernoulli", "budget": 12,
                   "rows": [row("disarm", 0.3), row("relax", 0.5, ev=24), row("straight_through_bernoulli", 0.04), row("reinforce", 9.0)]},
    }
    return {"source": {"command": "relaxit bench --preset card", "seeds": [0, 1], "config": "docs/results/card/config.json"},
            "estimators": est, "tasks": tasks}


def test_chooser_recommendations_follow_the_filters():
    from relaxit.bench.advice import advice, chooser_page, recommend

    s = _summary()
    assert recommend(s, "bernoulli", 12, differentiable=True, bias_ok=True)[0][0] == "straight_through_bernoulli"
    # relax is over budget on card-b: not a candidate; the black-box, unbiased choice is disarm
    assert [x[0] for x in recommend(s, "bernoulli", 12, differentiable=True, bias_ok=False)] == ["disarm", "reinforce"]
    assert [x[0] for x in recommend(s, "bernoulli", 12, differentiable=False, bias_ok=True)] == ["disarm", "reinforce"]
    line = advice("disarm", s)
    assert line.startswith("unbiased, needs only f's values") and "first choice for" in line
    assert advice("no_such", s) is None
    page = chooser_page(s)
    assert page.startswith("# Which estimator for my problem?") and "| black box | unbiased only |" in page


def test_shipped_chooser_page_is_in_sync_and_describe_prints_advice(capsys):
    from relaxit.bench.advice import chooser_page, load

    summary = load()
    if summary is None:
        pytest.skip("no shipped card summary")
    page = (ROOT / "docs" / "guides" / "chooser.md").read_text()
    assert page == chooser_page(summary), "regenerate: python -m relaxit.bench.advice page > docs/guides/chooser.md"
    name = next(iter(summary["estimators"].values()))["name"]
    assert main(["describe", name]) == 0
    assert "advice:" in capsys.readouterr().out


def test_card_draws_are_one_batched_estimate_call_per_checkpoint(monkeypatch):
    import relaxit
    from relaxit.bench.card import run_card
    from relaxit.bench.config import GradientCardTask

    calls = []
    build = relaxit.build

    def counting_build(spec):
        est = build(spec)
        inner = est.estimate

        def estimate(objective, **kw):
            calls.append(tuple(kw["logits"].shape))
            return inner(objective, **kw)

        est.estimate = estimate
        return est

    monkeypatch.setattr(relaxit, "build", counting_build)
    task = GradientCardTask.model_validate(_vae_task("poly", dim=7, draws=333)).model_dump(mode="json")
    run = {"task": task, "seed": 0, "device": "cpu", "estimator": {"name": "disarm"}}
    out = run_card(run, lambda step: None)
    assert [c for c in calls if c[0] == 333] == [(333, 7)] * 3  # one call makes every draw
    assert len(calls) == 3 and out["metrics"]["evaluations"] == 4  # disarm's cost is declared, not counted


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_python_drops_in_a_finalizer_still_stops_the_pool():
    """SIGINT arriving while a finalizer runs: Python prints "Exception ignored" and drops the
    KeyboardInterrupt; the pool's loop raises it again from the record."""
    import gc
    import os
    import threading

    from relaxit.bench.runner import _InterruptRecord

    class Dropper:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer

    loops = []

    def loop(check):
        for _ in range(50):
            loops.append(1)
            check()
            if len(loops) == 3:
                Dropper()  # collected at once: the interrupt is raised in __del__ and dropped
                gc.collect()
            time.sleep(0.01)

    assert threading.current_thread() is threading.main_thread()
    # Python's default handler (a run in the background of a shell starts with SIGINT ignored,
    # which watch() leaves alone), and SIGINT blocked, which watch() undoes while it watches
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt):
            with _InterruptRecord().watch() as interrupts:
                loop(interrupts.check)
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the mask restored
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_handler)
    assert len(loops) == 4  # raised again by the first check after the dropped one


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_pool_workers_end_when_the_bench_is_killed(tmp_path):
    """SIGKILL leaves the bench no time to stop its pool: the workers notice the parent is
    gone and end, rather than run an hours-long run for nobody."""
    out = tmp_path / "out"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(_config(out, long=True, workers=2)))
    proc = subprocess.Popen([sys.executable, "-m", "relaxit", "bench", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (len(_lines(out)) >= 3 and proc.poll() is None):
            time.sleep(0.2)
        workers = {p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")}
        assert workers, "no pool workers found"
    finally:
        proc.kill()
        proc.wait()

    def running(p: int) -> bool:  # a zombie (ended, not yet reaped by its new parent) counts as ended
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(running(p) for p in workers):
        time.sleep(0.2)
    alive = [p for p in workers if running(p)]
    for p in alive:  # do not leave them running if the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive
