"""Smooth random fields on a voxel grid (bowel texture, MRI bias field), computed slab by slab.

A coarse grid of independent normal values (one node every ``corr_mm``) is interpolated onto the voxels with
separable Gaussian weights. Each axis's weight rows have unit L2 norm, so the field has unit variance
everywhere; interpolation is three small matrix products, far cheaper than filtering a full volume.
"""
from __future__ import annotations

import numpy as np


def _weights(n: int, spacing: float, corr_mm: float) -> np.ndarray:
    """(n, c) Gaussian interpolation weights from c coarse nodes onto n voxels, rows of unit L2 norm."""
    step = max(corr_mm / spacing, 1e-3)  # coarse node distance in voxels
    c = int(np.ceil((n - 1) / step)) + 3
    nodes = (np.arange(c) - 1) * step
    d = np.arange(n)[:, None] - nodes[None, :]
    w = np.exp(-0.5 * (d / (0.8 * step)) ** 2)
    w /= np.sqrt((w * w).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


class SmoothField:
    """A unit-variance random field correlated over about ``corr_mm``, evaluated per slab of slices.

    Args:
        rng: random source (the coarse node values are drawn at construction).
        shape: array shape (z, y, x).
        spacing: voxel size in mm (z, y, x).
        corr_mm: correlation length in mm.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int],
                 spacing: tuple[float, float, float], corr_mm: float) -> None:
        self.wz, wy, wx = (_weights(n, s, corr_mm) for n, s in zip(shape, spacing))
        coarse = rng.standard_normal((self.wz.shape[1], wy.shape[1], wx.shape[1])).astype(np.float32)
        # interpolate x then y now; z per slab
        cx = coarse @ wx.T  # (cz, cy, nx)
        self._cxy = np.ascontiguousarray(np.einsum("yc,zcx->zyx", wy, cx, optimize=True))  # (cz, ny, nx)

    def slab(self, k0: int, k1: int) -> np.ndarray:
        """The field on slices ``k0:k1`` as float32 (k1 - k0, ny, nx)."""
        cz, ny, nx = self._cxy.shape
        out = self.wz[k0:k1] @ self._cxy.reshape(cz, ny * nx)
        return out.reshape(k1 - k0, ny, nx)

    def full(self) -> np.ndarray:
        """The whole field (z, y, x) as float32."""
        return self.slab(0, self.wz.shape[0])


def blur_rows(s: np.ndarray, w: np.float32, axis: int) -> np.ndarray:
    """3-tap [w, 1-2w, w] filter of a 2-D slice along ``axis`` with edge replication."""
    t = s * np.float32(1.0 - 2.0 * w)
    if axis == 0:
        t[1:] += w * s[:-1]
        t[:-1] += w * s[1:]
        t[0] += w * s[0]
        t[-1] += w * s[-1]
    else:
        t[:, 1:] += w * s[:, :-1]
        t[:, :-1] += w * s[:, 1:]
        t[:, 0] += w * s[:, 0]
        t[:, -1] += w * s[:, -1]
    return t


def partial_volume(img: np.ndarray, sigma_z: float = 0.35, sigma_xy: float = 0.6) -> None:
    """Blur ``img`` (z, y, x, float32) in place with 3-tap binomial-like kernels of the given sigmas (voxels).

    Models the partial-volume effect at tissue borders. Runs slice by slice, so the extra memory is a few
    slices whatever the volume size.
    """
    wz = np.float32(min(sigma_z ** 2 / 2.0, 1.0 / 3.0))
    wxy = np.float32(min(sigma_xy ** 2 / 2.0, 1.0 / 3.0))
    nz = img.shape[0]
    prev = img[0].copy()
    for k in range(nz):
        cur = img[k].copy()
        nxt = img[k + 1] if k + 1 < nz else cur
        s = cur * np.float32(1.0 - 2.0 * wz) + wz * (prev + nxt)
        img[k] = blur_rows(blur_rows(s, wxy, 0), wxy, 1)
        prev = cur
