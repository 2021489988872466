"""The sampling grid shared by image and label resampling (nnU-Net's rules for shapes and the thick axis).

Output voxel ``j`` of an axis of ``n -> m`` voxels samples input position ``(j + 0.5) * n / m - 0.5`` (pixel
centres aligned, scikit-image's ``resize`` and scipy's ``zoom(grid_mode=True)``), edges clamped.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """``round(spacing / target_spacing * shape)`` per axis (Python rounding, as nnU-Net), at least 1.

    nnU-Net rounds a thin volume (a single slice much thinner than the target spacing) to an empty axis and then
    fails; here such an axis keeps one voxel.
    """
    if not len(shape) == len(spacing) == len(target_spacing):
        raise ValueError(f"shape {shape}, spacing {spacing} and target {target_spacing} differ in length")
    return tuple(max(1, int(round(float(s) / float(t) * int(n))))
                 for n, s, t in zip(shape, spacing, target_spacing))


def separate_axis(
    current_spacing: Sequence[float],
    target_spacing: Sequence[float],
    force_separate_z: bool | None = None,
    anisotropy_threshold: float = 3.0,
) -> int | None:
    """The axis to resample on its own, or ``None`` (nnU-Net's ``determine_do_sep_z_and_axis``).

    The current spacing decides first, then the target spacing: a grid whose max/min spacing ratio exceeds the
    threshold has its single coarsest axis treated separately. Two or three axes tied for the coarsest spacing
    mean no separate axis.
    """

    def coarsest(sp: Sequence[float]) -> list[int]:
        arr = np.asarray(sp, dtype=float)
        return [int(i) for i in np.flatnonzero(arr.max() / arr == 1)]

    def anisotropic(sp: Sequence[float]) -> bool:
        return bool(max(sp) / min(sp) > anisotropy_threshold)

    if force_separate_z is not None:
        axes = coarsest(current_spacing) if force_separate_z else []
    elif anisotropic(current_spacing):
        axes = coarsest(current_spacing)
    elif anisotropic(target_spacing):
        axes = coarsest(target_spacing)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def sample_positions(n_in: int, n_out: int) -> np.ndarray:
    """Input positions (float64) sampled by the ``n_out`` output voxels of an axis of ``n_in`` voxels."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Nearest input voxel of every output voxel (scipy's order-0 rounding ``floor(x + 0.5)``, clamped)."""
    return np.clip(np.floor(sample_positions(n_in, n_out) + 0.5), 0, n_in - 1).astype(np.intp)


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower tap, upper tap and upper weight of linear interpolation (edges clamped, ``hi == lo`` when exact)."""
    x = np.clip(sample_positions(n_in, n_out), 0.0, n_in - 1.0)
    lo = np.floor(x).astype(np.intp)
    w_hi = x - lo
    hi = np.where(w_hi > 0, np.minimum(lo + 1, n_in - 1), lo)
    return lo, hi, w_hi
