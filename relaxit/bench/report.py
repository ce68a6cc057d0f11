"""Writing the results: ``results.json``, ``results.csv``, ``report.md``, PNG plots and the
terminal table."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["versions", "summarise", "write_outputs", "format_tables"]

# Per task kind: (metric key, column title, format); the first is the ranking metric.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "toy": [
        ("loss_gap", "final E[f] - min", ".2e"),
        ("final_prob", "P(best)", ".3f"),
        ("bias", "|bias| at init", ".2e"),
        ("bias_z", "bias z", ".1f"),
        ("variance", "grad var at init", ".2e"),
        ("grad_var", "grad var (end)", ".2e"),
    ],
    "vae": [
        ("test_neg_elbo", "test -ELBO", ".2f"),
        ("test_neg_iwae", "test -IWAE", ".2f"),
        ("grad_var", "enc grad var", ".2e"),
    ],
    "subset": [
        ("test_mse", "test MSE", ".3f"),
        ("recovered", "recovered", ".2f"),
        ("grad_var", "grad var (end)", ".2e"),
    ],
}

CURVE: dict[str, tuple[str, str, bool]] = {
    # kind: (curve key, axis title, log y)
    "toy": ("gap", "exact E[f] - min", True),
    "vae": ("test_neg_elbo", "test -ELBO (nats)", False),
    "subset": ("test_mse", "test MSE", True),
}


def kind_of(task_name: str) -> str:
    return "toy" if task_name.startswith("toy") else "vae" if task_name.startswith("vae") else "subset"


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    for dist in ("relaxit", "torch", "pyro-ppl", "pydantic", "numpy", "scikit-learn", "matplotlib", "ray"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one row per (estimator label, K): metrics averaged over seeds (with their
    standard deviation), time per step and its ratio to the fastest row of the task."""
    groups: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[r["task"]][(r["label"], r["num_samples"])].append(r)
    table: dict[str, list[dict[str, Any]]] = {}
    for task, by_est in groups.items():
        rows = []
        for (label, k), rs in by_est.items():
            ok = [r for r in rs if not r.get("error")]
            row: dict[str, Any] = {
                "label": label,
                "num_samples": k,
                "seeds": len(rs),
                "failed": len(rs) - len(ok),
                "kind": kind_of(rs[0]["task_name"]),
                "task_name": rs[0]["task_name"],
            }
            if ok:
                for key in ok[0]["metrics"]:
                    row[key], row[key + "_std"] = _mean_std([r["metrics"][key] for r in ok])
                row["ms_per_step"], row["ms_per_step_std"] = _mean_std([r["timing"]["ms_per_step"] for r in ok])
            rows.append(row)
        fastest = min((r["ms_per_step"] for r in rows if "ms_per_step" in r), default=float("nan"))
        for r in rows:
            if "ms_per_step" in r:
                r["time_ratio"] = r["ms_per_step"] / fastest
        key = COLUMNS[rows[0]["kind"]][0][0]
        rows.sort(key=lambda r: (r.get(key) is None or math.isnan(r.get(key, float("nan"))), r.get(key, 0.0)))
        table[task] = rows
    return table


def _fmt(value: Any, fmt: str, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = format(value, fmt)
    if std:
        text += " ± " + format(std, fmt)
    return text


def _rows_for(rows: list[dict[str, Any]], multi_k: bool) -> tuple[list[str], list[list[str]]]:
    kind = rows[0]["kind"]
    header = ["estimator", *(["K"] if multi_k else []), *(c[1] for c in COLUMNS[kind]), "ms/step", "x fastest"]
    body = []
    for r in rows:
        if r["failed"] == r["seeds"]:
            body.append([r["label"], *([str(r["num_samples"])] if multi_k else []), "FAILED", *[""] * (len(header) - 2 - multi_k)])
            continue
        cells = [r["label"], *([str(r["num_samples"])] if multi_k else [])]
        cells += [_fmt(r.get(k), f, r.get(k + "_std")) for k, _, f in COLUMNS[kind]]
        cells += [_fmt(r.get("ms_per_step"), ".2f"), _fmt(r.get("time_ratio"), ".2f")]
        body.append(cells)
    return header, body


def _text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def format_tables(summary: dict[str, list[dict[str, Any]]], markdown: bool = False) -> str:
    parts = []
    for task, rows in summary.items():
        multi_k = len({r["num_samples"] for r in rows}) > 1
        header, body = _rows_for(rows, multi_k)
        ks = sorted({r["num_samples"] for r in rows})
        title = f"{task}" + ("" if multi_k else f" (K = {ks[0]})")
        if markdown:
            parts.append(f"### {title}\n\n{_md_table(header, body)}")
        else:
            parts.append(f"{title}\n{_text_table(header, body)}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------ plots
def _style(i: int) -> dict[str, Any]:
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    return {"color": colors[i % 10], "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}


def _curve_groups(results: list[dict[str, Any]], task: str) -> dict[str, list[dict[str, Any]]]:
    ok = [r for r in results if r["task"] == task and not r.get("error")]
    multi_k = len({r["num_samples"] for r in ok}) > 1
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[r["label"] + (f" K={r['num_samples']}" if multi_k else "")].append(r)
    return dict(sorted(groups.items()))


def _mean_curve(rs: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    n = min(len(r["curves"]["step"]) for r in rs)
    steps = rs[0]["curves"]["step"][:n]
    times = [statistics.fmean(r["curves"]["time"][i] for r in rs) for i in range(n)]
    vals = [statistics.fmean(r["curves"][key][i] for r in rs) for i in range(n)]
    return steps, times, vals


def _positive(vals: list[float], floor: float = 1e-12) -> list[float]:
    return [max(v, floor) if v == v else float("nan") for v in vals]


def plot_task(results: list[dict[str, Any]], task: str, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _curve_groups(results, task)
    if not groups:
        return []
    kind = kind_of(next(iter(groups.values()))[0]["task_name"])
    key, title, logy = CURVE[kind]
    files = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for i, (label, rs) in enumerate(groups.items()):
        steps, times, vals = _mean_curve(rs, key)
        vals = _positive(vals) if logy else vals
        axes[0].plot(steps, vals, label=label, **_style(i))
        axes[1].plot(times, vals, label=label, **_style(i))
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training wall time (s)")
    axes[0].set_ylabel(title)
    for ax in axes:
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if kind == "vae":  # zoom on the informative range: skip the initial value
        finals = [v for rs in groups.values() for v in _mean_curve(rs, key)[2][1:] if v == v]
        if finals:
            lo, hi = min(finals), sorted(finals)[int(0.9 * (len(finals) - 1))]
            pad = 0.05 * (hi - lo + 1e-9)
            axes[0].set_ylim(lo - pad, hi + 4 * pad)
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                        ncol=1 if len(groups) <= 20 else 2)
    sup = fig.suptitle(f"{task}: {title} vs step and vs wall time (mean over seeds)")
    fig.tight_layout()
    name = f"{task}_curves.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend, sup), bbox_inches="tight")
    plt.close(fig)
    files.append(name)

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, (label, rs) in enumerate(groups.items()):
        steps, _, vals = _mean_curve(rs, "grad_var")
        ax.plot(steps, _positive(vals, 1e-30), marker="o", markersize=3, label=label, **_style(i))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    what = "encoder parameters (mean over coordinates)" if kind == "vae" else "logits (trace)"
    ax.set_ylabel("gradient variance")
    ax.set_title(f"{task}: gradient variance w.r.t. {what}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    legend = ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if len(groups) <= 20 else 2)
    fig.tight_layout()
    name = f"{task}_grad_var.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend,), bbox_inches="tight")
    plt.close(fig)
    files.append(name)
    return files


def plot_bias_variance(results: list[dict[str, Any]], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = sorted({r["task"] for r in results if kind_of(r["task_name"]) == "toy" and not r.get("error")})
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        points: dict[tuple[float, float], list[str]] = {}
        for i, (label, rs) in enumerate(_curve_groups(results, task).items()):
            var = statistics.fmean(r["metrics"]["variance"] for r in rs)
            bias = max(statistics.fmean(r["metrics"]["bias"] for r in rs), 1e-12)
            z = statistics.fmean(r["metrics"]["bias_z"] for r in rs)
            st = _style(i)
            ax.scatter([var], [bias], color=st["color"], marker="o" if z > 5 else "x", s=40)
            points.setdefault((var, bias), []).append(label)  # identical estimates share a label
        for (var, bias), labels in points.items():
            ax.annotate(" = ".join(labels), (var, bias), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(x=0.25, y=0.1)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("gradient variance at the initial logits")
        ax.set_ylabel("|mean estimate - exact gradient|")
        ax.set_title(f"{task}: bias vs variance (o: bias > 5 s.e., x: consistent with 0)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    name = "toy_bias_variance.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


# ----------------------------------------------------------------------- files
_CSV_META = ["task", "run_id", "label", "estimator", "config", "num_samples", "seed", "reduce"]


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    metric_keys: list[str] = []
    for r in results:
        for k in r.get("metrics", {}):
            if k not in metric_keys:
                metric_keys.append(k)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*_CSV_META, *metric_keys, "ms_per_step", "train_s", "wall_s", "error"])
        for r in results:
            m, t = r.get("metrics", {}), r["timing"]
            w.writerow(
                [
                    r["task"], r["run_id"], r["label"], r["estimator"]["name"],
                    json.dumps(r["estimator"], sort_keys=True), r["num_samples"], r["seed"], r["reduce"],
                    *[m.get(k, "") for k in metric_keys],
                    t.get("ms_per_step", ""), t.get("train_s", ""), t.get("wall_s", ""),
                    (r.get("error") or "").strip().splitlines()[-1] if r.get("error") else "",
                ]
            )


_TASK_TEXT = {
    "toy": (
        "Minimise `E_q[(z - t)^2]` over the logits (the REBAR/RELAX toy). *|bias| at init* and "
        "*grad var at init* come from many independent estimates at logits 0 against the exact "
        "gradient by enumeration; *bias z* is the largest |bias| / standard error (above ~5: a "
        "real bias). *final E[f] - min* is the exact expected loss after training minus the optimum."
    ),
    "vae": (
        "A VAE with discrete latents on binarised digits. *test -ELBO* uses the analytic KL and "
        "samples of the discrete posterior; *test -IWAE* is the importance-weighted bound with "
        "`eval_samples` samples (lower is better for both). *enc grad var* is the variance of "
        "independent gradient estimates w.r.t. the encoder parameters on a fixed batch, "
        "averaged over coordinates, at the last checkpoint."
    ),
    "subset": (
        "Select k of n features for a linear regression (generated data, k informative "
        "features). *recovered* is the fraction of the true features among the top-k logits; "
        "*test MSE* uses that top-k mask with the learned weights."
    ),
}


def write_outputs(
    out: Path,
    *,
    config: dict[str, Any],
    results: list[dict[str, Any]],
    notes: list[str],
    wall_s: float,
    started: str,
    command: str,
    estimators: dict[str, Any],
) -> dict[str, list[dict[str, Any]]]:
    """Write every output file into ``out`` and return the summary tables."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    payload = {
        "relaxit_bench": 1,
        "command": command,
        "started": started,
        "wall_s": wall_s,
        "versions": versions(),
        "seeds": config["seeds"],
        "config": config,
        "estimators": estimators,
        "notes": notes,
        "summary": summary,
        "runs": results,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_csv(results, out / "results.csv")

    plots: dict[str, list[str]] = {}
    for task in summary:
        plots[task] = plot_task(results, task, out)
    scatter = plot_bias_variance(results, out)

    v = payload["versions"]
    lines = [
        "# relaxit bench report",
        "",
        f"- command: `{command}`",
        f"- started: {started}; wall time {wall_s:.1f} s; {len(results)} runs "
        f"({sum(1 for r in results if r.get('error'))} failed)",
        f"- preset: {config.get('preset') or '-'}; seeds: {config['seeds']}; device: {config['device']}; "
        f"workers: {config['workers']} ({config['backend']}); torch threads per run: {config['threads']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- reproduce: `relaxit bench --config config.json` (the resolved config of this run, every "
        "estimator listed with its full config)",
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Results", ""]
    lines.append(
        "Rows are sorted by the task's first metric (mean over seeds; ± is the standard deviation "
        "over seeds). *ms/step* is the wall time of a training step (forward, backward, optimiser; "
        "evaluations excluded); *x fastest* its ratio to the fastest estimator of the task."
    )
    lines.append("")
    for task, rows in summary.items():
        kind = rows[0]["kind"]
        lines.append(format_tables({task: rows}, markdown=True))
        lines.append("")
        lines.append(_TASK_TEXT[kind])
        lines.append("")
        ranked = [r["label"] + (f" K={r['num_samples']}" if len({x['num_samples'] for x in rows}) > 1 else "")
                  for r in rows if r["failed"] < r["seeds"]]
        lines.append(f"Observed ranking by {COLUMNS[kind][0][1]}: " + " < ".join(ranked) + ".")
        lines.append("")
        for name in plots.get(task, []):
            lines.append(f"![{name}]({name})")
            lines.append("")
        if kind == "toy" and scatter and task == min(t for t in summary if summary[t][0]["kind"] == "toy"):
            lines.append(f"![{scatter}]({scatter})")
            lines.append("")
    failed = [r for r in results if r.get("error")]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- `{r['run_id']}`: {r['error'].strip().splitlines()[-1]}")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    return summary
