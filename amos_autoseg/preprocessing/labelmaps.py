"""Label maps to a new grid: nnU-Net's linear-per-label argmax without one-hot volumes.

Every label's indicator is interpolated linearly and each voxel takes the label with the highest score; exact
ties go to the nearest-neighbour label when it is among the tied ones, else to the smallest (batchgenerators'
``resize_segmentation``, which nnU-Net uses). A voxel whose interpolation cell holds one label only takes that
label; only the others (boundary voxels, a few percent) are scored, from their 8 (3D) or 4 (in-plane) corner
labels, so the cost hardly grows with the number of labels.

One deliberate addition to nnU-Net: with ``keep_small=True`` a label present in the input but dropped by the
argmax (a structure of a few voxels when downsampling) is put back at the output voxels that contain its input
voxels' centres, so no label present in the input disappears.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amos_autoseg.preprocessing.grid import linear_taps, nearest_indices, separate_axis

_SLAB_VOXELS = 1 << 22  # output voxels per slab when scoring label maps (bounds the temporaries)


def resample_labels(
    seg: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 1,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    anisotropy_threshold: float = 3.0,
    keep_small: bool = True,
) -> np.ndarray:
    """Resample a label map ``(Z, Y, X)`` or ``(1, Z, Y, X)`` (any integer dtype, -1 allowed); dtype is kept.

    ``order=1`` is nnU-Net's linear-per-label argmax, ``order=0`` plain nearest neighbour. Along a separate
    (thick) axis the labels are taken from the nearest slice (``order_z=0``; ``order_z=1`` scores that axis
    linearly together with the plane, which only differs where nnU-Net would interpolate between slices).
    With ``keep_small`` a label present in ``seg`` but lost by the argmax is restored (see module doc).
    """
    squeeze = seg.ndim == 4
    if squeeze:
        if seg.shape[0] != 1:
            raise ValueError(f"label maps have one channel, got shape {seg.shape}")
        seg = seg[0]
    if seg.ndim != 3:
        raise ValueError(f"label map must be (Z, Y, X), got shape {seg.shape}")
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(seg.shape) == new_shape:
        out = seg.copy()
    else:
        sep = separate_axis(current_spacing, target_spacing, force_separate_z, anisotropy_threshold)
        out = _labels_nd(seg, new_shape, order, sep if order_z == 0 else None)
        if sep is not None and order_z == 0:
            out = np.take(out, nearest_indices(seg.shape[sep], new_shape[sep]), axis=sep)
        if keep_small:
            _restore_lost(seg, out)
    return out[None] if squeeze else out


def _labels_nd(seg: np.ndarray, new_shape: tuple[int, ...], order: int, keep_axis: int | None) -> np.ndarray:
    """Argmax of linearly interpolated label indicators on all axes but ``keep_axis`` (left at input size)."""
    taps = []
    for a in range(3):
        n_in = seg.shape[a]
        n_out = n_in if a == keep_axis else new_shape[a]
        if order == 0 or n_in == n_out:
            nn = nearest_indices(n_in, n_out) if n_in != n_out else np.arange(n_in)
            taps.append((nn, nn, np.zeros(n_out), nn))
        elif order == 1:
            taps.append((*linear_taps(n_in, n_out), nearest_indices(n_in, n_out)))
        else:
            raise ValueError(f"label maps are resampled with order 0 or 1, not {order}")
    out_shape = tuple(len(t[0]) for t in taps)
    out = np.empty(out_shape, dtype=seg.dtype)
    plane = out_shape[1] * out_shape[2]
    step = max(1, _SLAB_VOXELS // max(1, plane))
    for z0 in range(0, out_shape[0], step):
        zs = slice(z0, min(out_shape[0], z0 + step))
        zl, zh, zw, zn = (t[zs] for t in taps[0])
        first, last = int(min(zl.min(), zn.min())), int(max(zh.max(), zn.max())) + 1
        sub = seg[first:last]
        ztaps = (zl - first, zh - first, zw, zn - first)
        out[zs] = _labels_slab(sub, (ztaps, taps[1], taps[2]))
    return out


def _uniform_cells(seg: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """True where the cell spanned by a voxel and its next neighbour along ``axes`` holds one label only.

    The last voxel of an axis counts as its own neighbour there (the clamped edge tap).
    """
    same = np.ones(seg.shape, dtype=bool)
    for axis in axes:
        n = seg.shape[axis]
        if n < 2:
            continue
        head = (slice(None),) * axis + (slice(0, n - 1),)
        tail = (slice(None),) * axis + (slice(1, n),)
        step = same.copy()  # the last voxel along the axis pairs with itself
        step[head] = same[head] & same[tail] & (seg[head] == seg[tail])
        same = step
    return same


def _labels_slab(seg: np.ndarray, taps: Sequence[tuple[np.ndarray, ...]]) -> np.ndarray:
    """Label argmax for one slab of output voxels.

    A voxel whose interpolation cell holds one label takes it (its nearest neighbour); only the others
    ("contested", at label boundaries) are scored from their corner labels.
    """
    nn = seg.take(taps[0][3], axis=0).take(taps[1][3], axis=1).take(taps[2][3], axis=2)
    moving = [a for a, t in enumerate(taps) if t[2].any()]
    uniform = _uniform_cells(seg, moving)
    contested = ~uniform.take(taps[0][0], axis=0).take(taps[1][0], axis=1).take(taps[2][0], axis=2)
    idx = np.nonzero(contested)
    if len(idx[0]) == 0:
        return nn
    options = [[(t[0], 1.0 - t[2])] + ([(t[1], t[2])] if a in moving else []) for a, t in enumerate(taps)]
    labs_list, w_list = [], []
    for zi, wz in options[0]:
        for yi, wy in options[1]:
            for xi, wx in options[2]:
                labs_list.append(seg[zi[idx[0]], yi[idx[1]], xi[idx[2]]])
                w_list.append(wz[idx[0]] * wy[idx[1]] * wx[idx[2]])
    labs, w = np.stack(labs_list), np.stack(w_list)  # (corners, K); weights float64
    score = np.zeros_like(w)
    for k in range(len(labs)):
        score += w[k] * (labs == labs[k])
    best = score.max(axis=0)
    nn_c = nn[idx]
    nn_score = np.where(labs == nn_c, w, 0.0).sum(axis=0)
    big = np.iinfo(np.int64).max
    smallest_top = np.where(score == best, labs.astype(np.int64), big).min(axis=0)
    nn[idx] = np.where(nn_score == best, nn_c, smallest_top).astype(seg.dtype)
    return nn


def present_labels(seg: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer array (chunked counting: no sort, small temporaries)."""
    flat = seg.reshape(-1)
    if flat.size == 0:
        return []
    lo = int(flat.min())
    counts = np.zeros(int(flat.max()) - lo + 1, dtype=np.int64)
    for start in range(0, flat.size, _SLAB_VOXELS):
        chunk = flat[start : start + _SLAB_VOXELS].astype(np.int64) - lo
        counts += np.bincount(chunk, minlength=counts.size)
    return [int(v) + lo for v in np.flatnonzero(counts)]


def _restore_lost(seg: np.ndarray, out: np.ndarray) -> None:
    """Put back labels of ``seg`` absent from ``out`` at the output voxels holding their voxels' centres."""
    present_out = set(present_labels(out))
    lost = [v for v in present_labels(seg) if v > 0 and v not in present_out]
    if not lost:
        return
    scale = np.array(out.shape, dtype=np.float64) / np.array(seg.shape, dtype=np.float64)
    limit = np.array(out.shape) - 1
    for lab in lost:
        coords = np.argwhere(seg == lab)
        target = np.minimum(np.floor((coords + 0.5) * scale).astype(np.intp), limit)
        out[tuple(target.T)] = lab
