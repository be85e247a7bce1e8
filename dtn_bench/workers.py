"""Jobs side by side on the CPU: one process per job at a time, this process's torch threads split between them.

A training suite on a CPU (``lra listops``, ``robustness``) gains from running several small runs at once, each with
a share of the threads, over one run with all of them (a small model's step does not use two threads well). This
module holds that machinery once:

- :class:`SideBySide` keeps a pool of ``workers`` spawned processes (spawn, not fork: this process may already run
  torch / numba threads), started with SIGINT held back (:func:`dtn_bench.processes.sigint_held`) and stopped with
  :func:`dtn_bench.processes.stop_pool`. Each process ignores Ctrl-C and dies with its parent
  (:func:`dtn_bench.processes.start_worker`), runs the caller's ``setup(*args)`` first (before any torch operation,
  e.g. flushing denormals, which the thread pool then inherits), then takes ``max(1, threads // workers)`` torch
  threads.
- :meth:`SideBySide.run` runs jobs ``(function, args)`` (module-level functions, picklable arguments) and yields
  their results in the order of the jobs, passing the workers' events on to the parent's ``emit`` while it waits.
  A job that fails stops the others (its error is raised in the parent); so does Ctrl-C.
- A job reports progress with :func:`report` (``report(*args, **kwargs)`` becomes ``emit(*args, **kwargs)`` in the
  parent; a worker whose parent is gone ends there, :func:`dtn_bench.processes.exit_if_orphaned`); called in the
  parent itself (``workers == 1``: :func:`run_jobs` runs the jobs in this process), it calls the parent's ``emit``
  directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

Job = tuple[Callable[..., Any], tuple]
_STATE: dict[str, Any] = {}


def count(requested: int, dist, jobs: int, what: str) -> int:
    """Processes to run ``jobs`` in, at most one per job (``lra listops --workers``, ``robustness --workers``).

    ``requested``, or with 0 (auto) one per torch thread on the CPU in a single process and 1 elsewhere.

    Raises:
        DTNBenchError: ``requested > 1`` under torchrun or off the CPU; ``what`` says what runs side by side
            (``lra listops: --workers 2 trains runs``).
    """
    import torch

    from dtn_bench.errors import DTNBenchError

    alone_on_cpu = dist.world == 1 and dist.device.type == "cpu"
    if requested > 1 and not alone_on_cpu:
        where = f"{dist.world} processes (torchrun)" if dist.world > 1 else f"device {dist.device}"
        raise DTNBenchError(f"{what} side by side in one job on the CPU; this job runs on {where}: use --workers 1")
    workers = requested or (torch.get_num_threads() if alone_on_cpu else 1)
    return max(1, min(workers, jobs))


def report(*args: Any, **kwargs: Any) -> None:
    """Pass an event on to the parent's ``emit(*args, **kwargs)`` (called directly when this is the parent)."""
    queue = _STATE.get("events")
    if queue is not None:
        from dtn_bench.processes import exit_if_orphaned

        exit_if_orphaned()
        queue.put((args, kwargs))
    else:
        _STATE.get("emit", lambda *a, **k: None)(*args, **kwargs)


def _start(threads: int, events, setup: Callable[..., None] | None, setup_args: tuple) -> None:
    """A worker process: Ctrl-C ignored, dies with its parent, the caller's setup, torch threads, the event queue."""
    from dtn_bench.processes import start_worker

    start_worker()  # the parent stops the pool on Ctrl-C; the worker dies with the parent
    if setup is not None:
        setup(*setup_args)  # before any torch operation (e.g. denormals flushed: the thread pool inherits it)
    import torch

    torch.set_num_threads(threads)
    _STATE["events"] = events


class SideBySide:
    """A pool of ``workers`` processes with ``max(1, threads // workers)`` torch threads each (module docstring).

    Use as a context manager; :meth:`run` may be called several times (the processes are kept in between).
    """

    def __init__(self, workers: int, emit: Callable[..., None], setup: Callable[..., None] | None = None,
                 setup_args: tuple = ()):
        """Start ``workers`` processes, each running ``setup(*setup_args)`` first; their events go to ``emit``."""
        import multiprocessing as mp

        import torch

        from dtn_bench.processes import sigint_held

        spawn = mp.get_context("spawn")  # no fork of a process whose torch / numba threads are running
        self.emit = emit
        self.workers = workers
        self.threads = max(1, torch.get_num_threads() // workers)
        self.events = spawn.Queue()
        with sigint_held():  # a Ctrl-C while the workers start reaches this process only, once they exist
            self.pool = spawn.Pool(workers, _start, (self.threads, self.events, setup, setup_args))

    def _pass_on(self, timeout: float | None = None) -> bool:
        """Emit the next worker event (waiting up to ``timeout`` seconds); whether there was one."""
        import queue

        try:
            args, kwargs = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return False
        self.emit(*args, **kwargs)
        return True

    def run(self, jobs: Sequence[Job]) -> Iterator[Any]:
        """Run ``jobs`` in the pool; yields each job's result in the order of ``jobs`` (its events passed on first)."""
        pending = [self.pool.apply_async(fn, tuple(args)) for fn, args in jobs]
        for job in pending:
            while not job.ready():
                self._pass_on(timeout=0.1)
            result = job.get()
            while self._pass_on():  # the events sent before the result
                pass
            yield result

    def close(self) -> None:
        """Stop the processes (finished or not)."""
        from dtn_bench.processes import stop_pool

        stop_pool(self.pool)

    def __enter__(self) -> SideBySide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_jobs(jobs: Sequence[Job], emit: Callable[..., None]) -> Iterator[Any]:
    """Run ``jobs`` one after another in this process (their :func:`report` calls go to ``emit``); yields results."""
    for fn, args in jobs:
        previous = _STATE.get("emit")
        _STATE["emit"] = emit
        try:
            result = fn(*args)
        finally:
            _STATE["emit"] = previous
        yield result
