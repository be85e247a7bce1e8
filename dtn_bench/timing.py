"""Timing and memory primitives shared by every benchmark (one home: profile, bench norms, lra-scaling, pipeline).

- :func:`sync` waits for a CUDA device's queue (nothing to do on the CPU): the only sync points of a timing.
- :func:`time_ms` times ``iters`` calls after ``warmup`` calls, synchronising before the first and after each.
- :func:`interleaved_ms` times several units in interleaved repetitions (ABBA order), for ratios on a noisy machine.
- :func:`background_load` keeps N busy-loop processes running while a block runs (a loaded machine, made on purpose).
- :func:`peak_mem_mib` / :func:`reset_peak` read and reset the peak memory: ``torch.cuda.max_memory_allocated`` on a
  GPU, the whole process's maximum resident set size on the CPU (which cannot be reset: labelled as such).
- :func:`keep_freed_memory` makes glibc keep freed memory in the process (as jemalloc and tcmalloc do).
- :func:`flush_denormals` / :func:`denormals_flushed` flush denormal floats to zero on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], warmup: int, iters: int, device: torch.device | str) -> list[float]:
    """Wall times in ms of ``iters`` calls of ``fn`` after ``warmup`` untimed calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def interleaved_ms(units: Sequence[Callable[[], object]], warmup: int, repeats: int, iters: int,
                   device: torch.device | str) -> list[list[float]]:
    """Mean ms per call of each unit, as ``[unit][repetition]``, timed in interleaved repetitions.

    First ``warmup`` calls of each unit, then ``repeats`` repetitions in which each unit runs ``iters`` calls back to
    back, the order of the units reversed every other repetition (ABBA), so that every unit sees the same drift of a
    shared, noisy machine and repetition ``k`` of one unit pairs with repetition ``k`` of another.
    """
    for fn in units:
        time_ms(fn, warmup, 0, device)
    out: list[list[float]] = [[] for _ in units]
    for rep in range(repeats):
        order = range(len(units)) if rep % 2 == 0 else reversed(range(len(units)))
        for i in order:
            out[i].append(sum(time_ms(units[i], 0, iters, device)) / iters)
    return out


BUSY_LOOP = """
import os
import sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""
"""The code of one background-load process: a pure-Python busy loop at the parent's priority, one core's worth of
work, that ends by itself within a few ms once its parent is gone (it checks the parent's pid between bursts). The
parent's pid is given on the command line: read with ``os.getppid()`` at start-up it would be the pid the process was
re-parented to when the parent died before the interpreter started, and the loop would never end."""


@contextmanager
def background_load(procs: int) -> Iterator[list[subprocess.Popen]]:
    """``procs`` busy-loop processes (:data:`BUSY_LOOP`) running while the block runs, stopped after it.

    A documented, reproducible load: each process keeps one core busy at the caller's priority (they inherit its nice
    value), as another job on a shared machine would. They are killed when the block ends (error or not), and end by
    themselves if this process dies first. ``procs = 0`` starts nothing.
    """
    started: list[subprocess.Popen] = []
    try:
        for _ in range(procs):
            started.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        yield started
    finally:
        for p in started:
            p.kill()
        for p in started:
            p.wait()


def peak_mem_mib(device: torch.device | str) -> tuple[float, str]:
    """``(peak MiB, what it is)``: ``cuda_max_memory_allocated`` on a GPU, ``cpu_process_max_rss`` on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "cpu_process_max_rss"


def reset_peak(device: torch.device | str) -> None:
    """Start a new peak-memory window on a GPU (synchronise, empty the cache, reset the counters)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def flush_denormals(on: bool = True) -> bool:
    """Flush denormal floats to zero (FTZ and DAZ) on the CPU, or stop; whether the CPU supports it.

    ``torch.set_flush_denormal`` sets this thread's floating-point mode; threads started later inherit it, and torch's
    and numba's thread pools start at their first parallel loop, so a job sets it before any. Denormals (below
    1.2e-38 in fp32) cost far more per operation on x86: in a Reformer ListOps step at the lra shape they made the
    matrix products twice as slow with DTN (the step 0.75x LN's tokens/s; 0.92x flushed, and LN 15% faster). They are
    below fp32's normal range, so flushing them changes no result beyond that.
    """
    import torch

    return bool(torch.set_flush_denormal(on))


@contextmanager
def denormals_flushed(on: bool = True) -> Iterator[bool]:
    """Denormals flushed to zero (:func:`flush_denormals`) while the block runs, when ``on``; yields whether they are.

    Afterwards torch's default again (denormals kept).
    """
    flushed = on and flush_denormals(True)
    try:
        yield flushed
    finally:
        if flushed:
            flush_denormals(False)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory (no mmap for large blocks, no trimming), as jemalloc/tcmalloc do.

    With glibc's defaults every large temporary is returned to the kernel when freed and faulted in afresh on the
    next allocation; on virtual machines those page faults dominate CPU timings and make them erratic. This affects
    every model measured in the process alike and is recorded in the rows (``malloc_tuned``). Returns whether it
    took effect (False off glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
