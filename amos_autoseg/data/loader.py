"""Iterate over the batches of consecutive steps, computed by worker processes or serially.

Worker ``i`` of ``n`` computes the steps ``start + i, start + i + n, ...`` and sends them through its own pipe,
at most ``prefetch`` ahead of what was taken; the iterator takes step ``k`` from pipe ``(k - start) % n``, so
batches come out in step order without any shared state. Since a batch is a pure function of its step
(:meth:`~amos_autoseg.data.batches.BatchSource.make_batch`), the sequence is identical for any number of workers,
including ``workers=0`` (computed in this process: real tracebacks, no pickling), and a resumed run only needs
the step to start from.

Workers are spawned (not forked: safe with CUDA and threads), compute with one thread each, and are tied to
the parent (:mod:`amos_autoseg.utils.lifeline`): they die with it however it dies (SIGKILL included), ignore
Ctrl-C and SIGTERM (the parent stops them after its checkpoint), and share no queue, lock or semaphore with it,
so nothing is left behind. :meth:`BatchLoader.close` (also on ``with`` exit and garbage collection) closes the
pipes and ends the workers at once: they only compute, so there is nothing for them to finish. An exception in
a worker is re-raised here with its type (an ``InputError`` stays one); a worker that dies (killed for memory,
say) raises an :class:`~amos_autoseg.errors.AmosError` instead of hanging.

The batch of memory-mapped (read-only) cases reaches ``torch.from_numpy`` inside the augmentation, which only
reads it; PyTorch's "not writable" warning about that is silenced while a batch is made.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import sys
import threading
import traceback
import warnings
from typing import TYPE_CHECKING, Any

from amos_autoseg.errors import AmosError
from amos_autoseg.utils.lifeline import picklable, start_tied, stop_tied

if TYPE_CHECKING:
    from amos_autoseg.data.batches import BatchSource

log = logging.getLogger(__name__)
POLL_S = 0.2
NOT_WRITABLE = "The given NumPy array is not writable"


class WorkerError(AmosError):
    """A loader worker failed; the message holds its traceback."""


class BatchLoader:
    """Batches for steps ``start_step, start_step + 1, ...`` as dicts of torch tensors.

    Args:
        source: the batch source (picklable when ``workers > 0``).
        start_step: first step (0 for a new run, the next step when resuming).
        num_steps: how many batches to yield; None for endless.
        workers: worker processes; 0 computes in this process.
        prefetch: batches each worker may compute ahead.
        pin_memory: pin the tensors (page-locked) when CUDA is available, for asynchronous copies.

    Yields:
        ``{"data": float32 (b, C, *patch), "target": int16 (b, 1, *patch), "case_ids": list[str], "step": int}``,
        or the source's un-augmented windows with their ``"augment"`` entry.
    """

    def __init__(self, source: BatchSource, start_step: int, num_steps: int | None, workers: int, prefetch: int = 2,
                 pin_memory: bool = False) -> None:
        if start_step < 0 or (num_steps is not None and num_steps < 0) or workers < 0 or prefetch < 1:
            raise ValueError(f"bad loader settings: start_step={start_step}, num_steps={num_steps}, "
                             f"workers={workers}, prefetch={prefetch}")
        self.source = source
        self.start_step = int(start_step)
        self.stop_step = None if num_steps is None else self.start_step + int(num_steps)
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory)
        self._next = self.start_step
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._closed = False
        if self.workers > 0 and (self.stop_step is None or self.stop_step > self.start_step):
            self._start(prefetch)

    def _start(self, prefetch: int) -> None:
        ctx = mp.get_context("spawn")
        try:
            for i in range(self.workers):
                mine, theirs = ctx.Pipe(duplex=True)
                args = (theirs, self.source, self.start_step + i, self.workers, self.stop_step, prefetch)
                self._procs.append(start_tied(ctx, _worker_main, args, f"amos-loader-{i}"))
                theirs.close()
                self._conns.append(mine)
        except BaseException:
            self.close()
            raise
        log.debug("started %d loader workers at step %d", self.workers, self.start_step)

    def __iter__(self) -> BatchLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise StopIteration
        if self.stop_step is not None and self._next >= self.stop_step:
            self.close()
            raise StopIteration
        step = self._next
        if self.workers == 0:
            batch = make_quietly(self.source, step)
        else:
            batch = self._receive(step)
        self._next += 1
        return self._to_torch(batch, step)

    def _receive(self, step: int) -> dict[str, Any]:
        index = (step - self.start_step) % self.workers
        conn, proc = self._conns[index], self._procs[index]
        while not conn.poll(POLL_S):  # a dead worker's pipe reads as end-of-file, which poll reports
            if not proc.is_alive() and not conn.poll(POLL_S):
                break
        try:
            kind, got_step, payload = conn.recv()
        except (EOFError, OSError):
            proc.join(timeout=1.0)
            code = proc.exitcode
            self.close()
            raise AmosError(
                f"data loader worker {index} died (exit code {code}) before producing step {step}; "
                "most often it was killed for lack of memory: retry with fewer --workers, "
                "or --workers 0 to see where it fails"
            ) from None
        if kind == "error":
            self.close()
            exc, text = payload
            if exc is not None:
                raise exc from WorkerError(f"in loader worker {index} at step {got_step}:\n{text}")
            raise WorkerError(f"loader worker {index} failed at step {got_step}:\n{text}")
        if got_step != step:  # cannot happen with the round-robin schedule; refuse rather than train on it
            self.close()
            raise AmosError(f"data loader worker {index} produced step {got_step} where {step} was due")
        return payload

    def _to_torch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        import torch

        data = torch.from_numpy(batch["data"])
        target = torch.from_numpy(batch["target"])
        if self.pin_memory and torch.cuda.is_available():
            data, target = data.pin_memory(), target.pin_memory()
        out = {"data": data, "target": target, "case_ids": list(batch["case_ids"]), "step": step}
        if "augment" in batch:  # windows to be augmented on the training device (BatchSource.make_window_batch)
            out["augment"] = batch["augment"]
        return out

    def close(self) -> None:
        """End the workers at once (they only compute) and close the pipes; idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            conn.close()
        stop_tied(self._procs, 0.0)
        self._procs, self._conns = [], []

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def make_quietly(source: Any, step: int) -> dict[str, Any]:
    """``source.make_batch(step)`` with PyTorch's warning about read-only (memory-mapped) arrays silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NOT_WRITABLE, category=UserWarning)
        return source.make_batch(step)


def _worker_main(conn: Any, source: Any, first_step: int, every: int, stop_step: int | None, prefetch: int) -> None:
    """Compute steps ``first_step, first_step + every, ...`` at most ``prefetch`` ahead of what the parent took;
    a sender thread writes them to ``conn``. Ends when done, after an error, or when the parent closes the pipe."""
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when the augmentation first imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    ready: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    sender = threading.Thread(target=_send_all, args=(conn, ready), name="amos-loader-send", daemon=True)
    sender.start()
    step = first_step
    while stop_step is None or step < stop_step:
        if conn.poll(0):  # the parent closed its end (it never sends anything)
            return
        try:
            item = ("batch", step, make_quietly(source, step))
        except BaseException as exc:  # sent back whole; the parent decides
            item = ("error", step, (picklable(exc), traceback.format_exc()))
        if not _put(ready, item, conn) or item[0] == "error":
            break
        step += every
    if _put(ready, None, conn):
        sender.join()


def _put(ready: queue.Queue[Any], item: Any, conn: Any) -> bool:
    """Queue ``item`` for the sender; False once the parent has closed the pipe."""
    while True:
        try:
            ready.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            if conn.poll(0):
                return False


def _send_all(conn: Any, ready: queue.Queue[Any]) -> None:
    """Send queued items until the end marker (``None``) or until the parent is gone."""
    while True:
        item = ready.get()
        if item is None:
            return
        try:
            conn.send(item)
        except (OSError, EOFError):  # the parent closed the pipe or died
            return
