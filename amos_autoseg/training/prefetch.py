"""Batches moved to the device ahead of use: on CUDA the next batch's copy overlaps the current step.

:class:`DevicePrefetcher` keeps ``lookahead`` batches already moved (``move``: host batch -> device batch). On
CUDA the moves run on a side stream; before a batch is handed out the compute stream waits for its copy, and its
tensors are marked as used by the compute stream (``record_stream``) so the caching allocator does not reuse
their memory while the step still reads them. On the CPU a move is only a dtype/layout conversion and gains
nothing from running early, so :func:`prefetch_to_device` uses lookahead 0 there: a plain passthrough.

The order of batches never changes and at most ``lookahead`` batches are taken from the source before they are
needed, so a step-indexed stream stays step-indexed.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

Batch = Mapping[str, Any]


class DevicePrefetcher:
    """Iterate ``batches`` after ``move``, keeping ``lookahead`` moved batches in flight.

    Args:
        batches: host batches, in order.
        move: moves one batch to the device (e.g. :func:`amos_autoseg.training.step.move_batch`).
        lookahead: batches moved ahead of use (0: move each when asked).
        stream: a ``torch.cuda.Stream`` to move on (``None``: the current stream, synchronously ordered).
    """

    def __init__(self, batches: Iterator[Batch], move: Callable[[Batch], Batch], lookahead: int = 1,
                 stream: Any = None) -> None:
        if lookahead < 0:
            raise ValueError("lookahead must be 0 or more")
        self._source = batches
        self._move = move
        self._lookahead = lookahead
        self._stream = stream
        self._ready: deque[tuple[Batch, Any]] = deque()
        self._exhausted = False

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> Batch:
        if not self._ready and not self._pull():
            raise StopIteration
        batch, event = self._ready.popleft()
        self._hand_over(batch, event)
        while len(self._ready) < self._lookahead and self._pull():
            pass
        return batch

    def _pull(self) -> bool:
        if self._exhausted:
            return False
        try:
            host = next(self._source)
        except StopIteration:
            self._exhausted = True
            return False
        if self._stream is None:
            self._ready.append((self._move(host), None))
            return True
        with torch.cuda.stream(self._stream):
            moved = self._move(host)
            event = torch.cuda.Event()
            event.record(self._stream)
        self._ready.append((moved, event))
        return True

    def _hand_over(self, batch: Batch, event: Any) -> None:
        if event is None:
            return
        current = torch.cuda.current_stream()
        current.wait_event(event)
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.is_cuda:
                value.record_stream(current)


def prefetch_to_device(batches: Iterator[Batch], device: torch.device,
                       move: Callable[[Batch], Batch]) -> Iterator[Batch]:
    """``batches`` moved by ``move``: one batch ahead on a side stream on CUDA, a passthrough elsewhere."""
    if device.type == "cuda":
        return DevicePrefetcher(batches, move, lookahead=1, stream=torch.cuda.Stream(device))
    return DevicePrefetcher(batches, move, lookahead=0)
