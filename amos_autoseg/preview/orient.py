"""Bring any voxel grid into one display orientation, whatever its direction matrix.

The *canonical* array is indexed ``[s, p, l]``: the first axis runs toward the patient's head (superior), the
second toward the back (posterior), the third toward the patient's left. For an image stored with the identity
direction (LPS, SimpleITK's physical frame) it is exactly ``sitk.GetArrayFromImage``'s array; for any other
direction it is a transposed and flipped *view* of it (no copy, no interpolation).

Each array axis is assigned the physical axis its direction cosine is closest to, choosing among the six axis
permutations the one with the largest summed absolute cosines. An oblique grid (say rotated 20 degrees about z)
is therefore shown on its nearest axes, not resampled: the slices are the stored voxel planes, and
:attr:`Orientation.oblique_deg` says how far they lie from true axial/coronal/sagittal planes (the preview prints
it). Resampling would blur thin structures and cost seconds on a full CT; the nearest-axis view keeps every
voxel as stored and gets left/right, front/back and head/foot right for any rotation below 45 degrees.

Display conventions (radiological): axial seen from the feet, patient right on image left, anterior up;
coronal seen from the front, head up, patient right on image left; sagittal seen from the patient's left,
head up, anterior on image left.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# Letter an index axis points toward, per physical axis (x, y, z of SimpleITK's LPS frame) and sign.
_TOWARD = (("R", "L"), ("A", "P"), ("I", "S"))


@dataclass(frozen=True)
class Orientation:
    """How a stored array maps onto the canonical ``[s, p, l]`` array.

    Attributes:
        axes: for each canonical axis (S, P, L), the stored array axis (z, y, x order) it comes from.
        flips: for each canonical axis, whether the stored axis runs the other way.
        spacing: voxel size in mm of the canonical axes (S, P, L).
        code: three letters, the direction the stored x, y, z index axes point toward (ITK style: ``LPS`` for
            the identity direction, ``RAS`` for a NIfTI-style grid).
        oblique_deg: the largest angle between a stored axis and the physical axis it was assigned.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]
    code: str
    oblique_deg: float

    @property
    def is_oblique(self) -> bool:
        """Whether the stored planes are more than 0.5 degree away from the anatomical planes."""
        return self.oblique_deg > 0.5


def orientation_of(direction: tuple[float, ...], spacing_zyx: tuple[float, float, float]) -> Orientation:
    """Find the axis permutation and flips that turn a stored array into the canonical one.

    Args:
        direction: 3x3 direction cosines, row-major, SimpleITK order (column c is index axis c's direction in
            physical LPS x, y, z).
        spacing_zyx: voxel size in mm in array order (z, y, x).

    Returns:
        The :class:`Orientation`.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    # cos[a, p]: cosine between array axis a (0=z, 1=y, 2=x index) and physical axis p (0=x, 1=y, 2=z).
    cos = np.stack([d[:, 2 - a] for a in range(3)])
    norms = np.linalg.norm(cos, axis=1, keepdims=True)
    cos = cos / np.where(norms > 0, norms, 1.0)
    best = max(itertools.permutations(range(3)), key=lambda perm: sum(abs(cos[a, perm[a]]) for a in range(3)))
    axes = [0, 0, 0]
    flips = [False, False, False]
    spacing = [0.0, 0.0, 0.0]
    worst = 0.0
    for a, p in enumerate(best):
        b = 2 - p  # canonical axis of physical axis p: z -> 0 (S), y -> 1 (P), x -> 2 (L)
        axes[b] = a
        flips[b] = bool(cos[a, p] < 0)
        spacing[b] = float(spacing_zyx[a])
        worst = max(worst, math.degrees(math.acos(min(1.0, abs(float(cos[a, p]))))))
    code = "".join(_TOWARD[best[a]][int(cos[a, best[a]] > 0)] for a in (2, 1, 0))
    return Orientation(tuple(axes), tuple(flips), tuple(spacing), code, round(worst, 2))  # type: ignore[arg-type]


def to_canonical(array: np.ndarray, orient: Orientation) -> np.ndarray:
    """The canonical ``[s, p, l]`` view of a stored (z, y, x) array (no copy)."""
    view = np.transpose(array, orient.axes)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in orient.flips)
    return view[index]


def axial(can: np.ndarray, k: int) -> np.ndarray:
    """Axial plane ``k`` of a canonical array: rows anterior to posterior, columns patient right to left."""
    return can[k]


def coronal(can: np.ndarray, j: int) -> np.ndarray:
    """Coronal plane ``j``: rows head to foot, columns patient right to left."""
    return can[::-1, j, :]


def sagittal(can: np.ndarray, i: int) -> np.ndarray:
    """Sagittal plane ``i``: rows head to foot, columns anterior to posterior."""
    return can[::-1, :, i]


# Per view: the canonical axis held fixed, the (row, column) spacing axes, and the letters at the panel's
# left, right, top and bottom edges.
VIEWS: dict[str, tuple[int, tuple[int, int], tuple[str, str, str, str]]] = {
    "axial": (0, (1, 2), ("R", "L", "A", "P")),
    "coronal": (1, (0, 2), ("R", "L", "S", "I")),
    "sagittal": (2, (0, 1), ("A", "P", "S", "I")),
}

PLANE = {"axial": axial, "coronal": coronal, "sagittal": sagittal}


def from_canonical(can: np.ndarray, orient: Orientation) -> np.ndarray:
    """Inverse of :func:`to_canonical`: the stored (z, y, x) view of a canonical array (no copy)."""
    index = tuple(slice(None, None, -1) if f else slice(None) for f in orient.flips)
    return np.transpose(can[index], np.argsort(orient.axes))


def _canonical_frame(shape: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...],
                     direction: tuple[float, ...]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Canonical shape, spacing, physical position of canonical voxel [0, 0, 0], and canonical axis directions."""
    orient = orientation_of(direction, spacing)  # type: ignore[arg-type]
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    idx_xyz = np.zeros(3)
    axes = np.zeros((3, 3))
    for b, a in enumerate(orient.axes):
        sign = -1.0 if orient.flips[b] else 1.0
        idx_xyz[2 - a] = shape[a] - 1 if orient.flips[b] else 0
        axes[:, b] = sign * d[:, 2 - a]
    corner = np.asarray(origin, dtype=float) + d @ (idx_xyz * np.asarray(spacing[::-1], dtype=float))
    return tuple(shape[a] for a in orient.axes), np.asarray(orient.spacing), corner, axes


def same_box(a, b, rtol: float = 1e-4, atol_mm: float = 1e-3) -> bool:  # noqa: ANN001 - two io.image.Geometry
    """Whether two grids hold the same voxels in space, only with axes stored flipped or in another order.

    Then a label map on grid ``b`` can be shown on an image of grid ``a`` without interpolation
    (``from_canonical(to_canonical(labels, orient_b), orient_a)``).
    """
    fa = _canonical_frame(a.shape, a.spacing, a.origin, a.direction)
    fb = _canonical_frame(b.shape, b.spacing, b.origin, b.direction)
    atol = max(atol_mm, rtol * float(np.abs(fa[2]).max()))
    return (fa[0] == fb[0] and np.allclose(fa[1], fb[1], rtol=rtol, atol=0)
            and np.allclose(fa[2], fb[2], rtol=0, atol=atol) and np.allclose(fa[3], fb[3], rtol=0, atol=1e-4))
