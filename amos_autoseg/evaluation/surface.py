"""Normalized surface Dice (NSD) and surface distances, equal to DeepMind's ``surface-distance``.

The algorithm is the surfel-based one of ``surface_distance.compute_surface_distances`` followed by
``compute_surface_dice_at_tolerance``:

1. crop both masks to the bounding box of their union and compute the neighbour code of every voxel corner
   (:func:`~amos_autoseg.evaluation.surfels.neighbour_codes`);
2. border corners are those with a code other than 0 and 255; each carries the surfel area of its code
   (:func:`~amos_autoseg.evaluation.surfels.surfel_area_table`, float64);
3. the distance from each border corner of one mask to the nearest border corner of the other is the exact
   Euclidean distance transform of scipy with ``sampling=spacing``;
4. NSD = (area of reference surfels within the tolerance of the prediction's surface + area of predicted
   surfels within the tolerance of the reference's surface) / (total reference area + total predicted area).

Only step 4's question - is the distance at most the tolerance? - matters for NSD, and it is answered in one of
two ways that give the same decisions:

- ``"edt"``: scipy's distance transform, run only on the bounding box of the source border widened by the
  tolerance (a target corner outside it is farther than the tolerance from every source corner), with
  distances computed only at the corners that are read, in scipy's own floating-point order, and no sorting;
- ``"offsets"``: every corner offset whose length (rounded as scipy rounds it) is within the tolerance is
  probed directly: the target border is dilated once per run length along the finest axis and looked up at
  the shifted source corners. Cost grows with surface size times the number of offsets, not with volume, so
  it wins for the usual tolerances (1-7 mm).

``"auto"`` picks the cheaper one per organ and direction. Spacing is in array axis order.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from amos_autoseg.evaluation.surfels import border_of, neighbour_codes, surfel_area_table

Spacing = tuple[float, float, float]


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (one slice per axis) holding every true element of ``mask``; ``None`` when empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _check(ref: np.ndarray, pred: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, np.ndarray, Spacing]:
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.ndim != 3 or ref.shape != pred.shape:
        raise ValueError(f"masks must be 3D and of the same shape, got {ref.shape} and {pred.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be 3 positive numbers in array order, got {list(spacing)}")
    return ref, pred, sp  # type: ignore[return-value]


def _search_region(source: np.ndarray, spacing: Spacing, reach_mm: float | None) -> tuple[slice, ...]:
    """Box of the source border corners widened by ``reach_mm`` in each axis (the whole grid when None)."""
    if reach_mm is None or not math.isfinite(reach_mm):
        return tuple(slice(0, n) for n in source.shape)
    box = bounding_box(source)
    assert box is not None  # callers pass a non-empty border
    region = []
    for sl, n, s in zip(box, source.shape, spacing):
        margin = int(math.floor(reach_mm / s)) + 1  # one corner more than needed: float-safe
        region.append(slice(max(0, sl.start - margin), min(n, sl.stop + margin)))
    return tuple(region)


def directed_distances(
    source: np.ndarray,
    target: np.ndarray,
    spacing: Spacing,
    reach_mm: float | None = None,
) -> np.ndarray:
    """Distance in mm from every source border corner to the nearest target border corner.

    Args:
        source: boolean border corners whose distances are wanted (order: ``np.nonzero(source)``).
        target: boolean border corners measured to, same shape.
        spacing: corner spacing in mm (the voxel spacing), array order.
        reach_mm: when given, only distances up to ``reach_mm`` are exact; larger ones are returned as some
            value above ``reach_mm`` (possibly ``inf``). ``None`` computes every distance exactly.

    Returns:
        float64 distances; ``inf`` everywhere when ``target`` has no corner (in reach).
    """
    n_source = int(np.count_nonzero(source))
    if n_source == 0:
        return np.zeros(0, dtype=np.float64)
    region = _search_region(source, spacing, reach_mm)
    tgt = target[region]
    if not tgt.any():
        return np.full(n_source, np.inf)
    nearest = ndimage.distance_transform_edt(~tgt, sampling=spacing, return_distances=False,
                                             return_indices=True)
    where = np.nonzero(source[region])
    # Same arithmetic, in the same order, as scipy's distance output: (index offset * spacing)², summed, sqrt.
    sq = np.zeros(n_source, dtype=np.float64)
    for axis in range(3):
        d = (nearest[axis][where] - where[axis].astype(np.int32)).astype(np.float64)
        d *= spacing[axis]
        sq += d * d
    return np.sqrt(sq)


def _distance(offset: tuple[int, int, int], spacing: Spacing) -> float:
    """Length in mm of a corner offset, rounded exactly as scipy's ``distance_transform_edt`` rounds it."""
    sq = 0.0
    for o, s in zip(offset, spacing):
        d = float(o) * s
        sq = sq + d * d
    return math.sqrt(sq)


def _row_bound(spacing: Spacing, tolerance_mm: float) -> float:
    """Upper bound of ``len(offset_rows(spacing, tolerance_mm)[1])`` without building the rows."""
    if not math.isfinite(tolerance_mm):
        return math.inf
    reach = sorted(math.floor(tolerance_mm / s) + 1 for s in spacing)
    return float((2 * reach[0] + 1) * (2 * reach[1] + 1))


@functools.lru_cache(maxsize=256)
def offset_rows(spacing: Spacing, tolerance_mm: float) -> tuple[int, list[tuple[int, int, int]]]:
    """Every corner offset within ``tolerance_mm``, as runs along the axis with the finest spacing.

    Returns:
        (run axis, rows): each row ``(a, b, w)`` holds the offsets whose two other coordinates are ``a`` and
        ``b`` (in axis order) and whose run-axis coordinate is any of ``-w .. w``.
    """
    if not math.isfinite(tolerance_mm):
        raise ValueError("offset probing needs a finite tolerance")
    axis = int(np.argmin(spacing))
    others = [a for a in range(3) if a != axis]
    reach = [int(math.floor(tolerance_mm / s)) + 1 for s in spacing]
    rows = []
    for a in range(-reach[others[0]], reach[others[0]] + 1):
        for b in range(-reach[others[1]], reach[others[1]] + 1):
            w = -1
            while w < reach[axis]:
                o = [0, 0, 0]
                o[others[0]], o[others[1]], o[axis] = a, b, w + 1
                if _distance(tuple(o), spacing) > tolerance_mm:  # type: ignore[arg-type]
                    break
                w += 1
            if w >= 0:
                rows.append((a, b, w))
    return axis, rows


def within_by_offsets(source: np.ndarray, target: np.ndarray, spacing: Spacing, tolerance_mm: float) -> np.ndarray:
    """For every source border corner (``np.nonzero`` order): is a target border corner within the tolerance?

    Same decision as thresholding the exact distance, found by probing each offset within the tolerance:
    the target is dilated along the finest axis once per run length, then looked up at the shifted corners.
    """
    axis, rows = offset_rows(spacing, tolerance_mm)
    others = [a for a in range(3) if a != axis]
    pad = [0, 0, 0]
    for a, b, _ in rows:
        pad[others[0]] = max(pad[others[0]], abs(a))
        pad[others[1]] = max(pad[others[1]], abs(b))
    tgt = np.pad(target.view(np.uint8), [(p, p) for p in pad])
    strides = [tgt.strides[i] // tgt.itemsize for i in range(3)]
    where = np.nonzero(source)
    base = sum((where[i].astype(np.int64) + pad[i]) * strides[i] for i in range(3))
    hit = np.zeros(len(base), dtype=bool)
    pending = np.arange(len(base))
    dilated: dict[int, np.ndarray] = {}
    # Nearest rows first: most corners of a decent segmentation are settled by the first few.
    for a, b, w in sorted(rows, key=lambda r: (abs(r[0]) + abs(r[1]), -r[2])):
        if w not in dilated:
            dilated[w] = (tgt if w == 0 else ndimage.maximum_filter1d(tgt, 2 * w + 1, axis=axis, mode="constant")
                          ).ravel()
        found = dilated[w][base + (a * strides[others[0]] + b * strides[others[1]])] != 0
        hit[pending[found]] = True
        pending, base = pending[~found], base[~found]
        if len(pending) == 0:
            break
    return hit


def _surfels(mask: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = neighbour_codes(mask)
    border = border_of(codes)
    return border, table[codes[border]]


def surface_dice(
    ref: np.ndarray,
    pred: np.ndarray,
    spacing: Spacing,
    tolerance_mm: float,
    method: str = "auto",
) -> float:
    """Normalized surface Dice of two 3D boolean masks at ``tolerance_mm``.

    Equals ``compute_surface_dice_at_tolerance(compute_surface_distances(ref, pred, spacing), tolerance_mm)``
    of DeepMind's ``surface-distance``: NaN when both masks are empty and 0 when exactly one is.

    Args:
        ref: reference mask (the "ground truth").
        pred: predicted mask, same shape.
        spacing: voxel size in mm, array axis order.
        tolerance_mm: largest surface distance that still counts as overlap (inclusive).
        method: ``"edt"`` thresholds the exact distance transform (on the widened border box), ``"offsets"``
            probes every corner offset within the tolerance (fast for small tolerances), ``"auto"`` picks the
            cheaper one. Both give the same result.
    """
    ref, pred, sp = _check(ref, pred, spacing)
    if not (tolerance_mm >= 0):
        raise ValueError(f"tolerance must be a non-negative number of mm, got {tolerance_mm}")
    box = bounding_box(ref | pred)
    if box is None:
        return math.nan
    table = surfel_area_table(sp)
    border_r, area_r = _surfels(ref[box], table)
    border_p, area_p = _surfels(pred[box], table)
    total = float(area_r.sum() + area_p.sum())
    if not border_r.any() or not border_p.any():
        return 0.0
    overlap = (_overlap(border_r, area_r, border_p, sp, tolerance_mm, method)
               + _overlap(border_p, area_p, border_r, sp, tolerance_mm, method))
    return overlap / total


def _overlap(source: np.ndarray, areas: np.ndarray, target: np.ndarray, spacing: Spacing, tolerance_mm: float,
             method: str) -> float:
    """Area of the source surfels within ``tolerance_mm`` of the target surface."""
    if method == "auto":
        # Probing offsets costs about one lookup per (surfel, offset row); the transform about 4 per corner.
        method = "offsets" if _row_bound(spacing, tolerance_mm) * len(areas) < 4 * source.size else "edt"
    if method == "offsets":
        return float(areas[within_by_offsets(source, target, spacing, tolerance_mm)].sum())
    if method == "edt":
        return float(areas[directed_distances(source, target, spacing, reach_mm=tolerance_mm) <= tolerance_mm].sum())
    raise ValueError(f"unknown method {method!r}; expected 'auto', 'offsets' or 'edt'")


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Spacing) -> dict[str, np.ndarray]:
    """All surfel distances and areas, like ``surface_distance.compute_surface_distances``.

    Returns:
        ``distances_gt_to_pred``, ``distances_pred_to_gt`` (mm, ascending; ties ordered by area) and the matching
        ``surfel_areas_gt``, ``surfel_areas_pred`` (mm²). Empty arrays when both masks are empty; ``inf``
        distances on the side facing an empty mask.
    """
    ref, pred, sp = _check(ref, pred, spacing)
    box = bounding_box(ref | pred)
    empty = np.zeros(0, dtype=np.float64)
    if box is None:
        return {"distances_gt_to_pred": empty, "distances_pred_to_gt": empty,
                "surfel_areas_gt": empty, "surfel_areas_pred": empty}
    table = surfel_area_table(sp)
    border_r, area_r = _surfels(ref[box], table)
    border_p, area_p = _surfels(pred[box], table)
    d_rp = directed_distances(border_r, border_p, sp)
    d_pr = directed_distances(border_p, border_r, sp)
    order_r = np.lexsort((area_r, d_rp))
    order_p = np.lexsort((area_p, d_pr))
    return {"distances_gt_to_pred": d_rp[order_r], "distances_pred_to_gt": d_pr[order_p],
            "surfel_areas_gt": area_r[order_r], "surfel_areas_pred": area_p[order_p]}
