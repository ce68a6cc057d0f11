"""Executing the run grid: in this process, in a local process pool, or on Ray.

Runs are independent; every run fixes its own seed and torch thread count, so its numbers
do not depend on the backend, the number of workers or the order of execution.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from relaxit.bench.selection import Run

__all__ = ["execute"]


# ----------------------------------------------------------------- progress display
class Progress:
    """An overall bar (steps of all runs, with ETA) and one bar per running run, on a
    terminal; one summary line per finished run in any case (unless disabled)."""

    def __init__(self, runs: list[Run], enabled: bool, stream=None):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bars_on = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.total_runs = len(runs)
        self.finished = 0
        self.total_steps = sum(r.steps for r in runs)
        self.done_steps = 0
        self.t0 = time.perf_counter()
        self.overall = tqdm(
            total=self.total_steps,
            desc=f"bench: {len(runs)} runs",
            unit="step",
            position=0,
            disable=not self.bars_on,
            file=self.stream,
            dynamic_ncols=True,
        )
        self.bars: dict[str, Any] = {}
        self.steps: dict[str, int] = {}
        self.free_slots: list[int] = []
        self.next_slot = 1
        self.done_ids: set[str] = set()

    def start(self, run: Run) -> None:
        if run.run_id in self.bars:
            return
        slot = self.free_slots.pop(0) if self.free_slots else self.next_slot
        if slot == self.next_slot:
            self.next_slot += 1
        self.bars[run.run_id] = self._tqdm(
            total=run.steps,
            desc=run.run_id,
            unit="step",
            position=slot,
            leave=False,
            disable=not self.bars_on,
            file=self.stream,
            dynamic_ncols=True,
        )
        self.bars[run.run_id].slot = slot
        self.steps[run.run_id] = 0

    def update(self, run: Run, step: int) -> None:
        self.start(run)
        delta = step - self.steps[run.run_id]
        if delta > 0:
            self.bars[run.run_id].update(delta)
            self.overall.update(delta)
            self.done_steps += delta
            self.steps[run.run_id] = step

    def eta(self) -> str:
        """Remaining time at the mean rate so far (steps of all runs)."""
        if not self.done_steps:
            return "?"
        left = (time.perf_counter() - self.t0) / self.done_steps * (self.total_steps - self.done_steps)
        return f"{int(left // 60)}m{int(left % 60):02d}s"

    def finish(self, run: Run, result: dict[str, Any]) -> None:
        self.update(run, run.steps)
        bar = self.bars.pop(run.run_id)
        self.free_slots.append(bar.slot)
        self.free_slots.sort()
        bar.close()
        self.finished += 1
        self.done_ids.add(run.run_id)
        if self.enabled:
            self._tqdm.write(
                f"[{self.finished}/{self.total_runs}, ETA {self.eta()}] {summary_line(result)}", file=self.stream
            )

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.overall.close()


def summary_line(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"{result['run_id']}: FAILED: {result['error'].strip().splitlines()[-1]}"
    m, t = result["metrics"], result["timing"]
    keys = [k for k in ("mse", "rel_bias", "test_neg_elbo", "test_neg_iwae", "exact_loss", "bias", "test_mse", "recovered",
                        "grad_var") if k in m]
    shown = ", ".join(f"{k} {m[k]:.4g}" for k in keys if m[k] is not None)
    return f"{result['run_id']}: {shown}; {t['ms_per_step']:.2f} ms/step, {t['wall_s']:.1f} s"


# --------------------------------------------------------------------- one run
def _safe_run(run: dict[str, Any], report: Callable[[str, int], None]) -> dict[str, Any]:
    from relaxit.bench.tasks import run_identity, run_task

    t0 = time.perf_counter()
    try:
        report("start", 0)
        return run_task(run, lambda step: report("step", step))
    except Exception:  # noqa: BLE001 - a failing run is reported, the others go on
        return {
            **run_identity(run),
            "error": traceback.format_exc(),
            "timing": {"steps": run.get("steps") or run["task"]["steps"], "wall_s": time.perf_counter() - t0},
        }


_QUEUE = None


def _init_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue
    # Ctrl-C on a terminal reaches the whole process group: the parent alone handles it
    # (it stops the pool and keeps the finished runs).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    _exit_with_parent(os.getppid())


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this worker when its parent is gone (killed with SIGKILL, say, which leaves it no
    time to stop the pool): a daemon thread polls the parent id, and the worker would
    otherwise run its (possibly hours-long) run for nobody."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="relaxit-bench-parent-watch", daemon=True).start()


def _throttled(send: Callable[[str, int], None], every: float = 0.1) -> Callable[[str, int], None]:
    """Forward start events and at most one step event per ``every`` seconds."""
    last = [0.0]

    def report(kind: str, step: int) -> None:
        now = time.perf_counter()
        if kind != "step" or now - last[0] >= every:
            last[0] = now
            send(kind, step)

    return report


def _pool_run(run: dict[str, Any]) -> dict[str, Any]:
    queue = _QUEUE
    return _safe_run(run, _throttled(lambda kind, step: queue.put((run["run_id"], kind, step))))


def _ray_run(run: dict[str, Any], queue) -> dict[str, Any]:
    def report(kind: str, step: int) -> None:
        if queue is not None:
            try:
                queue.put_nowait((run["run_id"], kind, step))
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

    return _safe_run(run, _throttled(report))


# ------------------------------------------------------------------- backends
def unblock_sigint() -> frozenset | None:
    """Unblock SIGINT in this thread when it has Python's default handler but arrives blocked,
    and return the previous mask to restore (``None``: nothing changed).

    A blocked signal mask is inherited across ``exec``: a process started by a thread that
    happened to block SIGINT (the standard library's ``multiprocessing.resource_tracker``
    blocks it around its spawn, for one) would hold Ctrl-C pending until something unblocks
    it.  An ignored SIGINT (``nohup``, or a background job of a non-interactive shell) or a
    handler of the user's is left alone."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    if signal.SIGINT not in old:
        return None
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return frozenset(old)


class _InterruptRecord:
    """Ctrl-C while the runs are spread over a pool.

    Inside :meth:`watch`, SIGINT raises ``KeyboardInterrupt`` as Python's default handler
    does, and is also recorded: an interrupt raised while a finalizer or a weakref callback
    happens to run is printed as "Exception ignored" and dropped by Python, and the pool's
    loop would then wait for runs that may take hours.  The loop calls :meth:`check` every
    0.2 s, which raises the recorded interrupt again.  Only the main thread, and only where
    SIGINT has Python's default handler (a user's own handler or an ignored SIGINT, as under
    ``nohup``, is left alone).
    """

    def __init__(self) -> None:
        self.seen = False

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt

    def watch(self):
        import contextlib
        import threading

        @contextlib.contextmanager
        def scope():
            own = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
            mask = unblock_sigint() if own else None
            if own:
                signal.signal(signal.SIGINT, self._handler)
            try:
                yield self
            finally:
                if own:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                if mask is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)

        return scope()


def execute(
    runs: list[Run],
    *,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    stream=None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every run and return the results in the order of ``runs``.

    ``on_result`` is called in this process with each result the moment its run finishes
    (the bench appends it to ``results.jsonl``).  On ``KeyboardInterrupt`` the workers are
    stopped at once and the interrupt propagates; what finished before has been passed to
    ``on_result``.
    """
    order = sorted(range(len(runs)), key=lambda i: -runs[i].cost())
    display = Progress(runs, progress, stream)
    results: dict[int, dict[str, Any]] = {}

    def finished(i: int, result: dict[str, Any]) -> None:
        results[i] = result
        if on_result is not None:
            on_result(result)
        display.finish(runs[i], result)

    try:
        if backend == "ray":
            _execute_ray(runs, order, workers, ray_address, display, finished)
        elif workers <= 1 or len(runs) <= 1:
            for i in order:
                run = runs[i]
                display.start(run)
                finished(i, _safe_run(asdict(run), lambda kind, step, run=run: display.update(run, step)))
        else:
            with _InterruptRecord().watch() as interrupts:
                _execute_pool(runs, order, workers, display, finished, interrupts.check)
    finally:
        display.close()
    return [results[i] for i in range(len(runs))]


def _drain(queue, by_id: dict[str, Run], display: Progress, timeout: float) -> None:
    import queue as queue_mod

    block = True
    while True:
        try:
            run_id, kind, step = queue.get(block=block, timeout=timeout if block else None)
        except (queue_mod.Empty, Exception):  # noqa: BLE001 - Ray's Empty is its own class
            return
        block = False
        run = by_id.get(run_id)
        if run is not None and run_id not in display.done_ids:
            display.update(run, step)


def _execute_pool(runs, order, workers, display, finished, check_interrupt=lambda: None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # fork after torch's thread pools start is unsafe
    queue = ctx.Queue()
    by_id = {r.run_id: r for r in runs}
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(runs)), mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    )
    try:
        futures = {pool.submit(_pool_run, asdict(runs[i])): i for i in order}
        pending = set(futures)
        while pending:
            check_interrupt()  # an interrupt Python dropped (see _InterruptRecord)
            # Finished runs first, so that their display slots are free for the next ones.
            for fut in [f for f in pending if f.done()]:
                pending.discard(fut)
                finished(futures[fut], fut.result())
            if pending:
                _drain(queue, by_id, display, 0.2)
    except BaseException:
        # Interrupted (Ctrl-C) or failing: stop the workers now rather than after their runs.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        queue.cancel_join_thread()
        raise
    pool.shutdown(wait=True)


def _execute_ray(runs, order, workers, address, display, finished) -> None:
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as exc:
        raise RuntimeError("the Ray backend needs Ray: pip install 'relaxit[ray]'") from exc

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    queue = Queue()
    remote = ray.remote(num_cpus=1)(_ray_run)
    by_id = {r.run_id: r for r in runs}
    refs = {remote.remote(asdict(runs[i]), queue): i for i in order}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            for ref in ready:
                finished(refs[ref], ray.get(ref))
            if pending:
                _drain(queue, by_id, display, 0.2)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        queue.shutdown()
