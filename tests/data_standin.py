"""A tiny in-memory stand-in for preprocessed cases (the attributes of ``preprocessing.storage.open_case``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MemoryCase:
    """``data`` (C, Z, Y, X) float32, ``seg`` (1, Z, Y, X) int16 (-1 outside the body), class locations."""

    data: np.ndarray
    seg: np.ndarray
    class_locations: dict[int, np.ndarray]
    properties: dict[str, Any] = field(default_factory=dict)


def make_case(shape: tuple[int, int, int], labels: dict[int, tuple[slice, slice, slice]], channels: int = 1,
              seed: int = 0, body_margin: int = 0, max_locations: int = 1000) -> MemoryCase:
    """A case of ``shape`` with box-shaped organs; voxels within ``body_margin`` of the border are -1."""
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, dtype=np.int16)
    for label, box in labels.items():
        seg[box] = label
    if body_margin:
        outside = np.ones(shape, dtype=bool)
        outside[tuple(slice(body_margin, s - body_margin) for s in shape)] = False
        seg[outside] = -1
    data = rng.normal(size=(channels, *shape)).astype(np.float32) + seg[None].astype(np.float32)
    locations = {}
    for label in labels:
        coords = np.argwhere(seg == label)
        if len(coords) > max_locations:
            coords = coords[rng.choice(len(coords), max_locations, replace=False)]
        locations[label] = coords.astype(np.int64)
    return MemoryCase(data=data, seg=seg[None], class_locations=locations)


class MemoryCases:
    """A picklable ``open_case``: case id -> :class:`MemoryCase`."""

    def __init__(self, cases: dict[str, MemoryCase]) -> None:
        self.cases = cases

    def __call__(self, case_id: str) -> MemoryCase:
        return self.cases[case_id]


class FailingCases(MemoryCases):
    """Raises an InputError when ``bad`` is opened (a broken case file)."""

    def __init__(self, cases: dict[str, MemoryCase], bad: str) -> None:
        super().__init__(cases)
        self.bad = bad

    def __call__(self, case_id: str) -> MemoryCase:
        if case_id == self.bad:
            from amos_autoseg.errors import InputError

            raise InputError(f"{case_id}.b2nd", "is truncated")
        return super().__call__(case_id)


class DyingCases(MemoryCases):
    """Kills its process when a case is opened (what the kernel's OOM killer does to a worker)."""

    def __call__(self, case_id: str) -> MemoryCase:
        import os

        os._exit(9)
