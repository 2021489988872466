"""Foreground voxel locations per label, sampled for oversampling during training (nnU-Net's rule).

Per label: ``max(min(10000, n), ceil(0.01 * n))`` of its ``n`` voxels, drawn without replacement with one
``RandomState(seed)`` per case (labels in ascending order), so a case always gets the same locations.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MIN_SAMPLES = 10000
MIN_COVERAGE = 0.01
ANNOTATED = -1  # key of the annotated voxels (every value but the ignore label) in a dataset with one


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


def sample_annotated_locations(seg: np.ndarray, ignore_label: int, seed: int = 1234) -> np.ndarray:
    """Sampled coordinates of the voxels not carrying ``ignore_label`` (background and outside included).

    nnU-Net v2 stores these for datasets with an ignore label and centres the random (not foreground-forced)
    patches on them, so that every patch holds annotated voxels. Same sampling rule as
    :func:`sample_class_locations`; the result is stored under the key :data:`ANNOTATED`.
    """
    rng = np.random.RandomState(seed)
    idx = np.flatnonzero(seg.reshape(-1) != ignore_label)
    if idx.size == 0:
        return np.zeros((0, 3), dtype=np.int32)
    k = max(min(MIN_SAMPLES, idx.size), int(np.ceil(idx.size * MIN_COVERAGE)))
    pick = np.sort(rng.choice(idx.size, k, replace=False))
    return np.stack(np.unravel_index(idx[pick], seg.shape), axis=1).astype(np.int32)
