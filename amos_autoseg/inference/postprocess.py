"""Per-organ post-processing rules, chosen on cross-validation predictions and applied by ``predict``.

Three rules, applied in this order:

1. **left/right fix** for organ pairs (``amos_autoseg.labels.LEFT_RIGHT_PAIRS``: kidneys, adrenal glands): every
   connected component of the pair's union is given the right-side label when its centroid lies on the patient's
   right of the body midline, else the left-side label. Positions are physical (LPS: x grows towards the patient's
   left), so oblique and flipped images are handled. The midline is halfway between the centroids of the aorta
   and the inferior vena cava when both are predicted (the aorta runs just left of it, the cava just right), else
   the mean x of all foreground voxels.
2. **keep the largest component** of an organ (nnU-Net's rule); the other components become background.
3. **drop components smaller than a volume** (mm^3) of an organ.

Components are 26-connected, as in nnU-Net (skimage's full connectivity). :func:`determine_postprocessing` tries
each rule per organ on cross-validation predictions and keeps it only when it raises that organ's mean DSC over the
cases (for a pair, when the pair's mean rises and neither organ's falls) -- nnU-Net's acceptance rule. The rules are
stored as ``EXP/<config>/postprocessing.json``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import Geometry
from amos_autoseg.utils import atomic
from amos_autoseg.utils.dataclass_json import SchemaError, from_jsonable, to_jsonable

log = logging.getLogger(__name__)

AORTA, IVC = 8, 9
STRUCTURE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity
SMALL_FRACTIONS = (0.01, 0.05, 0.1, 0.2)  # candidate thresholds, as fractions of the median reference volume


@dataclass(frozen=True)
class PostprocessingRules:
    """Which rule applies to which organ.

    Attributes:
        left_right: (right-side label, left-side label) pairs to relabel by body side.
        keep_largest: labels reduced to their largest component.
        min_volume_mm3: label -> components below this volume are removed.
        evidence: label -> mean DSC before and after the accepted rules, on the cases they were chosen on.
    """

    left_right: list[tuple[int, int]] = field(default_factory=list)
    keep_largest: list[int] = field(default_factory=list)
    min_volume_mm3: dict[int, float] = field(default_factory=dict)
    evidence: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.left_right or self.keep_largest or self.min_volume_mm3)


def save_rules(rules: PostprocessingRules, path: str | os.PathLike[str]) -> None:
    """Write ``rules`` as JSON, atomically."""
    atomic.write_json(path, to_jsonable(rules))


def load_rules(path: str | os.PathLike[str]) -> PostprocessingRules:
    """Read rules written by :func:`save_rules`."""
    path = Path(path)
    try:
        return from_jsonable(PostprocessingRules, json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(path, "post-processing rules not found") from None
    except (json.JSONDecodeError, SchemaError) as exc:
        raise InputError(path, f"is not a valid post-processing file ({exc})") from None


def apply_postprocessing(labels: np.ndarray, geometry: Geometry, rules: PostprocessingRules) -> np.ndarray:
    """``labels`` (z, y, x) with the rules applied (a new array; the input is left as is)."""
    out = labels.copy()
    for right, left in rules.left_right:
        out = fix_left_right(out, geometry, right, left)
    for label in rules.keep_largest:
        out = keep_largest_component(out, label)
    voxel_mm3 = float(np.prod(geometry.spacing))
    for label, volume in rules.min_volume_mm3.items():
        out = remove_small_components(out, label, int(np.ceil(volume / voxel_mm3)))
    return out


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    comp, n = ndimage.label(mask, structure=STRUCTURE)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    return comp, sizes


def _box(labels: np.ndarray, values: Sequence[int]) -> tuple[slice, ...] | None:
    """Bounding box of the voxels holding any of ``values``, or ``None`` when there are none."""
    mask = np.isin(labels, values)
    if not mask.any():
        return None
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))


def keep_largest_component(labels: np.ndarray, label: int) -> np.ndarray:
    """Set every component of ``label`` but the largest to background (ties: the first found)."""
    box = _box(labels, [label])
    if box is None:
        return labels
    sub = labels[box]
    comp, sizes = _components(sub == label)
    if len(sizes) <= 2:
        return labels
    largest = int(np.argmax(sizes[1:])) + 1
    out = labels.copy()
    out[box][(comp != largest) & (comp > 0)] = 0
    return out


def remove_small_components(labels: np.ndarray, label: int, min_voxels: int) -> np.ndarray:
    """Set components of ``label`` with fewer than ``min_voxels`` voxels to background."""
    box = _box(labels, [label])
    if box is None or min_voxels <= 1:
        return labels
    comp, sizes = _components(labels[box] == label)
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    if small.size == 0:
        return labels
    out = labels.copy()
    out[box][np.isin(comp, small)] = 0
    return out


def physical_x(index_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Physical x (LPS, mm) of voxel positions given as rows of (z, y, x) indices (fractional allowed)."""
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing_xyz = np.asarray(geometry.spacing[::-1], dtype=float)
    xyz = np.asarray(index_zyx, dtype=float)[..., ::-1] * spacing_xyz
    return geometry.origin[0] + xyz @ d[0]


def body_midline_x(labels: np.ndarray, geometry: Geometry) -> float | None:
    """Physical x of the body midline (see the module doc), or ``None`` without any foreground."""
    present = [lab for lab in (AORTA, IVC) if np.any(labels == lab)]
    if len(present) == 2:
        centres = ndimage.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, present)
        return float(np.mean(physical_x(np.asarray(centres), geometry)))
    fg = np.argwhere(labels > 0)
    if fg.size == 0:
        return None
    return float(physical_x(fg.mean(axis=0), geometry))


def fix_left_right(labels: np.ndarray, geometry: Geometry, right: int, left: int) -> np.ndarray:
    """Relabel each component of ``right`` or ``left`` by the side of the midline its centroid lies on."""
    box = _box(labels, [right, left])
    if box is None:
        return labels
    midline = body_midline_x(labels, geometry)
    assert midline is not None
    sub = labels[box]
    comp, sizes = _components((sub == right) | (sub == left))
    ids = np.arange(1, len(sizes))
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(comp, dtype=np.uint8), comp, ids)).reshape(-1, 3)
    offset = np.array([b.start for b in box], dtype=float)
    xs = physical_x(centres + offset, geometry)
    lut = np.zeros(len(sizes), dtype=labels.dtype)
    lut[1:] = np.where(xs < midline, right, left)  # LPS: smaller x is the patient's right
    out = labels.copy()
    member = comp > 0
    out[box][member] = lut[comp[member]]
    return out


def dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    """DSC of one label; 1 when absent from both (CONTRACT.md)."""
    p, r = pred == label, ref == label
    denom = int(p.sum()) + int(r.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom
