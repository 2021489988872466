"""Run one function over many cases, in worker processes or serially.

``workers=0`` runs everything in this process (the debugging path: real tracebacks, no pickling); ``workers>0``
uses spawned worker processes tied to this one (:mod:`amos_autoseg.utils.lifeline`: they die with it however it
dies, ignore Ctrl-C, and talk to it through one pipe each, so no semaphore is ever left behind). Each worker gets
one case at a time; results come back in input order. Exceptions raised by a worker are re-raised here unchanged
(an :class:`~amos_autoseg.errors.InputError` stays one); a worker killed by the kernel (out of memory) is reported
as such instead of hanging; on any failure or interruption here every worker is stopped before the exception
leaves :func:`map_cases`.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any, TypeVar

from amos_autoseg.errors import AmosError
from amos_autoseg.utils.lifeline import picklable, start_tied, stop_tied

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
DIED = ("a worker process died (most often killed for lack of memory); "
        "retry with fewer --workers, or --workers 0 to see where it fails")


class WorkerFailure(AmosError):
    """A worker raised an exception that could not be sent back; the message holds its traceback."""


def default_workers() -> int:
    """Worker count when none is given: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def progress(
    iterable: Iterable[R], total: int, desc: str, enabled: bool | None = None, unit: str = "it"
) -> Iterator[R]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (``None``: when stderr is a terminal) and ``total > 1``."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if show and total > 1:
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    else:
        yield from iterable


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    desc: str = "cases",
) -> list[R]:
    """Apply ``fn`` to every item and return the results in order.

    Args:
        fn: a picklable (module-level) function of one argument.
        items: its inputs.
        workers: 0 for serial, else the number of worker processes (capped at ``len(items)``).
        desc: label of the progress bar.
    """
    if workers <= 0 or len(items) <= 1:
        return [fn(item) for item in progress(iter(items), len(items), desc)]
    results: list[Any] = [None] * len(items)
    pool = _Pool(fn, min(workers, len(items)))
    try:
        for index, value in progress(pool.run(items), len(items), desc):
            results[index] = value
    except BaseException:
        pool.close(wait_s=0.0)  # failing or interrupted: stop the other workers at once
        raise
    pool.close()
    return results


def _pool_worker(conn: Any, fn: Callable[[Any], Any]) -> None:
    """Worker loop: receive ``(index, item)``, send back ``(index, ok, value)``; stop on ``None`` or EOF."""
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, item = task
        try:
            reply: tuple[int, bool, Any] = (index, True, fn(item))
        except BaseException as exc:  # sent back whole; the parent decides
            reply = (index, False, (picklable(exc), traceback.format_exc()))
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionError, EOFError):
            return
        except Exception:  # the value or the exception does not pickle: send its text
            conn.send((index, False, (None, traceback.format_exc())))


class _Pool:
    """Worker processes of one :func:`map_cases` call, one pipe each."""

    def __init__(self, fn: Callable[[Any], Any], n: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            for i in range(n):
                mine, theirs = ctx.Pipe(duplex=True)
                self.procs.append(start_tied(ctx, _pool_worker, (theirs, fn), f"amos-worker-{i}"))
                theirs.close()
                self.conns.append(mine)
        except BaseException:
            self.close()
            raise

    def run(self, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` as the workers finish; raise the first failure."""
        todo = iter(enumerate(items))
        busy: dict[Any, Any] = {}  # connection -> its process
        for conn, proc in zip(self.conns, self.procs):
            if self._give(conn, todo):
                busy[conn] = proc
        while busy:
            sentinels = {proc.sentinel: conn for conn, proc in busy.items()}
            for ready in wait([*busy, *sentinels]):
                conn = sentinels.get(ready, ready)
                if conn not in busy:
                    continue
                if ready is not conn and not conn.poll():  # exited without an answer pending
                    raise AmosError(DIED)
                try:
                    index, ok, value = conn.recv()
                except (EOFError, OSError):
                    raise AmosError(DIED) from None
                if not ok:
                    exc, text = value
                    if exc is None:
                        raise WorkerFailure(f"a worker failed:\n{text}")
                    raise exc from WorkerFailure(f"in a worker:\n{text}")
                yield index, value
                if not self._give(conn, todo):
                    del busy[conn]

    @staticmethod
    def _give(conn: Any, todo: Iterator[tuple[int, Any]]) -> bool:
        task = next(todo, None)
        conn.send(task)  # None tells an idle worker to exit
        return task is not None

    def close(self, wait_s: float = 5.0) -> None:
        """Close the pipes: idle workers exit at once; one still busy after ``wait_s`` is killed."""
        for conn in self.conns:
            conn.close()
        stop_tied(self.procs, wait_s)
        self.procs, self.conns = [], []
