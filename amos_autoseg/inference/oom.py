"""What to do when the device runs out of memory: a small policy (the ladder) and the loop that climbs it.

A failed attempt is dropped before the next one starts: the error is caught, only its message is kept, and the
retry runs outside the ``except`` block, so the failed attempt's tensors (held by the traceback's frames) are
freed and the CUDA cache is emptied first. The ladder then tries, in this order, the first step that changes
something: fewer tiles per forward pass (halved down to 1), fewer mirrored copies per pass (halved down to 1),
the blend buffers on the host, and finally the whole prediction on the CPU. Every step is logged once, when it
is taken.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import torch

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class RunSettings:
    """How one attempt of a sliding-window prediction runs.

    Attributes:
        compute: where the networks run.
        accumulate: where the blend buffers live.
        tile_batch: tiles per forward pass.
        mirror_group: mirrored copies of each tile per forward pass.
    """

    compute: torch.device
    accumulate: torch.device
    tile_batch: int = 1
    mirror_group: int = 1


def fewer_tiles(s: RunSettings) -> tuple[RunSettings, str] | None:
    """Halve the tiles per forward pass."""
    if s.tile_batch <= 1:
        return None
    return replace(s, tile_batch=s.tile_batch // 2), f"{s.tile_batch // 2} tile(s) per pass instead of {s.tile_batch}"


def fewer_mirrors(s: RunSettings) -> tuple[RunSettings, str] | None:
    """Halve the mirrored copies per forward pass."""
    if s.mirror_group <= 1:
        return None
    half = s.mirror_group // 2
    return replace(s, mirror_group=half), f"{half} mirrored cop(ies) per pass instead of {s.mirror_group}"


def host_buffers(s: RunSettings) -> tuple[RunSettings, str] | None:
    """Keep the blend buffers in host memory (the networks stay on the device)."""
    if s.accumulate.type == "cpu":
        return None
    return replace(s, accumulate=CPU), f"blend buffers on the host instead of {s.accumulate}"


def on_cpu(s: RunSettings) -> tuple[RunSettings, str] | None:
    """Run everything on the CPU."""
    if s.compute.type == "cpu":
        return None
    return replace(s, compute=CPU, accumulate=CPU), f"everything on the CPU instead of {s.compute}"


@dataclass(frozen=True)
class OomLadder(Generic[S]):
    """The steps to try after running out of memory, in order; each returns the next settings or ``None``.

    Attributes:
        steps: functions ``settings -> (new settings, description) | None`` (``None``: the step does not apply).
    """

    steps: tuple[Callable[[S], tuple[S, str] | None], ...] = (fewer_tiles, fewer_mirrors, host_buffers, on_cpu)

    def next(self, settings: S) -> tuple[S, str] | None:
        """The settings of the first step that applies to ``settings``, with its description; ``None`` at the end."""
        for step in self.steps:
            found = step(settings)
            if found is not None:
                return found
        return None

    def plan(self, settings: S) -> list[str]:
        """Every step the ladder would take from ``settings`` if each attempt ran out of memory."""
        taken = []
        while (found := self.next(settings)) is not None:
            settings, what = found
            taken.append(what)
        return taken


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error of torch (CUDA's, or a RuntimeError saying so, as other backends raise)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_device_memory(devices: Sequence[torch.device]) -> None:
    """Collect garbage and give cached CUDA blocks back, after a failed attempt's tensors are unreferenced."""
    gc.collect()
    if any(d.type == "cuda" for d in devices) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_ladder(
    attempt: Callable[[S], T],
    first: S,
    ladder: OomLadder[S],
    devices: Callable[[S], Sequence[torch.device]] = lambda s: (),
    what: str = "prediction",
) -> tuple[T, S, list[str]]:
    """Run ``attempt(settings)``, climbing ``ladder`` after every out-of-memory error.

    Args:
        attempt: the work; must not keep references to its tensors when it raises.
        first: the settings of the first attempt.
        ladder: the steps to try.
        devices: the devices of a settings value, whose cached memory is freed after a failure.
        what: name of the work, for the log.

    Returns:
        The result, the settings that gave it, and the descriptions of the steps taken.

    Raises:
        torch.OutOfMemoryError: the last step ran out of memory too.
    """
    settings, taken = first, []
    while True:
        message = ""
        try:
            return attempt(settings), settings, taken
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # outside the except block: the failed attempt's frames (and their tensors) are gone
        free_device_memory(devices(settings))
        found = ladder.next(settings)
        if found is None:
            raise torch.OutOfMemoryError(f"{what}: out of memory after every fallback ({message})")
        settings, step = found
        taken.append(step)
        log.warning("out of memory during %s (%s); retrying with %s", what, message[:160], step)
