"""DSC and NSD of one case for every label (their means: :mod:`amos_autoseg.evaluation.aggregate`).

Empty rules (CONTRACT.md): a label absent from both reference and prediction scores 1 for both metrics; a label
present in only one of them scores 0 for both. Otherwise DSC is volumetric Dice and NSD the surfel-based
normalized surface Dice of :mod:`amos_autoseg.evaluation.surface`.

Speed: the bounding boxes of all labels come from one pass over each volume (``scipy.ndimage.find_objects``);
each label is then compared, coded and distance-transformed only inside the box around both of its masks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from amos_autoseg.evaluation.dice import dice_from_counts
from amos_autoseg.evaluation.surface import Spacing, surface_dice

Tolerance = float | Mapping[int, float]
METRICS: tuple[str, ...] = ("dsc", "nsd")


def tolerance_of(tolerance: Tolerance, label: int) -> float:
    """The NSD tolerance in mm for ``label``: the number itself, or the label's entry of a per-label map."""
    if isinstance(tolerance, Mapping):
        if label not in tolerance:
            raise ValueError(f"no NSD tolerance for label {label} (tolerances given for {sorted(tolerance)})")
        return float(tolerance[label])
    return float(tolerance)


def _as_label_array(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D label map, got shape {a.shape}")
    if a.dtype == bool:
        return a.view(np.uint8)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if a is None:
        return b  # type: ignore[return-value]
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing,
    labels: Sequence[int],
    tolerance_mm: Tolerance = 1.0,
    ignore_label: int | None = None,
) -> dict[int, dict[str, float]]:
    """DSC and NSD of every label of one case.

    Args:
        pred: predicted integer label map (z, y, x).
        ref: reference integer label map, same shape.
        spacing: the reference image's voxel size in mm, array order (z, y, x).
        labels: foreground label ids to score (positive integers).
        tolerance_mm: NSD tolerance in mm, one number or one per label.
        ignore_label: voxels where the reference holds this label (nnU-Net's ignore label: not annotated) are
            left out: both maps count as background there.

    Returns:
        label -> ``{"dsc": ..., "nsd": ...}``, both in [0, 1].

    Examples:
        >>> ref = np.zeros((4, 4, 4), np.uint8); ref[1:3, 1:3, 1:3] = 1
        >>> evaluate_case(ref, ref, (1.0, 1.0, 1.0), [1, 2])
        {1: {'dsc': 1.0, 'nsd': 1.0}, 2: {'dsc': 1.0, 'nsd': 1.0}}
    """
    return evaluate_case_detailed(pred, ref, spacing, labels, tolerance_mm, ignore_label)[0]


def evaluate_case_detailed(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing,
    labels: Sequence[int],
    tolerance_mm: Tolerance = 1.0,
    ignore_label: int | None = None,
) -> tuple[dict[int, dict[str, float]], dict[str, list[int]]]:
    """:func:`evaluate_case`, plus which labels each side holds.

    Returns:
        (scores, presence) with presence ``{"ref_labels": [...], "pred_labels": [...]}``: the scored labels
        present in the reference and in the prediction.
    """
    pred = _as_label_array(pred, "pred")
    ref = _as_label_array(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    if ignore_label is not None:
        unannotated = ref == ignore_label
        if unannotated.any():
            pred, ref = pred.copy(), ref.copy()
            pred[unannotated], ref[unannotated] = 0, 0
    labels = [int(v) for v in labels]
    if any(v <= 0 for v in labels):
        raise ValueError(f"labels must be positive foreground ids, got {labels}")
    if not labels:
        return {}, {"ref_labels": [], "pred_labels": []}
    top = max(labels)
    ref_boxes = ndimage.find_objects(ref, max_label=top)
    pred_boxes = ndimage.find_objects(pred, max_label=top)
    out: dict[int, dict[str, float]] = {}
    for label in labels:
        tol = tolerance_of(tolerance_mm, label)
        rb, pb = ref_boxes[label - 1], pred_boxes[label - 1]
        if rb is None and pb is None:
            out[label] = {"dsc": 1.0, "nsd": 1.0}
            continue
        if rb is None or pb is None:
            out[label] = {"dsc": 0.0, "nsd": 0.0}
            continue
        box = _union(rb, pb)
        r = ref[box] == label
        p = pred[box] == label
        inter = int(np.count_nonzero(r & p))
        dsc = dice_from_counts(inter, int(np.count_nonzero(r)), int(np.count_nonzero(p)))
        out[label] = {"dsc": float(dsc), "nsd": float(surface_dice(r, p, spacing, tol))}
    presence = {"ref_labels": [v for v in labels if ref_boxes[v - 1] is not None],
                "pred_labels": [v for v in labels if pred_boxes[v - 1] is not None]}
    return out, presence
