"""Run one function over many cases, in worker processes or serially.

``workers=0`` runs everything in this process (the debugging path: real tracebacks, no pickling); ``workers>0``
uses a pool of spawned processes. Results come back in input order. Exceptions raised by a worker are
re-raised here unchanged (an :class:`~amos_autoseg.errors.InputError` stays one), and a worker killed by the
kernel (out of memory) is reported as such instead of hanging.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from amos_autoseg.errors import AmosError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


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
    results: list[R | None] = [None] * len(items)
    ctx = mp.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in progress(as_completed(futures), len(futures), desc):
                results[futures[fut]] = fut.result()
    except BrokenProcessPool:
        raise AmosError(
            "a worker process died (most often killed for lack of memory); "
            "retry with fewer --workers, or --workers 0 to see where it fails"
        ) from None
    return results  # type: ignore[return-value]
