"""Resampling of images, probabilities and label maps to a new grid, nnU-Net's rules at a fraction of the cost.

Semantics (those of nnU-Net v2's ``default_resampling``, which calls scikit-image ``resize`` with
``mode="edge"``, ``anti_aliasing=False`` and ``clip=True``; grid in :mod:`.grid`):

* images: cubic B-spline (order 3, with the spline prefilter), output clipped to the input's value range;
* probabilities (export): linear (order 1);
* label maps: linear per label and argmax (:mod:`.labelmaps`, re-exported here);
* anisotropic grids (spacing ratio above ``anisotropy_threshold``): the thick axis is resampled on its own with
  ``order_z`` (nearest by default) after the in-plane resampling of every slice (clipped per slice).

How it is faster: a tensor-product spline is separable, so the 3D interpolation (64 taps per voxel in float64 in
scikit-image) is done as one 1D pass per axis (4 taps, float32) written as a sparse matrix product
``W (m x n) @ block (n x voxels)``; the prefilter is the classic recursive filter run over whole planes. Results
match scikit-image to float32 rounding (tests/test_preprocessing_resample.py) and nnU-Net's
``resample_data_or_seg_to_shape`` to 1e-7 for images and voxel for voxel for label maps
(benchmarks/preprocess_vs_nnunet.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sparse

from amos_autoseg.preprocessing.grid import (
    compute_new_shape,
    linear_taps,
    nearest_indices,
    sample_positions,
    separate_axis,
)
from amos_autoseg.preprocessing.labelmaps import present_labels, resample_labels

__all__ = [
    "compute_new_shape",
    "linear_taps",
    "nearest_indices",
    "present_labels",
    "resample_image",
    "resample_labels",
    "sample_positions",
    "separate_axis",
]

try:  # scipy's kernel of ``csr @ dense``, called directly to accumulate into the output without a copy
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a future scipy may move it
    _csr_matvecs = None

PAD = 12  # edge replication before the spline prefilter, as scipy.ndimage does for mode "nearest"
_Z = float(np.sqrt(3.0) - 2.0)  # pole of the cubic B-spline prefilter


def _matrix(n_in: int, n_out: int, order: int) -> tuple[sparse.csr_matrix, int]:
    """Interpolation matrix (n_out x n_in + 2 * pad) of one axis and the padding it expects."""
    if order == 3:
        x = sample_positions(n_in, n_out) + PAD
        start = np.floor(x).astype(np.intp) - 1
        t = x - np.floor(x)
        w = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]) / 6.0
        cols = start[None, :] + np.arange(4)[:, None]
        pad = PAD
    elif order == 1:
        lo, hi, w_hi = linear_taps(n_in, n_out)
        cols, w, pad = np.stack([lo, hi]), np.stack([1.0 - w_hi, w_hi]), 0
    elif order == 0:
        cols, w, pad = nearest_indices(n_in, n_out)[None, :], np.ones((1, n_out)), 0
    else:
        raise ValueError(f"interpolation order {order} is not supported (0, 1 or 3)")
    rows = np.broadcast_to(np.arange(n_out)[None, :], cols.shape)
    mat = sparse.csr_matrix(
        (w.ravel().astype(np.float32), (rows.ravel(), cols.ravel())), shape=(n_out, n_in + 2 * pad)
    )
    return mat, pad


def _prefilter(c: np.ndarray, axis: int) -> None:
    """Cubic B-spline prefilter along ``axis``, in place (constant extension at both ends).

    The causal and anti-causal recursions run over whole hyperplanes (``c[..., k, ...]``), so numpy does the
    work for all lines at once.
    """
    z = np.float32(_Z)

    def at(k: int) -> np.ndarray:
        return c[(slice(None),) * axis + (k,)]

    c *= np.float32(6.0)
    tmp = np.empty_like(at(0))
    at(0)[...] *= np.float32(1.0 / (1.0 - _Z))
    for k in range(1, c.shape[axis]):
        np.multiply(at(k - 1), z, out=tmp)
        at(k)[...] += tmp
    at(c.shape[axis] - 1)[...] *= np.float32(_Z / (_Z - 1.0))
    for k in range(c.shape[axis] - 2, -1, -1):
        cur = at(k)
        np.subtract(at(k + 1), cur, out=cur)
        cur *= z


def _resample_axis(x: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """One 1D interpolation pass of ``x`` (float32) along ``axis``; returns a C-contiguous array.

    The axis is interpolated as ``W @ block`` with ``block`` of shape (axis length, voxels): per index of the
    preceding axes when the trailing ones are large (no transposition at all), else per chunk transposed so
    that the axis leads (the last axis).
    """
    n_in = x.shape[axis]
    if n_in == n_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    if order == 0:
        return np.ascontiguousarray(np.take(x, nearest_indices(n_in, n_out), axis=axis))
    mat, pad = _matrix(n_in, n_out, order)
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (pad, pad)
        c = np.pad(np.asarray(x, dtype=np.float32), widths, mode="edge")
    else:
        c = np.ascontiguousarray(x, dtype=np.float32)
    n_c = c.shape[axis]
    lead, trail = int(np.prod(c.shape[:axis])), int(np.prod(c.shape[axis + 1 :]))
    src = c.reshape(lead, n_c, trail)
    out = np.zeros((lead, n_out, trail), dtype=np.float32)
    if trail >= 256:
        if order == 3:
            _prefilter(src, 1)
        for a in range(lead):
            _matmul_into(mat, src[a], out[a])
    else:
        step = max(1, (1 << 21) // (n_c * trail))
        for a0 in range(0, lead, step):
            blk = np.ascontiguousarray(src[a0 : a0 + step].transpose(1, 0, 2)).reshape(n_c, -1)
            if order == 3:
                _prefilter(blk, 0)
            out[a0 : a0 + step] = (mat @ blk).reshape(n_out, -1, trail).transpose(1, 0, 2)
    return out.reshape(*x.shape[:axis], n_out, *x.shape[axis + 1 :])


def _matmul_into(mat: sparse.csr_matrix, x: np.ndarray, out: np.ndarray) -> None:
    """``out += mat @ x`` for C-contiguous float32 ``x`` (n, V) and ``out`` (m, V), without temporaries."""
    if _csr_matvecs is None:
        out += mat @ x
        return
    _csr_matvecs(mat.shape[0], mat.shape[1], x.shape[1], mat.indptr, mat.indices, mat.data,
                 x.reshape(-1), out.reshape(-1))


def _resample_volume(
    vol: np.ndarray, new_shape: Sequence[int], axes: Sequence[int], order: int, per_slice_axis: int | None
) -> np.ndarray:
    """Resample the given axes of one 3D float32 volume with ``order``; clip to the input range."""
    if order > 1:
        if per_slice_axis is None:
            lo_v, hi_v = np.float32(vol.min()), np.float32(vol.max())
        else:
            other = tuple(a for a in range(3) if a != per_slice_axis)
            shape = [1, 1, 1]
            shape[per_slice_axis] = vol.shape[per_slice_axis]
            lo_v = vol.min(axis=other).reshape(shape)
            hi_v = vol.max(axis=other).reshape(shape)
    # shrinking axes first keeps the later passes small
    for a in sorted(axes, key=lambda a: new_shape[a] / vol.shape[a]):
        vol = _resample_axis(vol, a, int(new_shape[a]), order)
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    if order > 1 and vol.size:
        np.clip(vol, lo_v, hi_v, out=vol)
    return vol


def resample_image(
    data: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    anisotropy_threshold: float = 3.0,
) -> np.ndarray:
    """Resample an image or probabilities ``(C, Z, Y, X)`` to ``new_shape`` (float32 out).

    Args:
        data: channels first; any float or integer dtype.
        new_shape: spatial output shape (usually :func:`compute_new_shape`).
        current_spacing: spacing of ``data``'s grid (decides the separate axis).
        target_spacing: spacing of the output grid.
        order: 3 (images, cubic B-spline), 1 (probabilities, linear) or 0 (nearest).
        order_z: order along the separate (thick) axis when there is one: 0 or 1.
        force_separate_z: ``None`` decides from the spacings; ``True``/``False`` forces it.
        anisotropy_threshold: spacing ratio above which an axis is resampled separately.
    """
    if data.ndim != 4:
        raise ValueError(f"data must be (C, Z, Y, X), got shape {data.shape}")
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return np.array(data, dtype=np.float32)
    sep = separate_axis(current_spacing, target_spacing, force_separate_z, anisotropy_threshold)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for ch in range(data.shape[0]):
        vol = np.asarray(data[ch], dtype=np.float32)
        if sep is None:
            out[ch] = _resample_volume(vol, new_shape, (0, 1, 2), order, None)
        else:
            in_plane = [a for a in range(3) if a != sep]
            vol = _resample_volume(vol, new_shape, in_plane, order, sep)
            out[ch] = _resample_axis(vol, sep, new_shape[sep], order_z)
    return out
