"""Worker processes that end with their parent and leave Ctrl-C to it.

A ``multiprocessing`` pool worker outlives a parent killed with SIGKILL (the OOM killer, a scheduler, ``kill -9``):
it goes on computing, and writing checkpoints, beside the job that resumes the run. And Ctrl-C reaches the whole
foreground process group: a worker that dies of it mid-task can leave the pool's pipes half-read, and
``Pool.terminate`` then waits forever. So every pool here is started and stopped through this module:

- :func:`start_worker` (call it first in the pool's initializer) makes the worker ignore SIGINT (the parent alone
  handles it, by stopping the pool) and die with its parent: on Linux the kernel sends it SIGKILL when the parent
  exits (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); everywhere, :func:`exit_if_orphaned` between units of work (a
  training step, a data shard) ends a worker whose parent is gone.
- :func:`sigint_held` keeps SIGINT pending while the pool starts, so that no worker can be interrupted before it
  ignores the signal; the parent receives it once the pool exists.
- :func:`stop_pool` terminates a pool and waits for it at most ``timeout`` seconds, then kills what is left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal the calling process gets when its parent exits (``linux/prctl.h``)."""
_PARENT: dict[str, int] = {}


def _die_with_parent_linux() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``; whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def start_worker() -> None:
    """Makes this pool worker ignore SIGINT and die with its parent (see the module docstring).

    The parent is the process that started this one (``multiprocessing.parent_process()``); if it exited before the
    death signal was set, the worker exits at once.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held by sigint_held() in the parent
    parent = multiprocessing.parent_process()
    _PARENT["pid"] = parent.pid if parent is not None and parent.pid else os.getppid()
    _die_with_parent_linux()
    exit_if_orphaned()


def exit_if_orphaned() -> None:
    """Ends this worker at once when the parent that started it is gone (a no-op outside a started worker)."""
    pid = _PARENT.get("pid")
    if pid is not None and os.getppid() != pid:
        os._exit(1)


@contextmanager
def sigint_held() -> Iterator[list[int]]:
    """Holds back SIGINT while the block runs (a pool starting); a Ctrl-C meanwhile is delivered when it ends.

    Yields the list of the signals held so far (empty while none was; filled in the main thread only).

    Processes started inside inherit the blocked signal (across ``exec`` too), so they cannot be interrupted before
    :func:`start_worker` ignores it. In the main thread the handler is also deferred: the kernel may hand the signal
    to another thread of this process (a progress bar's), and Python would still raise KeyboardInterrupt in the
    middle of the block, leaving a pool half made.
    """
    held: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        if previous is not None:  # None: a handler not set from Python, which could not be put back
            signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield held
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            if held:  # again, now under the handler it was meant for, in this thread and before the block is left
                signal.raise_signal(signal.SIGINT)  # (os.kill could land in another thread: raised some time later)


def stop_pool(pool, timeout: float = 30.0) -> None:
    """``pool.terminate()`` and ``pool.join()``, waiting at most ``timeout`` seconds; then its workers are killed.

    The bound is for a pool whose pipes a dead worker left half-read, where terminate would wait forever.
    """
    workers = lambda: list(getattr(pool, "_pool", ()))  # noqa: E731  (its worker processes: private, read defensively)
    started = workers()

    def stop() -> None:
        pool.terminate()
        pool.join()

    stopper = threading.Thread(target=stop, name="stop-pool", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():  # left waiting on a dead worker's lock or pipe: end what runs (replacements included)
        for process in {*started, *workers()}:
            if process.is_alive():
                process.kill()
                process.join(timeout)
