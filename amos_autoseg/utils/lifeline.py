"""Worker processes that end with their parent, however the parent ends.

Every worker process the project starts (data loader workers, the case pools of plan, preprocess, predict and
evaluate) is started with :func:`start_tied`. In the worker, before anything else, :func:`tie_to_parent`:

- asks the Linux kernel to SIGKILL the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which holds
  even when the parent is killed with SIGKILL or by the OOM killer. The kernel ties the worker to the *thread*
  that started it, so workers are started from the thread that also stops them (the main thread here);
- starts a watchdog thread that ends the worker when its parent process id changes (the parent died and the
  worker was re-parented): the fallback where ``prctl`` does not exist, and the guard against a parent that died
  before ``prctl`` was called;
- ignores SIGINT and SIGTERM: Ctrl-C reaches every process of the terminal's foreground group and SLURM signals
  every process of a job, but only the parent decides when to stop (a training run first writes its checkpoint);
  it ends its workers itself, so a stop prints no worker tracebacks.

The workers talk to their parent through pipes only (no ``multiprocessing`` queue, lock or semaphore), so a worker
killed at any moment leaves no named semaphore for the resource tracker to clean up or warn about. A last
``atexit`` hook kills any tied worker still alive when the parent exits, so an exit never waits on one.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import multiprocessing.util  # noqa: F401 - its exit hook must be registered before ours (atexit is LIFO)
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
WATCH_S = 0.5
JOIN_S = 5.0
QUIET = {signal.SIGINT, signal.SIGTERM}
_live: weakref.WeakSet[Any] = weakref.WeakSet()


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    event = threading.Event()
    while not event.wait(WATCH_S):
        if os.getppid() != parent_pid:
            os._exit(1)


def tie_to_parent(parent_pid: int) -> None:
    """Make this (worker) process end when the process ``parent_pid`` ends; ignore SIGINT and SIGTERM.

    The worker started with both signals blocked (see :func:`start_tied`); they are unblocked once ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIET)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the kernel was asked to watch it
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="amos-parent-watch", daemon=True).start()


def _run_tied(parent_pid: int, target: Callable[..., Any], args: Sequence[Any]) -> None:
    tie_to_parent(parent_pid)
    target(*args)


def start_tied(ctx: Any, target: Callable[..., Any], args: Sequence[Any], name: str) -> Any:
    """Start ``target(*args)`` in a new process of the ``multiprocessing`` context ``ctx``, tied to this one.

    Args:
        ctx: a ``multiprocessing`` context (the project uses ``spawn``).
        target: a picklable (module-level) function.
        args: its arguments (picklable).
        name: the process name (shown by ``ps``).

    Returns:
        The started ``Process``; end it with :func:`stop_tied`.
    """
    proc = ctx.Process(target=_run_tied, args=(os.getpid(), target, tuple(args)), name=name, daemon=True)
    masking = hasattr(signal, "pthread_sigmask")
    if masking:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # now, so that its own signal masking cannot undo ours below
        # Blocked signals are inherited: the worker cannot be hit by Ctrl-C while it starts up (a traceback)
        # before it ignores it. Here a signal arriving meanwhile is only delayed until the mask is restored.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, QUIET)
    try:
        proc.start()
    finally:
        if masking:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    _live.add(proc)
    return proc


def stop_tied(procs: Sequence[Any], timeout_s: float = JOIN_S) -> None:
    """Wait up to ``timeout_s`` for each process to exit on its own, then SIGKILL it (workers ignore SIGTERM)."""
    for proc in procs:
        proc.join(timeout=timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=timeout_s)
        _live.discard(proc)


def picklable(exc: BaseException) -> BaseException | None:
    """``exc`` when it survives a pickle round trip (so a worker can send it back whole), else ``None``."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return None


@atexit.register
def _kill_live_workers() -> None:
    """Registered after multiprocessing's own exit hook, so it runs first: no exit waits on a tied worker."""
    for proc in list(_live):
        try:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=JOIN_S)
        except (OSError, ValueError, AssertionError):  # pragma: no cover - already reaped
            pass
