"""DSC and NSD of one case for every label, and their means as metrics.json lays them out.

Empty rules (CONTRACT.md): a label absent from both reference and prediction scores 1 for both metrics; a label
present in only one of them scores 0 for both. Otherwise DSC is volumetric Dice and NSD the surfel-based
normalized surface Dice of :mod:`amos_autoseg.evaluation.surface`.

Speed: the bounding boxes of all labels come from one pass over each volume (``scipy.ndimage.find_objects``);
each label is then compared, coded and distance-transformed only inside the box around both of its masks.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _label_means(per_case: Mapping[str, Mapping[str, Any]], labels: Sequence[int]) -> dict[str, dict[str, float]]:
    return {
        str(label): {m: _mean([c["labels"][str(label)][m] for c in per_case.values()]) for m in METRICS}
        for label in labels
    }


def _over_labels(per_label: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {m: _mean([v[m] for v in per_label.values()]) for m in METRICS}


def aggregate(
    per_case: Mapping[str, Mapping[str, Any]],
    labels: Sequence[int],
    tolerance_mm: Tolerance,
) -> dict[str, Any]:
    """Build the metrics.json content from per-case scores.

    Means are over labels of the mean over cases: ``per_label`` averages each label over all cases,
    ``per_modality`` does so within one modality, ``mean`` averages ``per_label`` over labels. The extra key
    ``per_modality_label`` keeps the per-label means of each modality (the report's table) and
    ``cases_per_modality`` the case counts.

    Args:
        per_case: case -> ``{"modality": str, "labels": {"<label>": {"dsc", "nsd"}}}`` (extra keys kept).
        labels: the scored label ids.
        tolerance_mm: the NSD tolerance used, a number or a per-label map.
    """
    if not per_case:
        raise ValueError("no case to aggregate")
    labels = [int(v) for v in labels]
    per_label = _label_means(per_case, labels)
    modalities = sorted({str(c["modality"]) for c in per_case.values()})
    per_modality_label = {
        mod: _label_means({k: c for k, c in per_case.items() if c["modality"] == mod}, labels)
        for mod in modalities
    }
    tol: float | dict[str, float] = (
        {str(k): tolerance_of(tolerance_mm, k) for k in sorted(labels)} if isinstance(tolerance_mm, Mapping)
        else float(tolerance_mm)
    )
    return {
        "nsd_tolerance_mm": tol,
        "per_case": {k: dict(per_case[k]) for k in sorted(per_case)},
        "per_label": per_label,
        "per_modality": {mod: _over_labels(v) for mod, v in per_modality_label.items()},
        "mean": _over_labels(per_label),
        "per_modality_label": per_modality_label,
        "cases_per_modality": {mod: sum(c["modality"] == mod for c in per_case.values()) for mod in modalities},
    }
