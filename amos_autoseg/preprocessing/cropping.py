"""Crop to the nonzero (body) box, nnU-Net's rule, without filling holes in the whole volume.

The mask is the union over channels of ``data != 0`` with its holes filled (a hole: a zero region not connected,
face to face, to the image border). Filling holes cannot grow the bounding box, and a zero region inside the box
is connected to the border of the image exactly when it touches the border of the box, so the holes are found
by labelling the zero voxels inside the box only. Voxels outside the mask are -1 in the label map when they are
background there, which keeps them out of foreground sampling and marks them for masked normalisation.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

OUTSIDE = -1  # label value of voxels outside the body mask


def nonzero_bbox(data: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Bounding box ``[[start, stop), ...]`` of the nonzero voxels of ``data`` (C, Z, Y, X) and the mask in it.

    An image without any nonzero voxel keeps its full extent (and an all-False mask).

    Returns:
        the box per spatial axis and the hole-filled mask (bool) of the cropped region.
    """
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bbox.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, mask.shape[axis]])
    crop = np.ascontiguousarray(mask[tuple(slice(a, b) for a, b in bbox)])
    return bbox, _fill_holes(crop)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (face connectivity) via one labelling of the zero voxels."""
    if mask.all() or not mask.any():
        return mask
    labels, n = ndi.label(~mask)
    if n == 0:
        return mask
    border = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            border[np.take(labels, index, axis=axis)] = True
    border[0] = True  # label 0 = the mask itself
    hole = ~border[labels]
    del labels
    return mask | hole


def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[list[int]]]:
    """Crop ``data`` (C, Z, Y, X) and ``seg`` (Z, Y, X) to the body box.

    Returns:
        cropped data (a copy), cropped seg (int16 copy with :data:`OUTSIDE` where background lies outside the
        mask, or ``None``), the body mask of the crop, and the box (``[start, stop)`` per axis).
    """
    bbox, mask = nonzero_bbox(data)
    region = tuple(slice(a, b) for a, b in bbox)
    cropped = np.ascontiguousarray(data[(slice(None), *region)])
    out_seg = None
    if seg is not None:
        out_seg = np.array(seg[region], dtype=np.int16)
        out_seg[(out_seg == 0) & ~mask] = OUTSIDE
    return cropped, out_seg, mask, bbox
