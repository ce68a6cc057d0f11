"""Writing the results: ``results.json``, ``results.csv``, ``report.md``, PNG plots and the
terminal table."""

from __future__ import annotations

import csv
import shlex
import json
import math
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["versions", "summarise", "rebuild", "format_tables", "compare", "styles"]

# Per task kind: (metric key, column title, format); the first is the ranking metric.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "card": [
        ("mse", "rel. MSE", ".3g"),
        ("rel_bias", "rel. bias", ".3g"),
        ("rel_std", "rel. std", ".3g"),
        ("cosine", "cosine", ".3f"),
    ],
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
    "l2x": [
        ("test_accuracy", "test accuracy (top-k)", ".3f"),
        ("grad_var", "explainer grad var", ".2e"),
    ],
}

CURVE: dict[str, tuple[str, str, bool]] = {
    # kind: (curve key, axis title, log y)
    "toy": ("gap", "exact E[f] - min", True),
    "vae": ("test_neg_elbo", "test -ELBO (nats)", False),
    "subset": ("test_mse", "test MSE", True),
    "l2x": ("test_accuracy", "test accuracy (top-k)", False),
}


#: Metrics where higher is better (the others: lower is better).
HIGHER_IS_BETTER = {"cosine", "final_prob", "recovered", "test_accuracy"}
#: Positive metrics compared by their ratio (paired test on log ratios); the others by differences.
RATIO_METRICS = {"mse", "rel_std", "grad_var", "variance", "loss_gap", "test_mse"}
ZERO = 1e-12  # relative values below this are zero up to rounding


def _columns(kind: str, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The table columns of a report kind; a task of a kind the report does not know shows
    its first four numeric metrics (the first ranks the rows; lower is better)."""
    if kind in COLUMNS:
        return COLUMNS[kind]
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k.endswith("_se") or k in keys or k in _ROW_FIELDS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            keys.append(k)
    return [(k, k, ".4g") for k in keys[:4]] or [("ms_per_step", "ms/step", ".2f")]


_ROW_FIELDS = {"num_samples", "seeds", "failed", "ok_seeds", "ms_per_step", "time_ratio"}


def kind_of(task_name: str) -> str:
    from relaxit.bench.config import TASKS

    info = TASKS.get(task_name)
    return info.kind if info is not None else task_name


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    for dist in ("relaxit", "torch", "pyro-ppl", "pydantic", "numpy", "scikit-learn", "matplotlib", "ray"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error over seeds (``None`` with one value: no error bar)."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), None
    return statistics.fmean(vals), (statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else None)


def summarise(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one row per (estimator label, K): metrics as mean ± standard error over
    seeds (``key_se``; with one seed, the gradient card's Monte Carlo standard error, and
    ``None`` elsewhere), time per step and its ratio to the fastest row of the task."""
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
                "name": rs[0]["estimator"]["name"],
            }
            if ok:
                for key in ok[0]["metrics"]:
                    if key.endswith("_se"):
                        continue
                    vals = [r["metrics"].get(key) for r in ok]
                    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                        row[key] = vals[0]
                        continue
                    row[key], row[key + "_se"] = _mean_se(vals)
                    if len(ok) == 1 and key + "_se" in ok[0]["metrics"]:
                        row[key + "_se"] = ok[0]["metrics"][key + "_se"]
                row["ms_per_step"], row["ms_per_step_se"] = _mean_se([r["timing"]["ms_per_step"] for r in ok])
                row["ok_seeds"] = len(ok)
            rows.append(row)
        fastest = min((r["ms_per_step"] for r in rows if "ms_per_step" in r), default=float("nan"))
        for r in rows:
            if "ms_per_step" in r:
                r["time_ratio"] = r["ms_per_step"] / fastest
        key = _columns(rows[0]["kind"], rows)[0][0]
        sign = -1 if key in HIGHER_IS_BETTER else 1
        rows.sort(key=lambda r: (not isinstance(r.get(key), (int, float)) or math.isnan(r[key]), sign * r.get(key, 0.0)))
        table[task] = rows
    return table


def _fmt(value: Any, fmt: str, se: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = format(value, fmt)
    if se is not None and not math.isnan(se):
        text += " ± " + format(se, ".2g")
    return text


def _rows_for(rows: list[dict[str, Any]], multi_k: bool) -> tuple[list[str], list[list[str]]]:
    kind = rows[0]["kind"]
    card = kind == "card"
    extra = ["K", "evals"] if card else (["K"] if multi_k else [])
    ref = next((r for r in rows if r.get("name") == "reinforce" and r["label"] in ("reinforce", "reinforce(family=bernoulli)",
                                                                               "reinforce(family=categorical)")), None)
    ref_ms = ref.get("ms_per_gradient") if ref else None
    timing = (["MSE x evals/budget", "ms/grad", "x reinforce"] if ref_ms else ["MSE x evals/budget", "ms/grad"]) if card \
        else ["ms/step", "x fastest"]
    columns = _columns(kind, rows)
    header = ["estimator", *extra, *(c[1] for c in columns), *timing]
    body = []
    for r in rows:
        lead = [r["label"]]
        if card:
            ev, budget = r.get("evaluations"), r.get("budget")
            over = isinstance(ev, (int, float)) and isinstance(budget, (int, float)) and ev > budget
            lead += [_fmt(r.get("k"), ".0f"), _fmt(ev, ".0f") + (" (over)" if over else "")]
        elif multi_k:
            lead.append(str(r["num_samples"]))
        if r["failed"] == r["seeds"]:
            body.append([*lead, "FAILED", *[""] * (len(header) - len(lead) - 1)])
            continue
        cells = lead + [_fmt(r.get(k), f, r.get(k + "_se")) for k, _, f in columns]
        if card:
            mse, ev, budget = r.get("mse"), r.get("evaluations"), r.get("budget")
            ok = all(isinstance(v, (int, float)) for v in (mse, ev, budget)) and budget
            cells.append(_fmt(mse * ev / budget if ok else None, ".3g"))
            cells.append(_fmt(r.get("ms_per_gradient"), ".3g"))
            if ref_ms:
                ms = r.get("ms_per_gradient")
                cells.append(_fmt(ms / ref_ms if isinstance(ms, (int, float)) else None, ".2f"))
        else:
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
        if rows[0]["kind"] == "card":
            title = f"{task} (budget {ks[0]} objective evaluations per gradient)"
        else:
            title = f"{task}" + ("" if multi_k else f" (K = {ks[0]})")
        if markdown:
            parts.append(f"### {title}\n\n{_md_table(header, body)}")
        else:
            parts.append(f"{title}\n{_text_table(header, body)}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------ plots
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d")


def styles(labels: list[str]) -> dict[str, dict[str, Any]]:
    """One colour and one marker per estimator label, the same in every plot of a report:
    40 colours (tab20, then tab20b) and 13 markers, assigned by the label's position in the
    sorted list, so that no two labels share both (up to 520 labels)."""
    import matplotlib

    colors = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)
    out = {}
    for i, label in enumerate(sorted(set(labels))):
        out[label] = {"color": colors[i % len(colors)], "marker": _MARKERS[i % len(_MARKERS)]}
    return out


def _curve_groups(results: list[dict[str, Any]], task: str) -> dict[str, list[dict[str, Any]]]:
    ok = [r for r in results if r["task"] == task and not r.get("error")]
    multi_k = len({r["num_samples"] for r in ok}) > 1
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[r["label"] + (f" K={r['num_samples']}" if multi_k else "")].append(r)
    return dict(sorted(groups.items()))


def _mean_curve(rs: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Steps, mean times, mean values and standard errors over seeds (0 with one seed)."""
    n = min(len(r["curves"]["step"]) for r in rs)
    steps = rs[0]["curves"]["step"][:n]
    times = [statistics.fmean(r["curves"]["time"][i] for r in rs) for i in range(n)] if "time" in rs[0]["curves"] else steps
    vals, ses = [], []
    for i in range(n):
        col = [r["curves"][key][i] for r in rs if r["curves"][key][i] is not None]
        m, se = _mean_se(col)
        vals.append(m)
        ses.append(se or 0.0)
    return steps, times, vals, ses


def _legend(fig, handles, labels, note: str | None = None):
    ncol = 1 if len(labels) <= 22 else 2
    return fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=ncol,
                      title=note, title_fontsize=7, frameon=False)


def plot_task(results: list[dict[str, Any]], task: str, out: Path, style: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _curve_groups(results, task)
    if not groups:
        return []
    kind = kind_of(next(iter(groups.values()))[0]["task_name"])
    if kind == "card":
        return []
    if kind not in CURVE:
        return []
    key, title, logy = CURVE[kind]
    seeds = max(len(rs) for rs in groups.values())
    band_note = "bands: ± 1 s.e. over seeds" if seeds > 1 else "1 seed: no error band"
    files = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for label, rs in groups.items():
        st = style.get(label.split(" K=")[0], {"color": "k", "marker": "o"})
        steps, times, vals, ses = _mean_curve(rs, key)
        lo = [v - e for v, e in zip(vals, ses)]
        hi = [v + e for v, e in zip(vals, ses)]
        if logy:
            vals, lo, hi = _positive(vals), _positive(lo), _positive(hi)
        for ax, xs in ((axes[0], steps), (axes[1], times)):
            ax.plot(xs, vals, label=label, color=st["color"], marker=st["marker"], markersize=3, linewidth=1.2)
            if seeds > 1:
                ax.fill_between(xs, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
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
            lo_, hi_ = min(finals), sorted(finals)[int(0.9 * (len(finals) - 1))]
            pad = 0.05 * (hi_ - lo_ + 1e-9)
            axes[0].set_ylim(lo_ - pad, hi_ + 4 * pad)
    handles, labels = axes[0].get_legend_handles_labels()
    legend = _legend(fig, handles, labels, band_note)
    sup = fig.suptitle(f"{task}: {title} vs step and vs wall time (mean over seeds)")
    fig.tight_layout()
    name = f"{task}_curves.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend, sup), bbox_inches="tight")
    plt.close(fig)
    files.append(name)

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    floor = _floor([v for rs in groups.values() for v in _mean_curve(rs, "grad_var")[2]])
    any_zero = False
    for label, rs in groups.items():
        st = style.get(label.split(" K=")[0], {"color": "k", "marker": "o"})
        steps, _, vals, _ = _mean_curve(rs, "grad_var")
        shown = [v if v > floor else floor for v in vals]
        ax.plot(steps, shown, marker=st["marker"], markersize=3, label=label, color=st["color"], linewidth=1.2)
        zeros = [(s_, floor) for s_, v in zip(steps, vals) if v <= floor]
        if zeros:
            any_zero = True
            ax.scatter(*zip(*zeros), marker="$0$", s=40, color=st["color"], zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    what = "encoder parameters (mean over coordinates)" if kind == "vae" else "logits (trace)"
    ax.set_ylabel("gradient variance")
    ax.set_title(f"{task}: gradient variance w.r.t. {what}", fontsize=10)
    if any_zero:
        ax.axhline(floor, color="0.6", linewidth=0.8, linestyle=":")
        ax.annotate("'0' marks: exactly 0 (drawn at the floor)", (0.01, 0.02), xycoords="axes fraction", fontsize=7)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    legend = ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                       ncol=1 if len(groups) <= 22 else 2, frameon=False)
    fig.tight_layout()
    name = f"{task}_grad_var.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend,), bbox_inches="tight")
    plt.close(fig)
    files.append(name)
    return files


def _positive(vals: list[float], floor: float = 1e-12) -> list[float]:
    return [max(v, floor) if v == v else float("nan") for v in vals]


def _floor(values: list[float]) -> float:
    """The axis floor of a log plot: a decade below the smallest positive value (values
    at or below ``ZERO`` relative to the largest are drawn there as exact zeros)."""
    vals = [v for v in values if isinstance(v, (int, float)) and v == v]
    top = max(vals, default=1.0) or 1.0
    pos = [v for v in vals if v > ZERO * top]
    return (min(pos) if pos else top) / 10


def plot_card(summary: dict[str, list[dict[str, Any]]], out: Path, style: dict[str, dict[str, Any]]) -> str | None:
    """Bias-variance scatter of the gradient card: one panel per model, relative std (x)
    against relative bias (y), log axes, ± 1 s.e. bars; exact zeros at the axis floor
    with a hollow marker and the legend entry "exactly 0"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tasks = [t for t, rows in summary.items() if rows and rows[0]["kind"] == "card"]
    if not tasks:
        return None
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.4 * nrows), squeeze=False)
    used: dict[str, dict[str, Any]] = {}
    any_zero = False
    for ax, task in zip(axes.flat, tasks):
        rows = [r for r in summary[task] if isinstance(r.get("mse"), (int, float))]
        xs = [r["rel_std"] for r in rows]
        ys = [r["rel_bias"] for r in rows]
        fx, fy = _floor(xs), _floor(ys)
        for r in rows:
            st = style.get(r["label"], {"color": "k", "marker": "o"})
            used[r["label"]] = st
            x, y = r["rel_std"], r["rel_bias"]
            zx, zy = x <= fx, y <= fy
            px, py = (fx if zx else x), (fy if zy else y)
            hollow = zx or zy
            any_zero |= hollow
            ax.errorbar(
                [px], [py],
                xerr=None if zx or r.get("rel_std_se") is None else [[min(r["rel_std_se"], x - fx)], [r["rel_std_se"]]],
                yerr=None if zy or r.get("rel_bias_se") is None else [[min(r["rel_bias_se"], y - fy)], [r["rel_bias_se"]]],
                fmt=st["marker"], color=st["color"], markersize=7, elinewidth=0.8,
                markerfacecolor="none" if hollow else st["color"],
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        if any(x <= fx for x in xs):
            ax.axvline(fx, color="0.6", linewidth=0.8, linestyle=":")
        if any(y <= fy for y in ys):
            ax.axhline(fy, color="0.6", linewidth=0.8, linestyle=":")
            ax.annotate("exactly 0", (1.0, fy), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize=7, color="0.4")
        ax.set_xlabel("relative std  sqrt(tr Σ) / |g|")
        ax.set_ylabel("relative bias  |E ĝ - g| / |g| (debiased)")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3, which="major")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles = [Line2D([], [], linestyle="", marker=st["marker"], color=st["color"], markersize=6) for st in used.values()]
    labels = list(used)
    if any_zero:
        handles.append(Line2D([], [], linestyle="", marker="o", color="0.3", markerfacecolor="none", markersize=7))
        labels.append("hollow: exactly 0 (at the floor)")
    legend = _legend(fig, handles, labels, "mean over seeds and checkpoints; bars ± 1 s.e.")
    fig.tight_layout()
    name = "gradient_card.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend,), bbox_inches="tight")
    plt.close(fig)
    return name


def plot_bias_variance(results: list[dict[str, Any]], out: Path, style: dict[str, dict[str, Any]]) -> str | None:
    """The training toys' bias against variance at the initial logits (exact zeros at the
    floor, hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tasks = sorted({r["task"] for r in results if kind_of(r["task_name"]) == "toy" and not r.get("error")})
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.6), squeeze=False)
    used: dict[str, dict[str, Any]] = {}
    any_zero = False
    for ax, task in zip(axes[0], tasks):
        pts = []
        for label, rs in _curve_groups(results, task).items():
            var = statistics.fmean(r["metrics"]["variance"] for r in rs)
            bias = statistics.fmean(r["metrics"]["bias"] for r in rs)
            z = statistics.fmean(r["metrics"]["bias_z"] for r in rs)
            pts.append((label, var, bias, z))
        fx, fy = _floor([p[1] for p in pts]), _floor([p[2] for p in pts])
        for label, var, bias, z in pts:
            st = style.get(label.split(" K=")[0], {"color": "k", "marker": "o"})
            used[label] = st
            hollow = var <= fx or bias <= fy or z <= 5
            any_zero |= var <= fx or bias <= fy
            ax.plot([max(var, fx)], [max(bias, fy)], linestyle="", marker=st["marker"], color=st["color"], markersize=7,
                    markerfacecolor="none" if hollow else st["color"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient variance at the initial logits")
        ax.set_ylabel("|mean estimate - exact gradient|")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], linestyle="", marker=st["marker"], color=st["color"], markersize=6) for st in used.values()]
    labels = list(used)
    handles.append(Line2D([], [], linestyle="", marker="o", color="0.3", markerfacecolor="none", markersize=7))
    labels.append("hollow: bias within 5 s.e. of 0" + ("; at the floor: exactly 0" if any_zero else ""))
    legend = _legend(fig, handles, labels)
    fig.tight_layout()
    name = "toy_bias_variance.png"
    fig.savefig(out / name, dpi=110, bbox_extra_artists=(legend,), bbox_inches="tight")
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


_TASK_TEXT["card"] = (
    "Every estimator's gradient w.r.t. the logits against the exact gradient of the same "
    "objective (enumeration or closed form), at three checkpoints (start, middle, end) of one "
    "exact-gradient training run shared by every estimator; estimators with state of their own "
    "(learned control variates, baselines) first warm it up on the frozen model. Each row uses "
    "the largest `num_samples` *K* whose objective evaluations (*evals*, from `est.evaluations`) "
    "fit the budget (*(over)*: its smallest call costs more; *MSE x evals/budget* then compares it at "
    "equal cost, exactly so for an unbiased estimator whose variance falls as 1/evaluations). *rel. MSE* `= E|ĝ - g|² / |g|²`; *rel. bias* `= sqrt(max(0, |ḡ - g|² - tr Σ̂ / N)) / |g|` "
    "(squared bias debiased for the Monte Carlo noise, so unbiased estimators show about 0); "
    "*rel. std* `= sqrt(tr Σ̂) / |g|`; *cosine*: mean cosine similarity of one estimate with `g`; "
    "all averaged over the checkpoints; *ms/grad*: CPU time per gradient estimate in the batched call "
    "(process CPU time with one torch thread, so runs sharing the machine do not inflate it); *x reinforce*: "
    "its ratio to plain REINFORCE's on the same model."
)

ALPHA = 0.05
TEST_NAME = (
    "one-sided paired t-test at α = 0.05 over (seed, checkpoint) pairs, on log ratios for "
    "positive metrics (MSE, std, variance) and on differences otherwise; no correction for "
    "multiple comparisons"
)


def _paired(results: list[dict[str, Any]], task: str, key: str) -> dict[tuple[str, int], dict[tuple[int, int], float]]:
    """Per (label, K): ``{(seed, checkpoint): value}`` of ``key`` (checkpoint 0 for final metrics)."""
    out: dict[tuple[str, int], dict[tuple[int, int], float]] = defaultdict(dict)
    for r in results:
        if r["task"] != task or r.get("error"):
            continue
        label = (r["label"], r["num_samples"])
        per = r.get("curves", {}).get(key) if kind_of(r["task_name"]) == "card" else None
        if isinstance(per, list):
            for c, v in enumerate(per):
                if isinstance(v, (int, float)):
                    out[label][(r["seed"], c)] = float(v)
        elif isinstance(r["metrics"].get(key), (int, float)):
            out[label][(r["seed"], 0)] = float(r["metrics"][key])
    return out


def compare(results: list[dict[str, Any]], rows: list[dict[str, Any]], task: str, key: str) -> dict[str, Any]:
    """The best row by ``key`` and, for every other, whether it is significantly worse
    (:data:`TEST_NAME`), with the effect: a ratio for positive metrics, else a difference."""
    from scipy import stats

    higher = key in HIGHER_IS_BETTER
    ranked = [r for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    if not ranked:
        return {}
    ranked.sort(key=lambda r: -r[key] if higher else r[key])
    best = ranked[0]
    multi_k = len({r["num_samples"] for r in rows}) > 1 and rows[0]["kind"] != "card"

    def name(r: dict[str, Any]) -> str:
        return r["label"] + (f" K={r['num_samples']}" if multi_k else "")

    values = _paired(results, task, key)
    base = values.get((best["label"], best["num_samples"]), {})
    within, worse, untested = [], [], []
    for r in ranked[1:]:
        other = values.get((r["label"], r["num_samples"]), {})
        common = sorted(set(base) & set(other))
        if len(common) < 2:
            untested.append(name(r))
            continue
        a = [base[c] for c in common]
        b = [other[c] for c in common]
        ratio = key in RATIO_METRICS and min(a + b) > 0
        if ratio:
            d = [math.log(y / x) for x, y in zip(a, b)]
        else:
            d = [(x - y) if higher else (y - x) for x, y in zip(a, b)]
        n = len(d)
        mean = statistics.fmean(d)
        sd = statistics.stdev(d)
        if sd == 0:
            p = 0.0 if mean > 0 else 1.0
        else:
            p = float(stats.t.sf(mean / (sd / math.sqrt(n)), n - 1))
        se = sd / math.sqrt(n)
        effect = (math.exp(mean), math.exp(mean) * se) if ratio else (mean, se)
        entry = {"label": name(r), "p": p, "effect": effect[0], "effect_se": effect[1], "ratio": ratio, "pairs": n}
        (worse if p < ALPHA else within).append(entry)
    return {"metric": key, "best": name(best), "value": best[key], "se": best.get(key + "_se"),
            "within": within, "worse": worse, "untested": untested}


def _statement(cmp: dict[str, Any], title: str, limit: int = 6) -> str:
    if not cmp:
        return f"- *{title}*: no finished run."
    text = f"- *{title}*: `{cmp['best']}` best ({_fmt(cmp['value'], '.3g', cmp['se'])})"
    if cmp["within"]:
        text += "; within noise: " + ", ".join(f"`{e['label']}`" for e in cmp["within"])
    if cmp["worse"]:
        shown = []
        for e in cmp["worse"][:limit]:
            if e["ratio"]:
                shown.append(f"`{e['label']}` {e['effect']:.3g}x worse (± {e['effect_se']:.2g})")
            else:
                shown.append(f"`{e['label']}` worse by {e['effect']:.3g} (± {e['effect_se']:.2g})")
        more = len(cmp["worse"]) - limit
        text += "; " + ", ".join(shown) + (f", and {more} more significantly worse" if more > 0 else "")
    if cmp["untested"]:
        text += "; not tested (fewer than 2 paired values, e.g. 1 seed): " + ", ".join(f"`{u}`" for u in cmp["untested"])
    return text + "."


def rebuild(out: Path, *, command: str | None = None) -> dict[str, Any]:
    """Rebuild ``results.json``, ``results.csv``, ``report.md`` and the plots of ``out`` from
    its ``config.json``, ``meta.json`` and ``results.jsonl`` (``relaxit bench --report-only``).

    Returns ``results`` (finished runs, planned order), ``summary`` and ``missing`` (planned
    run ids without a successful result: the report is marked partial)."""
    import relaxit
    from relaxit.bench import store

    out = Path(out)
    config = json.loads((out / "config.json").read_text())
    meta = store.read_meta(out)
    results = store.read_results(out)
    planned = meta.get("planned") or [r["run_id"] for r in results]
    pos = {rid: i for i, rid in enumerate(planned)}
    results.sort(key=lambda r: pos.get(r["run_id"], len(pos)))
    finished = {r["run_id"] for r in results if not r.get("error")}
    missing = [rid for rid in planned if rid not in finished and rid not in {r["run_id"] for r in results}]
    notes = meta.get("notes", [])
    sessions = meta.get("sessions", [])
    wall_s = sum(s.get("wall_s", 0.0) for s in sessions)
    command = command or meta.get("command", "relaxit bench")
    started = meta.get("started", "-")
    summary = summarise(results)
    estimators = {}
    for name in sorted({r["estimator"]["name"] for r in results}):
        try:
            info = relaxit.describe(name).to_dict()
        except Exception:  # noqa: BLE001 - a plugin gone since the run: keep the results
            continue
        info.pop("config_schema", None)
        estimators[name] = info
    style = styles([r["label"] for r in results])
    comparisons: dict[str, dict[str, Any]] = {}
    for task, rows in summary.items():
        kind = rows[0]["kind"]
        keys = [c[0] for c in COLUMNS[kind]] if kind == "card" else [_columns(kind, rows)[0][0]]
        comparisons[task] = {k: compare(results, rows, task, k) for k in keys}
    payload = {
        "relaxit_bench": 2,
        "command": command,
        "started": started,
        "wall_s": wall_s,
        "partial": bool(missing),
        "missing": missing,
        "versions": versions(),
        "seeds": config["seeds"],
        "config": config,
        "estimators": estimators,
        "notes": notes,
        "summary": summary,
        "significance": {"test": TEST_NAME, "alpha": ALPHA, "tasks": comparisons},
        "runs": results,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    write_csv(results, out / "results.csv")

    files: list[str] = []
    card_plot = plot_card(summary, out, style)
    if card_plot:
        files.append(card_plot)
    plots: dict[str, list[str]] = {}
    for task in summary:
        plots[task] = plot_task(results, task, out, style)
        files += plots[task]
    scatter = plot_bias_variance(results, out, style)
    if scatter:
        files.append(scatter)
    meta["files"] = files
    store.write_meta(out, meta)

    v = payload["versions"]
    lines = ["# relaxit bench report", ""]
    if missing:
        lines += [
            f"> **PARTIAL REPORT**: {len(missing)} of {len(planned)} planned runs have no result (interrupted). "
            f"`relaxit bench --resume -o {shlex.quote(str(out))}` runs only those.",
            "",
        ]
    lines += [
        f"- command: `{command}`",
        f"- started: {started}; wall time {wall_s:.1f} s over {len(sessions)} session(s); {len(results)} runs "
        f"({sum(1 for r in results if r.get('error'))} failed)",
        f"- preset: {config.get('preset') or '-'}; seeds: {config['seeds']}; device: {config['device']}; "
        f"workers: {config['workers']} ({config['backend']}); torch threads per run: {config['threads']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- reproduce: `relaxit bench --config config.json` (the resolved config of this run, every "
        "estimator listed with its full config); rebuild this report: `relaxit bench --report-only -o DIR`",
        "",
    ]
    card_tasks = [t for t, rows in summary.items() if rows[0]["kind"] == "card"]
    other_tasks = [t for t in summary if t not in card_tasks]
    if card_tasks:
        lines += ["## Report card: gradients against the exact gradient, at equal cost", ""]
        lines += [_TASK_TEXT["card"], "", "Rows are sorted by relative MSE; ± is one standard error "
                  "(over seeds; with one seed, the Monte Carlo standard error). Significance: " + TEST_NAME + ".", ""]
        for task in card_tasks:
            lines.append(format_tables({task: summary[task]}, markdown=True))
            lines.append("")
            for key, title, _ in COLUMNS["card"]:
                lines.append(_statement(comparisons[task][key], title))
            lines.append("")
        if card_plot:
            lines += [f"![{card_plot}]({card_plot})", ""]
    if other_tasks:
        lines += ["## Training tasks", ""]
        lines.append(
            "Rows are sorted by the task's first metric (mean over seeds; ± is the standard error over "
            "seeds, absent with 1 seed). *ms/step* is the wall time of a training step (forward, backward, "
            "optimiser; evaluations excluded); *x fastest* its ratio to the fastest estimator of the task."
        )
        lines.append("")
    for task in other_tasks:
        rows = summary[task]
        kind = rows[0]["kind"]
        lines.append(format_tables({task: rows}, markdown=True))
        lines.append("")
        lines.append(_TASK_TEXT.get(kind, ""))
        lines.append("")
        seeds = max(r.get("ok_seeds", 0) for r in rows)
        key, title, _ = _columns(kind, rows)[0]
        if seeds < 2:
            lines.append(f"- *{title}*: `{rows[0]['label']}` lowest observed; 1 seed: no error bars and no "
                         "significance test (run more seeds, e.g. `--seeds 0,1,2`).")
        else:
            lines.append(_statement(comparisons[task][key], title))
        lines.append("")
        for name in plots.get(task, []):
            lines += [f"![{name}]({name})", ""]
        if kind == "toy" and scatter and task == min(t for t in other_tasks if summary[t][0]["kind"] == "toy"):
            lines += [f"![{scatter}]({scatter})", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    failed = [r for r in results if r.get("error")]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- `{r['run_id']}`: {r['error'].strip().splitlines()[-1]}")
        lines.append("")
    if missing:
        lines += ["## Missing runs", "", *[f"- `{m}`" for m in missing], ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"results": results, "summary": summary, "missing": missing}
