"""``--shard K/N`` and SLURM array selection of cases (CONTRACT.md).

A shard K of N takes the items whose index in the sorted list is K modulo N. Without an explicit shard,
``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` are honoured when both are set.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from amos_autoseg.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """One part ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"bad shard {self.index}/{self.count}: need 0 <= K < N and N >= 1")

    def select(self, items: Sequence[T]) -> list[T]:
        """Items whose position in ``items`` (already sorted by the caller) is ``index`` modulo ``count``."""
        return [item for i, item in enumerate(items) if i % self.count == self.index]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard:
    """Parse ``K/N``; with ``None``, fall back to the SLURM array variables, else the whole list.

    SLURM numbers array tasks from ``SLURM_ARRAY_TASK_MIN`` (``--array=1-4`` starts at 1), so the shard index
    is the task id minus that minimum when it is set.
    """
    if text is None:
        env = os.environ if environ is None else environ
        task_id, task_count = env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_ARRAY_TASK_COUNT")
        if task_id is None or task_count is None:
            return Shard()
        try:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return Shard(int(task_id) - first, int(task_count))
        except ValueError:
            raise UsageError(
                f"SLURM_ARRAY_TASK_ID={task_id!r}, SLURM_ARRAY_TASK_COUNT={task_count!r}: not integers"
            ) from None
    parts = text.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        return Shard(int(parts[0]), int(parts[1]))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected K/N with integers, e.g. 0/4") from None
