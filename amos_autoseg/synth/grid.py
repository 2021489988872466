"""The voxel grid of a synthetic case: spacing, size, direction, origin, and patient-to-scanner offset.

Anatomy is defined in *patient millimetres* (LPS: +x patient left, +y posterior, +z superior; 0 at the
midline, mid-body depth, and the L1/L2 disc). The scanner frame is the patient frame shifted by ``offset``
(table height, couch position). A voxel with SimpleITK index (i, j, k) lies at
``origin + direction @ (spacing * (i, j, k))``; arrays are stored (k, j, i) = (z, y, x) as SimpleITK returns
them. :func:`patient_coords` evaluates those positions for a block of voxels by broadcasting three 1-D ranges,
so no full coordinate volume is ever built.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amos_autoseg.io.image import Geometry

DIRECTION_KINDS: tuple[str, ...] = ("identity", "las", "ras", "flip_z", "oblique")


@dataclass(frozen=True)
class Grid:
    """A voxel grid placed in the patient frame.

    Attributes:
        shape: array shape (z, y, x).
        spacing: voxel size in mm, (x, y, z) as SimpleITK orders it.
        origin: physical position of voxel (0, 0, 0), scanner mm.
        direction: 3x3 direction cosines (columns = index axes in physical space).
        offset: scanner position of the patient frame's origin, mm.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    offset: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """3x3 matrix taking (i, j, k) index steps to physical mm."""
        return self.direction * np.asarray(self.spacing)[None, :]

    def geometry(self) -> Geometry:
        """The :class:`~amos_autoseg.io.image.Geometry` to write the case with."""
        return Geometry(
            shape=self.shape,
            spacing=(self.spacing[2], self.spacing[1], self.spacing[0]),
            origin=tuple(float(v) for v in self.origin),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in self.direction.ravel()),
        )


def patient_coords(grid: Grid, ks: slice, js: slice, is_: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-frame (x, y, z) of the voxel centres of ``array[ks, js, is_]`` as float32 arrays.

    The result broadcasts to the block's shape (each component is a full block array).
    """
    a = grid.affine
    k = np.arange(ks.start, ks.stop, dtype=np.float64)[:, None, None]
    j = np.arange(js.start, js.stop, dtype=np.float64)[None, :, None]
    i = np.arange(is_.start, is_.stop, dtype=np.float64)[None, None, :]
    base = grid.origin - grid.offset
    out = []
    for row in range(3):
        comp = (np.float32(base[row]) + (a[row, 2] * k).astype(np.float32)
                + (a[row, 1] * j).astype(np.float32) + (a[row, 0] * i).astype(np.float32))
        out.append(comp)
    return out[0], out[1], out[2]


def index_box(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Array slices (z, y, x) covering the patient-frame box [lo, hi], or ``None`` when it misses the grid."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    phys = corners + grid.offset
    idx = np.linalg.solve(grid.affine, (phys - grid.origin).T).T  # (8, 3) continuous (i, j, k)
    first = np.floor(idx.min(axis=0)).astype(int)
    last = np.ceil(idx.max(axis=0)).astype(int) + 1
    size_ijk = np.array([grid.shape[2], grid.shape[1], grid.shape[0]])
    first = np.clip(first, 0, size_ijk)
    last = np.clip(last, 0, size_ijk)
    if np.any(last <= first):
        return None
    return slice(first[2], last[2]), slice(first[1], last[1]), slice(first[0], last[0])


def direction_matrix(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A direction matrix of the given kind.

    ``identity`` (DICOM-like LPS), ``las`` (AMOS NIfTI files: the y index runs anterior), ``ras`` (x and y
    flipped), ``flip_z`` (slices stored head to foot), ``oblique`` (tilted a few degrees, sometimes flipped).
    """
    if kind == "identity":
        return np.eye(3)
    if kind == "las":
        return np.diag([1.0, -1.0, 1.0])
    if kind == "ras":
        return np.diag([-1.0, -1.0, 1.0])
    if kind == "flip_z":
        return np.diag([1.0, 1.0, -1.0])
    if kind == "oblique":
        from amos_autoseg.synth.shapes import rotation

        angles = rng.uniform(3.0, 12.0, size=3) * rng.choice([-1.0, 1.0], size=3)
        m = rotation(angles[0], angles[1] * 0.5, angles[2] * 0.5)
        if rng.uniform() < 0.5:
            m = m @ np.diag([1.0, -1.0, 1.0])
        return m
    raise ValueError(f"unknown direction kind {kind!r}; expected one of {DIRECTION_KINDS}")


def place_grid(
    shape_zyx: tuple[int, int, int],
    spacing_xyz: tuple[float, float, float],
    direction: np.ndarray,
    centre_patient: np.ndarray,
    offset: np.ndarray,
) -> Grid:
    """A grid of the given size and spacing whose centre lies at ``centre_patient`` (patient mm)."""
    size_ijk = np.array([shape_zyx[2], shape_zyx[1], shape_zyx[0]], dtype=float)
    half = direction @ (np.asarray(spacing_xyz) * (size_ijk - 1) / 2.0)
    origin = centre_patient + offset - half
    return Grid(shape=shape_zyx, spacing=spacing_xyz, origin=np.round(origin, 3),
                direction=direction, offset=offset)
