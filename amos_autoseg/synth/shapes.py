"""Implicit shapes in patient millimetres: ellipsoids and tubes along polylines.

Every shape has ``bounds()`` (an axis-aligned box in patient mm, used to visit only the voxels that can be
inside) and ``level(x, y, z)``: a float32 array that is <= 0 inside and 0 on the surface, scaled so that
-1 is the shape's core (the centre of an ellipsoid, the centre line of a tube). Inner parts of an organ
(kidney medulla, stomach lumen) are iso-levels of the same function.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Level = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def rotation(rz_deg: float = 0.0, ry_deg: float = 0.0, rx_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (angles in degrees); its columns are the shape's local axes."""
    cz, sz = np.cos(np.deg2rad(rz_deg)), np.sin(np.deg2rad(rz_deg))
    cy, sy = np.cos(np.deg2rad(ry_deg)), np.sin(np.deg2rad(ry_deg))
    cx, sx = np.cos(np.deg2rad(rx_deg)), np.sin(np.deg2rad(rx_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Wobble:
    """A smooth shape irregularity: a sum of plane waves added to the level function.

    Attributes:
        k: wave vectors (n, 3) in 1/mm.
        phase: phases (n,) in radians.
        amp: amplitude in level units (0.1 moves the surface by about 10 % of the radius).
    """

    k: np.ndarray
    phase: np.ndarray
    amp: float

    @classmethod
    def sample(cls, rng: np.random.Generator, amp: float, wavelength_mm: float, n: int = 3) -> Wobble:
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        k = dirs * (2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.3, size=(n, 1))))
        return cls(k=k, phase=rng.uniform(0, 2 * np.pi, size=n), amp=float(amp) / np.sqrt(n))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out += np.cos(np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(ph))
        out *= np.float32(self.amp)
        return out


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with centre ``c`` (mm), semi-axes ``r`` (mm) along the columns of ``rot``."""

    c: np.ndarray
    r: np.ndarray
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    wobble: Wobble | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rot * self.r[None, :]) ** 2).sum(axis=1))
        margin = 1.0 + (self.wobble.amp * np.sqrt(len(self.wobble.phase)) if self.wobble else 0.0)
        return self.c - half * margin, self.c + half * margin

    def pieces(self) -> list[tuple[tuple[np.ndarray, np.ndarray], Level]]:
        """Parts whose minimum is :meth:`level`, each with its own bounds (one for an ellipsoid)."""
        return [(self.bounds(), self.level)]

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = x - np.float32(self.c[0]), y - np.float32(self.c[1]), z - np.float32(self.c[2])
        q = np.zeros(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), dtype=np.float32)
        for a in range(3):
            u = (dx * np.float32(self.rot[0, a]) + dy * np.float32(self.rot[1, a])
                 + dz * np.float32(self.rot[2, a])) * np.float32(1.0 / self.r[a])
            q += u * u
        f = np.sqrt(q) - np.float32(1.0)
        if self.wobble is not None:
            f += self.wobble(dx, dy, dz)
        return f


@dataclass(frozen=True)
class Tube:
    """A tube of varying radius around a polyline ``points`` (n, 3) with radii ``radii`` (n,), in mm."""

    points: np.ndarray
    radii: np.ndarray
    wobble: Wobble | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        rmax = float(self.radii.max()) * (1.0 + (self.wobble.amp * 2 if self.wobble else 0.0))
        return self.points.min(axis=0) - rmax, self.points.max(axis=0) + rmax

    def pieces(self) -> list[tuple[tuple[np.ndarray, np.ndarray], Level]]:
        """One piece per segment, each with its own bounds, so long tubes visit few voxels."""
        out = []
        grow = 1.0 + (self.wobble.amp * 2 if self.wobble else 0.0)
        for n in range(len(self.points) - 1):
            a, b = self.points[n], self.points[n + 1]
            r = max(self.radii[n], self.radii[n + 1]) * grow
            bounds = (np.minimum(a, b) - r, np.maximum(a, b) + r)
            out.append((bounds, functools.partial(self._segment_level, n)))
        return out

    def _segment_level(self, n: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        a, b = self.points[n], self.points[n + 1]
        ra, rb = self.radii[n], self.radii[n + 1]
        d = b - a
        inv_len2 = 1.0 / max(float(d @ d), 1e-6)
        px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
        t = (px * np.float32(d[0]) + py * np.float32(d[1]) + pz * np.float32(d[2])) * np.float32(inv_len2)
        np.clip(t, 0.0, 1.0, out=t)
        ex, ey, ez = px - t * np.float32(d[0]), py - t * np.float32(d[1]), pz - t * np.float32(d[2])
        f = np.sqrt(ex * ex + ey * ey + ez * ez) / (np.float32(ra) + t * np.float32(rb - ra)) - np.float32(1.0)
        if self.wobble is not None:
            f += self.wobble(x, y, z)
        return f

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        best = self._segment_level(0, x, y, z)
        for n in range(1, len(self.points) - 1):
            np.minimum(best, self._segment_level(n, x, y, z), out=best)
        return best


@dataclass(frozen=True)
class Shell:
    """A curved plate: the surface of ``base`` thickened to ``thickness`` mm, kept where the local coordinate
    along ``axis`` times ``side`` exceeds ``cut`` times that semi-axis (e.g. the lateral part only)."""

    base: Ellipsoid
    thickness: float
    axis: int = 0
    side: float = 1.0
    cut: float = 0.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.base.bounds()
        return lo - self.thickness, hi + self.thickness

    def pieces(self) -> list[tuple[tuple[np.ndarray, np.ndarray], Level]]:
        return [(self.bounds(), self.level)]

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        r_eff = float(np.mean(self.base.r))
        f = np.abs(self.base.level(x, y, z)) * np.float32(2.0 * r_eff / self.thickness) - np.float32(1.0)
        b = self.base
        col = b.rot[:, self.axis]
        u = ((x - np.float32(b.c[0])) * np.float32(col[0]) + (y - np.float32(b.c[1])) * np.float32(col[1])
             + (z - np.float32(b.c[2])) * np.float32(col[2])) * np.float32(self.side / b.r[self.axis])
        np.maximum(f, (np.float32(self.cut) - u) * np.float32(4.0), out=f)
        return f


Shape = Ellipsoid | Tube | Shell
