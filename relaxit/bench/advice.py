""""Which estimator for my problem?": advice derived from the gradient card's shipped results.

The shipped summary (``relaxit/bench/data/chooser.json``) is built from the
``results.json`` of a longer card run (``relaxit bench --preset card``; its resolved config
is in ``docs/results/card/config.json``) by::

    python -m relaxit.bench.advice build bench-card/results.json   # writes the summary
    python -m relaxit.bench.advice page > docs/guides/chooser.md     # the docs page

Per estimator it keeps the card's metrics on every model, whether the estimator is unbiased
(its instance's ``UNBIASED`` capability), and whether it needs the objective's gradient in
``z`` (measured: an estimator that gives the same gradient estimate when the objective's
input is detached needs only the objective's values, so it serves black-box objectives).

The decision table ranks, per family, budget of objective evaluations, differentiability of
the objective and acceptance of bias, the estimators that qualify by their mean rank of
relative MSE over the family's card models (ranks, not ratios: an exact estimator has MSE 0
on the one-variable toy). ``relaxit describe NAME`` prints :func:`advice` for ``NAME``.
"""

from __future__ import annotations

import json
import statistics
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["load", "build_summary", "recommend", "advice", "chooser_page"]

DATA = Path(__file__).with_name("data") / "chooser.json"


@lru_cache(maxsize=1)
def load() -> dict[str, Any] | None:
    """The shipped summary, or ``None`` when it is absent."""
    try:
        return json.loads(DATA.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _blackbox(spec: dict[str, Any], family: str) -> bool:
    """Whether the estimator's gradient estimate is the same when the objective cannot be
    differentiated (its input detached): then it needs only the objective's values."""
    import torch

    import relaxit

    est = relaxit.build(spec)
    shape = (6,) if family == "bernoulli" else (3, 5)
    c = torch.linspace(0.2, 1.3, shape[-1])

    def f(z: torch.Tensor) -> torch.Tensor:
        loss = ((z * c).sum(-1) - 0.45).pow(2)  # [S] (bernoulli) or [S, 3] (categorical)
        return loss if family == "bernoulli" else loss.sum(-1)

    grads = []
    for wrap in (lambda z: f(z), lambda z: f(z.detach())):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            logits = torch.linspace(-1.0, 1.0, shape[-1]).expand(shape).clone().requires_grad_(True)
            k = max(2, int(getattr(est, "min_num_samples", 1)))
            model = __import__("copy").deepcopy(est)
            out = model.estimate(wrap, num_samples=k, logits=logits)
            try:
                (g,) = torch.autograd.grad(out.surrogate.sum(), [logits], allow_unused=True)
            except RuntimeError:  # nothing reaches the logits without f's gradient
                g = None
            grads.append(torch.zeros_like(logits) if g is None else g)
    return bool(torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7))


def build_summary(results_path: str | Path) -> dict[str, Any]:
    """The compact summary of a card run's ``results.json`` (see the module docstring)."""
    import relaxit
    from relaxit.bench.report import summarise

    data = json.loads(Path(results_path).read_text())
    runs = [r for r in data["runs"] if r.get("task_name") == "gradient-card" and not r.get("error")]
    summary = summarise(runs)
    cfg_tasks = {(t.get("label") or f"card-{t['model']}"): t for t in data["config"]["tasks"] if t["name"] == "gradient-card"}
    tasks: dict[str, Any] = {}
    props: dict[str, dict[str, Any]] = {}
    for task, rows in summary.items():
        t = cfg_tasks[task]
        family = "categorical" if t["model"] in ("toy-categorical", "vae-categorical") else "bernoulli"
        out_rows = []
        for r in rows:
            spec = next(x["estimator"] for x in runs if x["task"] == task and x["label"] == r["label"])
            if r["label"] not in props:
                est = relaxit.build(spec)
                caps = {str(getattr(c, "value", c)) for c in getattr(est, "capabilities", ())}
                props[r["label"]] = {"name": spec["name"], "unbiased": "unbiased" in caps,
                                     "blackbox": _blackbox(spec, family)}
            out_rows.append({
                "label": r["label"],
                "evaluations_max": max(x["metrics"]["evaluations"] for x in runs if x["task"] == task and x["label"] == r["label"]),
                **{k: r.get(k) for k in ("k", "evaluations", "mse", "mse_se", "rel_bias", "rel_bias_se",
                                         "rel_std", "rel_std_se", "cosine", "cosine_se")},
            })
            out_rows[-1]["evaluations"] = out_rows[-1].pop("evaluations_max")
            out_rows[-1]["k"] = int(round(out_rows[-1]["k"])) if out_rows[-1].get("k") is not None else None
        tasks[task] = {"model": t["model"], "family": family, "budget": t["budget"], "rows": out_rows}
    return {
        "source": {"command": _plain_command(data.get("command")), "preset": data["config"].get("preset"),
                   "seeds": data["config"].get("seeds"), "versions": data.get("versions"),
                   "config": "docs/results/card/config.json"},
        "estimators": props,
        "tasks": tasks,
    }


def _plain_command(command: str | None) -> str | None:
    """The command without its output directory (a local path of whoever ran it)."""
    if not command:
        return command
    import shlex

    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("-o", "--output"):
            skip = True
            continue
        out.append(w)
    return " ".join(shlex.quote(w) for w in out)


def _budgets(summary: dict[str, Any], family: str) -> list[int]:
    return sorted({t["budget"] for t in summary["tasks"].values() if t["family"] == family})


def recommend(summary: dict[str, Any], family: str, budget: int, *, differentiable: bool, bias_ok: bool) -> list[tuple[str, float, int]]:
    """``(label, mean rank, models)`` of the qualifying estimators, best first: measured on
    every card model of ``family`` at ``budget`` within that many evaluations, black-box
    capable unless ``differentiable``, unbiased unless ``bias_ok``."""
    tasks = [t for t in summary["tasks"].values() if t["family"] == family and t["budget"] == budget]
    if not tasks:
        return []
    props = summary["estimators"]

    def ok(label: str) -> bool:
        p = props[label]
        return (differentiable or p["blackbox"]) and (bias_ok or p["unbiased"])

    fits = None
    for t in tasks:
        here = {r["label"] for r in t["rows"] if r.get("mse") is not None and (r.get("evaluations") or 0) <= budget and ok(r["label"])}
        fits = here if fits is None else fits & here
    ranks: dict[str, list[int]] = {label: [] for label in fits or ()}
    for t in tasks:
        ordered = sorted((r for r in t["rows"] if r["label"] in ranks), key=lambda r: r["mse"])
        for i, r in enumerate(ordered):
            ranks[r["label"]].append(i + 1)
    out = [(label, statistics.fmean(v), len(v)) for label, v in ranks.items() if v]
    return sorted(out, key=lambda x: (x[1], x[0]))


def _rows_for(summary: dict[str, Any], label: str) -> list[tuple[str, dict[str, Any], int, int]]:
    out = []
    for task, t in summary["tasks"].items():
        ordered = sorted((r for r in t["rows"] if r.get("mse") is not None), key=lambda r: r["mse"])
        for i, r in enumerate(ordered):
            if r["label"] == label:
                out.append((task, r, i + 1, len(ordered)))
    return out


def advice(name: str, summary: dict[str, Any] | None = None) -> str | None:
    """One line of advice for the estimator ``name`` (its default config) from the shipped
    gradient card, or ``None`` when it was not measured."""
    summary = summary or load()
    if not summary:
        return None
    labels = [lab for lab, p in summary["estimators"].items() if p["name"] == name]
    if not labels:
        return None
    label = name if name in labels else sorted(labels, key=len)[0]
    p = summary["estimators"][label]
    rows = _rows_for(summary, label)
    if not rows:
        return None
    budget = max(t["budget"] for t in summary["tasks"].values())
    ranks = [(task, rank, n) for task, r, rank, n in rows if summary["tasks"][task]["budget"] == budget] or \
        [(task, rank, n) for task, r, rank, n in rows]
    mean_rank = statistics.fmean(rank for _, rank, _ in ranks)
    size = statistics.fmean(n for _, _, n in ranks)
    chosen = []
    for family in sorted({summary["tasks"][t]["family"] for t, _, _ in ranks}):
        for b in _budgets(summary, family):
            for diff in (False, True):
                for bias in (False, True):
                    best = recommend(summary, family, b, differentiable=diff, bias_ok=bias)
                    if best and best[0][0] == label:
                        chosen.append(f"{family}, {b} evals, {'differentiable' if diff else 'black-box'} f, "
                                      f"{'bias ok' if bias else 'unbiased'}")
    kind = "unbiased" if p["unbiased"] else "biased"
    needs = "needs only f's values" if p["blackbox"] else "needs f differentiable in z"
    text = (f"{kind}, {needs}; gradient card at {budget} evaluations: mean MSE rank {mean_rank:.1f} of "
            f"{size:.0f} over {len(ranks)} models")
    if chosen:
        text += "; first choice for: " + "; ".join(chosen[:3]) + ("; ..." if len(chosen) > 3 else "")
    else:  # point to the better estimator of its own kind
        better = []
        for family in sorted({summary["tasks"][t]["family"] for t, _, _ in ranks}):
            rec = recommend(summary, family, budget, differentiable=not p["blackbox"], bias_ok=not p["unbiased"])
            if rec and rec[0][0] != label:
                better.append(f"`{rec[0][0]}` ({family})")
        if better:
            text += f"; of its kind the card prefers {', '.join(better)}"
    return text + " (see 'Which estimator for my problem?' in the docs)."


def chooser_page(summary: dict[str, Any] | None = None) -> str:
    """The docs page "Which estimator for my problem?" (Markdown)."""
    summary = summary or load()
    if not summary:
        raise RuntimeError(f"no shipped card summary at {DATA}")
    src = summary["source"]
    lines = [
        "# Which estimator for my problem?",
        "",
        "<!-- generated by `python -m relaxit.bench.advice page` from relaxit/bench/data/chooser.json; do not edit -->",
        "",
        "The answer below is measured, not asserted: it comes from the gradient card of "
        "{doc}`relaxit bench <bench>` (every estimator's gradient against the exact gradient, at an equal "
        "number of objective evaluations, at three checkpoints of a shared training run; see "
        "\"The gradient card\" in that guide), run longer than the default "
        f"(`{src.get('command') or 'relaxit bench --preset card'}`, seeds {src.get('seeds')}; "
        f"reproduce with `relaxit bench --config {src['config']}`).",
        "",
        "How to read the table: pick your family, whether your objective `f` can be differentiated "
        "with respect to the samples `z` (a neural decoder can; a simulator, a reward or a "
        "non-differentiable metric cannot), how many objective evaluations one gradient may "
        "cost, and whether a biased gradient is acceptable (it is for many training runs; it is not "
        "when you need the optimum of the discrete objective or an honest gradient for a "
        "sensitivity). Each cell names the estimator with the best mean rank of relative MSE over the "
        "family's card models, then the runners-up. \"Black-box f\" needs an estimator that uses "
        "only `f`'s values (measured: its estimate is unchanged when `f`'s input is detached).",
        "",
        "`relaxit describe NAME` prints the same advice for one estimator.",
        "",
    ]
    for family in ("bernoulli", "categorical"):
        budgets = _budgets(summary, family)
        if not budgets:
            continue
        models = sorted({t["model"] for t in summary["tasks"].values() if t["family"] == family})
        lines += [f"## {family.capitalize()} latents", "",
                  f"Card models: {', '.join(models)}. Cells: best (mean MSE rank), then runners-up.", ""]
        header = "| objective `f` | bias | " + " | ".join(f"budget {b} evaluations" for b in budgets) + " |"
        lines += [header, "|" + "---|" * (2 + len(budgets))]
        for diff in (True, False):
            for bias in (True, False):
                cells = []
                for b in budgets:
                    rec = recommend(summary, family, b, differentiable=diff, bias_ok=bias)
                    if not rec:
                        cells.append("none measured")
                        continue
                    first = f"**`{rec[0][0]}`** ({rec[0][1]:.1f})"
                    rest = ", ".join(f"`{lab}` ({r:.1f})" for lab, r, _ in rec[1:3])
                    cells.append(first + (f"; {rest}" if rest else ""))
                lines.append(f"| {'differentiable in z' if diff else 'black box'} | "
                             f"{'acceptable' if bias else 'unbiased only'} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The evidence", "",
              "Relative MSE `E|ĝ - g|² / |g|²` (mean ± s.e. over seeds; lower is better) per card model; "
              "*evals*: objective evaluations per gradient; **U**: unbiased; **B**: needs only `f`'s values.", ""]
    for task, t in summary["tasks"].items():
        lines += [f"### {task} (budget {t['budget']})", "",
                  "| estimator | U | B | evals | rel. MSE | rel. bias | rel. std | cosine |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in t["rows"] if r.get("mse") is not None), key=lambda r: r["mse"]):
            p = summary["estimators"][r["label"]]

            def f(key: str, fmt: str = ".3g") -> str:
                v, se = r.get(key), r.get(key + "_se")
                return "-" if v is None else format(v, fmt) + ("" if se is None else f" ± {se:.2g}")

            over = " (over budget)" if (r.get("evaluations") or 0) > t["budget"] else ""
            lines.append(f"| `{r['label']}` | {'U' if p['unbiased'] else ''} | {'B' if p['blackbox'] else ''} | "
                         f"{r.get('evaluations')}{over} | {f('mse')} | {f('rel_bias')} | {f('rel_std')} | {f('cosine', '.3f')} |")
        lines.append("")
    lines += ["![the gradient card](../results/card/gradient_card.png)", ""]
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "build":
        summary = build_summary(argv[1])
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {DATA}", file=sys.stderr)
        return 0
    if argv[:1] == ["page"]:
        print(chooser_page(), end="")
        return 0
    print("usage: python -m relaxit.bench.advice build RESULTS_JSON | page", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
