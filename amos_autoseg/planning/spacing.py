"""Target spacing, axis transpose and median shapes: nnU-Net v2's rules, as pure functions.

* Target spacing (``determine_fullres_target_spacing``): the per-axis median of the case spacings. When the
  thickest axis is anisotropic in spacing (more than ``threshold`` times the largest other spacing) *and* in
  voxels (its median cropped size times ``threshold`` is below the smallest other median size), that axis gets
  the 10th percentile of its spacings instead, but never less than the largest other spacing (then that spacing
  plus 1e-5).
* Transpose (``determine_transpose``): the thickest axis of the target spacing first, the others in order.
* Median shape after resampling: every case's cropped shape scaled by ``spacing / target`` and rounded, then the
  per-axis median (fractional when the case count is even).

Percentiles and medians are numpy's (linear interpolation), as in the reference.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fullres_target_spacing(
    spacings: Sequence[Sequence[float]],
    shapes_after_crop: Sequence[Sequence[int]],
    anisotropy_threshold: float = 3.0,
) -> list[float]:
    """The 3d_fullres target spacing (stored axis order) for the cases' spacings and cropped shapes."""
    spacing_arr = np.vstack([np.asarray(s, dtype=float) for s in spacings])
    target = np.percentile(spacing_arr, 50, 0)
    target_size = np.percentile(np.vstack([np.asarray(s) for s in shapes_after_crop]), 50, 0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacings = [target[i] for i in others]
    other_sizes = [target_size[i] for i in others]
    aniso_spacing = target[worst] > anisotropy_threshold * max(other_spacings)
    aniso_voxels = target_size[worst] * anisotropy_threshold < min(other_sizes)
    if aniso_spacing and aniso_voxels:
        low = np.percentile(spacing_arr[:, worst], 10)
        if low < max(other_spacings):
            low = max(max(other_spacings), low) + 1e-5
        target[worst] = low
    return [float(v) for v in target]


def transpose_for(target_spacing: Sequence[float], suppress: bool = False) -> tuple[list[int], list[int]]:
    """``(transpose_forward, transpose_backward)``: the thickest axis first (identity when suppressed)."""
    n = len(target_spacing)
    if suppress:
        return list(range(n)), list(range(n))
    thick = int(np.argmax(target_spacing))
    forward = [thick] + [i for i in range(n) if i != thick]
    backward = [forward.index(i) for i in range(n)]
    return forward, backward


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """``round(spacing / target * shape)`` per axis: a case's shape after resampling to ``target``."""
    return [int(round(float(sp) / float(t) * int(n))) for n, sp, t in zip(shape, spacing, target)]


def median_resampled_shape(
    spacings: Sequence[Sequence[float]],
    shapes_after_crop: Sequence[Sequence[int]],
    target: Sequence[float],
) -> list[float]:
    """Per-axis median of the cases' shapes after resampling to ``target`` (stored axis order)."""
    shapes = [resampled_shape(shp, sp, target) for sp, shp in zip(spacings, shapes_after_crop)]
    return [float(v) for v in np.median(np.asarray(shapes, dtype=float), 0)]


def take(values: Sequence[float], order: Sequence[int]) -> list[float]:
    """``values`` reordered by ``order`` (apply a transpose to a per-axis list)."""
    return [float(values[i]) for i in order]
