"""Foreground voxel locations per label, sampled for oversampling during training (nnU-Net's rule).

Per label: ``max(min(10000, n), ceil(0.01 * n))`` of its ``n`` voxels, drawn without replacement with one
``RandomState(seed)`` per case (labels in ascending order), so a case always gets the same locations.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MIN_SAMPLES = 10000
MIN_COVERAGE = 0.01


def sample_class_locations(
    seg: np.ndarray, labels: Iterable[int], seed: int = 1234
) -> dict[int, np.ndarray]:
    """Sample voxel coordinates per label.

    Args:
        seg: label map (Z, Y, X), any integer dtype (-1 outside the body).
        labels: foreground label ids to sample (absent ones get an empty array).
        seed: seed of the case's generator.

    Returns:
        label -> (n, 3) int32 array of (z, y, x) coordinates, sorted in C order.
    """
    rng = np.random.RandomState(seed)
    wanted = sorted({int(v) for v in labels if int(v) > 0})
    flat_seg = seg.reshape(-1)
    idx = np.flatnonzero(flat_seg > 0)
    values = flat_seg[idx]
    order = np.argsort(values, kind="stable")
    idx, values = idx[order], values[order]
    starts = np.searchsorted(values, wanted, side="left")
    stops = np.searchsorted(values, wanted, side="right")
    out: dict[int, np.ndarray] = {}
    for lab, a, b in zip(wanted, starts, stops):
        n = int(b - a)
        if n == 0:
            out[lab] = np.zeros((0, 3), dtype=np.int32)
            continue
        k = max(min(MIN_SAMPLES, n), int(np.ceil(n * MIN_COVERAGE)))
        pick = np.sort(rng.choice(n, k, replace=False))
        out[lab] = np.stack(np.unravel_index(idx[a + pick], seg.shape), axis=1).astype(np.int32)
    return out
