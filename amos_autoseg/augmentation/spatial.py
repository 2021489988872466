"""The spatial transform: rotation and scaling about the centre of the enlarged crop, then the final patch.

Geometry (as batchgeneratorsv2's ``SpatialTransform`` with nnU-Net's settings, elastic deformation off): the
output voxel ``i`` has centred coordinates ``c = i - (p - 1) / 2``; it samples the input at ``A @ c + (s - 1) / 2``
where ``s`` is the enlarged crop's shape and ``A = Rz(a2) @ Ry(a1) @ Rx(a0) @ scale`` (3-d; ``Rx`` turns axes 1 and 2
about axis 0), or the in-plane ``R(a) @ scale`` on axes 1, 2 (dummy 2-d; axis 0 untouched) or on both axes (2-d).
Outside the crop the image is 0 and the segmentation -1, padded *before* interpolating (the image ends at the
outer edge of its border voxels). Without rotation or scaling the patch is a plain crop starting at
``s // 2 - p // 2``.

Application uses ``torch.nn.functional.grid_sample`` on the CPU (``align_corners=False``, zero padding): bilinear
for the image; for the segmentation (:mod:`amos_autoseg.augmentation.labels`) linear on the one-hot labels then
argmax (``seg_order=1``, nnU-Net's default and ours) or nearest (``seg_order=0``, nnU-Net's ``DASegOrd0``
variants). It is the operator nnU-Net's batchgeneratorsv2 uses, so the sampling positions and padding behave
identically, and the batched device path (:mod:`amos_autoseg.augmentation.batched`) runs the same operators.
batchgenerators v1's ``augment_spatial`` is not used because it draws its own parameters from numpy's global
generator.

:func:`input_window` gives the part of the enlarged crop a record actually reads, so the loader can read only
that from disk; sampling from the window gives the same values as sampling from the whole crop, up to the float32
rounding of the normalised sampling positions (image differences below 1e-4; the segmentation was identical in
the tests). The loader always reads the window, so its batches stay bit-reproducible.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import cos, floor, sin
from typing import TYPE_CHECKING

import numpy as np

from amos_autoseg.augmentation.params import AugParams

if TYPE_CHECKING:  # torch is imported on first use: a loader worker that only crops never needs it
    import torch


def affine_matrix(params: AugParams) -> np.ndarray:
    """The ``dims x dims`` matrix mapping centred output coordinates to centred input coordinates."""
    s = params.scale
    if params.dims == 3 and not params.dummy_2d:
        a0, a1, a2 = params.angles
        rx = np.array([[1, 0, 0], [0, cos(a0), -sin(a0)], [0, sin(a0), cos(a0)]])
        ry = np.array([[cos(a1), 0, sin(a1)], [0, 1, 0], [-sin(a1), 0, cos(a1)]])
        rz = np.array([[cos(a2), -sin(a2), 0], [sin(a2), cos(a2), 0], [0, 0, 1]])
        return rz @ ry @ rx @ np.diag([s, s, s])
    (a,) = params.angles
    plane = np.array([[cos(a), -sin(a)], [sin(a), cos(a)]]) @ np.diag([s, s])
    if params.dims == 2:
        return plane
    full = np.eye(3)
    full[1:, 1:] = plane
    return full


def crop_start(in_shape: Sequence[int], patch: Sequence[int]) -> list[int]:
    """Start of the plain centre crop used when neither rotation nor scaling was drawn."""
    return [int(s) // 2 - int(p) // 2 for s, p in zip(in_shape, patch)]


def sample_coordinates(params: AugParams, in_shape: Sequence[int], patch: Sequence[int],
                       offset: Sequence[int] | None = None) -> np.ndarray:
    """Input coordinates ``(dims, *patch)`` (float64) of every output voxel, relative to ``offset``."""
    a = affine_matrix(params)
    dims = len(patch)
    axes = [np.arange(p, dtype=np.float64) - (p - 1) / 2.0 for p in patch]
    shaped = [ax.reshape([-1 if k == d else 1 for k in range(dims)]) for d, ax in enumerate(axes)]
    off = [0] * dims if offset is None else list(offset)
    coords = np.empty((dims, *patch), dtype=np.float64)
    for d in range(dims):
        acc = np.full([1] * dims, (in_shape[d] - 1) / 2.0 - off[d])
        for j in range(dims):
            if a[d, j] != 0.0:
                acc = acc + a[d, j] * shaped[j]
        coords[d] = acc
    return coords


def input_window(params: AugParams, in_shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis ``[lo, hi)`` of the enlarged crop that applying ``params`` reads (clipped to the crop).

    The extreme sample positions lie at the patch corners (the map is affine); one voxel of margin covers the
    linear kernel. Never empty: a window entirely outside is replaced by one voxel at the crop's edge.
    """
    if not params.spatial:
        return [(st, st + int(p)) for st, p in zip(crop_start(in_shape, patch), patch)]
    a = affine_matrix(params)
    half = np.array([(p - 1) / 2.0 for p in patch])
    corners = np.array(np.meshgrid(*[[-h, h] for h in half], indexing="ij")).reshape(len(patch), -1)
    pos = a @ corners + ((np.array(in_shape) - 1) / 2.0)[:, None]
    window = []
    for d, s in enumerate(in_shape):
        lo = max(0, floor(pos[d].min()) - 1)
        hi = min(int(s), floor(pos[d].max()) + 2)
        if hi <= lo:
            lo, hi = (0, 1) if lo <= 0 else (int(s) - 1, int(s))
        window.append((lo, hi))
    return window


def to_grid(coords: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates ``(dims, *patch)`` into ``grid_sample``'s normalised grid (align_corners=False)."""
    import torch

    dims = coords.shape[0]
    parts = [(coords[d] + 0.5) * (2.0 / shape[d]) - 1.0 for d in reversed(range(dims))]  # grid wants x first
    return torch.from_numpy(np.stack(parts, axis=-1).astype(np.float32))[None]


def _sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` of ``(C, *w)`` with zero padding."""
    from torch.nn.functional import grid_sample

    return grid_sample(volume[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def apply_spatial(data: np.ndarray, seg: np.ndarray, params: AugParams, in_shape: Sequence[int],
                  patch: Sequence[int], offset: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotate/scale (or centre-crop) ``data`` (C, *w) float32 and ``seg`` (1, *w) int16 to ``patch``.

    Args:
        data, seg: the enlarged crop, or the part of it starting at ``offset`` (see :func:`input_window`).
        params: the record.
        in_shape: shape of the whole enlarged crop (defines the centre).
        patch: output spatial shape.
        offset: where ``data`` starts inside the enlarged crop (None: it is the whole crop).

    Returns:
        ``(C, *patch)`` float32 and ``(1, *patch)`` int16; outside the crop 0 and -1.
    """
    off = [0] * len(patch) if offset is None else [int(o) for o in offset]
    if not params.spatial:
        start = [st - o for st, o in zip(crop_start(in_shape, patch), off)]
        region = tuple(slice(st, st + int(p)) for st, p in zip(start, patch))
        return (np.ascontiguousarray(data[(slice(None), *region)], dtype=np.float32),
                np.ascontiguousarray(seg[(slice(None), *region)], dtype=np.int16))
    import torch

    from amos_autoseg.augmentation.labels import linear_labels, nearest_labels

    grid = to_grid(sample_coordinates(params, in_shape, patch, off), data.shape[1:])
    out = _sample(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), grid).numpy()
    labels = torch.from_numpy(np.ascontiguousarray(seg, dtype=np.int16))[None]
    sample = nearest_labels if params.seg_order == 0 else linear_labels
    return out, sample(labels, grid)[0].numpy()
