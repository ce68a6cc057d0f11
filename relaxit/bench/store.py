"""The output directory of a bench run: what it holds, refusing to overwrite another run's
results, and ``results.jsonl``, to which each run is appended the moment it finishes.

Files: ``config.json`` (the resolved config, written before the first run), ``meta.json``
(command, start, planned run ids, notes, wall time of each session), ``results.jsonl``
(one finished run a line, appended and flushed to disk as runs finish), and what the
report rebuilds from these: ``results.json``, ``results.csv``, ``report.md`` and the plots.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["BenchError", "prepare", "clear", "holds_results", "append_result", "read_results", "read_meta", "write_meta"]

RESULTS = "results.jsonl"
#: Files a run writes (plots are listed in meta.json and matched by their suffixes).
OWN_FILES = ("results.jsonl", "results.json", "results.csv", "report.md", "config.json", "meta.json")
PLOT_SUFFIXES = ("_curves.png", "_grad_var.png", "_bias_variance.png", "_card.png", "_checkpoints.png")


class BenchError(Exception):
    """A user error of the bench (bad option, unwritable or occupied output directory, no
    runs selected): the command prints its message on one line and exits with status 2."""


def holds_results(out: Path) -> bool:
    return (out / RESULTS).exists() or (out / "results.json").exists()


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the output directory {str(out)!r}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise BenchError(f"the output {str(out)!r} is not a directory")
    probe = out / f".relaxit-write-test-{uuid.uuid4().hex}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"the output directory {str(out)!r} is not writable: {exc.strerror or exc}") from None


def clear(out: Path) -> None:
    """Remove the files of an earlier run from ``out``."""
    meta = read_meta(out)
    names = set(OWN_FILES) | set(meta.get("files", []))
    names |= {p.name for p in out.glob("*.png") if p.name.endswith(PLOT_SUFFIXES)}
    for name in names:
        path = out / name
        if path.is_file():
            path.unlink()


def prepare(out: Path, *, resume: bool = False, overwrite: bool = False, clear: bool = True) -> None:
    """Check, before any work, that ``out`` can be written and holds no other run's results
    (unless ``overwrite``: they are removed when ``clear``; or ``resume``: they are continued)."""
    if resume and overwrite:
        raise BenchError("--resume and --overwrite exclude each other")
    _check_writable(out)
    if resume:
        if not (out / "config.json").is_file():
            raise BenchError(f"nothing to resume in {str(out)!r}: it has no config.json of an earlier run")
        return
    if holds_results(out):
        if not overwrite:
            n = len(read_results(out))
            raise BenchError(
                f"{str(out)!r} holds the results of another run ({n} finished runs); pass --resume to finish "
                "that run, --overwrite to replace it, or choose another --output"
            )
        if clear:
            clear(out)


def append_result(out: Path, result: dict[str, Any]) -> None:
    """Append one finished run to ``results.jsonl`` and flush it to disk."""
    line = json.dumps(result, default=str) + "\n"
    path = out / RESULTS
    with path.open("a+b") as fh:
        if fh.tell() > 0:  # after a line torn by an interrupted write, start a new line
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())


def read_results(out: Path) -> list[dict[str, Any]]:
    """The runs in ``results.jsonl``, one per run id (the last line wins); a truncated last
    line (an interrupted write) is skipped."""
    path = out / RESULTS
    if not path.is_file():
        return []
    by_id: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and "run_id" in r:
            by_id.pop(r["run_id"], None)
            by_id[r["run_id"]] = r
    return list(by_id.values())


def read_meta(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / "meta.json")
