"""Iterate over the batches of consecutive steps, computed by worker processes or serially.

Worker ``i`` of ``n`` computes the steps ``start + i, start + i + n, ...`` and puts them in its own bounded queue
(``prefetch`` deep); the iterator takes step ``k`` from queue ``(k - start) % n``, so batches come out in step
order without any shared state. Since a batch is a pure function of its step
(:meth:`~amos_autoseg.data.batches.BatchSource.make_batch`), the sequence is identical for any number of workers,
including ``workers=0`` (computed in this process: real tracebacks, no pickling), and a resumed run only needs
the step to start from.

Workers are spawned (not forked: safe with CUDA and threads), use one thread each, stop when the parent dies,
and are shut down by :meth:`BatchLoader.close` (also on ``with`` exit and garbage collection). An exception in a
worker is re-raised here with its type (an ``InputError`` stays one); a worker that dies (killed for memory,
say) raises an :class:`~amos_autoseg.errors.AmosError` instead of hanging.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import sys
import traceback
from typing import TYPE_CHECKING, Any

from amos_autoseg.errors import AmosError

if TYPE_CHECKING:
    from amos_autoseg.data.batches import BatchSource

log = logging.getLogger(__name__)
POLL_S = 0.2
JOIN_S = 5.0


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
        self._queues: list[Any] = []
        self._stop: Any = None
        self._closed = False
        if self.workers > 0 and (self.stop_step is None or self.stop_step > self.start_step):
            self._start(prefetch)

    def _start(self, prefetch: int) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        for i in range(self.workers):
            q = ctx.Queue(maxsize=prefetch)
            p = ctx.Process(
                target=_worker_main, name=f"amos-loader-{i}", daemon=True,
                args=(self.source, self.start_step + i, self.workers, self.stop_step, q, self._stop),
            )
            p.start()
            self._queues.append(q)
            self._procs.append(p)
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
            batch = self.source.make_batch(step)
        else:
            batch = self._receive(step)
        self._next += 1
        return self._to_torch(batch, step)

    def _receive(self, step: int) -> dict[str, Any]:
        index = (step - self.start_step) % self.workers
        q, proc = self._queues[index], self._procs[index]
        while True:
            try:
                kind, got_step, payload = q.get(timeout=POLL_S)
            except queue.Empty:
                if not proc.is_alive():
                    try:  # it may have put its last item just before exiting
                        kind, got_step, payload = q.get(timeout=POLL_S)
                    except queue.Empty:
                        code = proc.exitcode
                        self.close()
                        raise AmosError(
                            f"data loader worker {index} died (exit code {code}) before producing step {step}; "
                            "most often it was killed for lack of memory: retry with fewer --workers, "
                            "or --workers 0 to see where it fails"
                        ) from None
                else:
                    continue
            break
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
        """Stop and join the workers (terminating any that do not stop); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        for q in self._queues:
            _drain(q)
        for p in self._procs:
            p.join(timeout=JOIN_S)
            if p.is_alive():
                p.terminate()
                p.join(timeout=JOIN_S)
        for q in self._queues:
            q.close()
            q.cancel_join_thread()
        self._procs, self._queues = [], []

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _drain(q: Any) -> None:
    try:
        while True:
            q.get_nowait()
    except (queue.Empty, OSError, ValueError):
        pass


def _worker_main(source: Any, first_step: int, every: int, stop_step: int | None, q: Any, stop: Any) -> None:
    """Compute steps ``first_step, first_step + every, ...`` into ``q`` until told to stop or the parent dies."""
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when the augmentation first imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    parent = mp.parent_process()
    step = first_step
    while not stop.is_set() and (stop_step is None or step < stop_step):
        try:
            item = ("batch", step, source.make_batch(step))
        except BaseException as exc:  # sent back whole; the parent decides
            item = ("error", step, (_picklable(exc), traceback.format_exc()))
        while True:
            if stop.is_set() or (parent is not None and not parent.is_alive()):
                return
            try:
                q.put(item, timeout=POLL_S)
                break
            except queue.Full:
                continue
        if item[0] == "error":
            return
        step += every


def _picklable(exc: BaseException) -> BaseException | None:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return None
