"""The body outline and what fills it before the organs: fat, muscle wall, ribs, lungs, bowel, the CT table.

Computed slab by slab (a few slices at a time) so memory stays bounded on 512x512 grids. The body is an
elliptic cylinder (slightly flattened posteriorly, as a supine patient lies on the table, and wider at the
hips) with a subcutaneous fat layer and a muscle wall around the body cavity. Above the diaphragm domes the
cavity holds lung; below it, bowel loops with gas pockets in front of the retroperitoneum and fat elsewhere.
Ribs run in the wall, sloping down anteriorly, and stop at the costal margin.
"""
from __future__ import annotations

import numpy as np

from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.anatomy import Body
from amos_autoseg.synth.fields import SmoothField
from amos_autoseg.synth.grid import Grid, patient_coords

SLAB_VOXELS = 4_000_000  # voxels per slab: bounds the temporary arrays to some tens of MB


def diaphragm_z(body: Body, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (mm) of the diaphragm at (x, y): two domes, deep posterior and lateral recesses."""
    sx, sy = body.sx, body.sy
    yn = y / np.float32(sy)
    ydrop = np.where(yn > 0, 0.006 * yn * yn, 0.003 * yn * yn).astype(np.float32)
    right = body.dome_z - 0.009 * ((x / np.float32(sx) + 60.0) ** 2) - ydrop
    left = body.dome_z - 14.0 * body.sz - 0.009 * ((x / np.float32(sx) - 60.0) ** 2) - ydrop
    return np.maximum(right, left)


def paint_body(tissue: np.ndarray, grid: Grid, body: Body, rng: np.random.Generator, table: bool) -> None:
    """Fill ``tissue`` (all AIR on entry) with body, wall, ribs, lungs, bowel and, for CT, the table."""
    nz, ny, nx = tissue.shape
    spacing_zyx = (grid.spacing[2], grid.spacing[1], grid.spacing[0])
    bowel = SmoothField(rng, tissue.shape, spacing_zyx, corr_mm=13.0)
    gas = SmoothField(rng, tissue.shape, spacing_zyx, corr_mm=12.0)
    bowel_thr = np.float32(rng.uniform(-0.3, 0.3))
    wall = np.float32(rng.uniform(0.12, 0.2))  # field units; about a 2-3 mm bowel wall
    gas_thr = np.float32(rng.uniform(1.2, 1.8))
    rib_phase = rng.uniform(0.0, 1.0)
    table_gap = rng.uniform(2.0, 12.0)
    step = max(1, SLAB_VOXELS // max(ny * nx, 1))
    for k0 in range(0, nz, step):
        k1 = min(nz, k0 + step)
        x, y, z = patient_coords(grid, slice(k0, k1), slice(0, ny), slice(0, nx))
        out = tissue[k0:k1]
        below = _paint_slab(out, x, y, z, body, rib_phase)
        h = gas.slab(k0, k1)
        # bowel lies in front of the retroperitoneum: an irregular limit anterior to the spine
        cand = (out == T.FAT_VISCERAL) & below & (y < np.float32(body.spine_y - 15.0) + np.float32(18.0) * h)
        cand &= z > np.float32(body.symphysis_z + 25.0)
        g = bowel.slab(k0, k1)
        loops = cand & (g > bowel_thr)
        out[loops] = T.BOWEL  # wall
        lumen = loops & (g > bowel_thr + wall)
        out[lumen] = T.BOWEL_FLUID
        out[lumen & (h > gas_thr)] = T.BOWEL_GAS
        if table:
            ty = np.float32(body.b * 0.93 + table_gap)
            slab = (y > ty) & (y < ty + np.float32(22.0)) & (np.abs(x) < np.float32(235.0))
            out[slab & (out == T.AIR)] = T.TABLE


def _paint_slab(out: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, body: Body,
                rib_phase: float) -> np.ndarray:
    """Body, wall, lungs, diaphragm and ribs of one slab; returns where the voxel lies below the diaphragm."""
    hips = np.float32(1.0) + np.float32(0.08) / (
        np.float32(1.0) + np.exp((z - np.float32(body.symphysis_z + 90.0)) / np.float32(25.0)))
    x2 = (x / hips) ** 2
    y2 = y * y * np.where(y > 0, np.float32(1.0 / 0.93 ** 2), np.float32(1.0))  # flattened back
    del hips

    def rho2(a: float, b: float) -> np.ndarray:
        return x2 * np.float32(1.0 / a ** 2) + y2 * np.float32(1.0 / b ** 2)

    out[rho2(body.a, body.b) <= 1.0] = T.FAT_SUBCUT
    out[rho2(body.a - body.fat, body.b - body.fat) <= 1.0] = T.MUSCLE
    cavity_rho2 = rho2(body.cavity_a, body.cavity_b)
    cavity = cavity_rho2 <= 1.0
    out[cavity] = T.FAT_VISCERAL
    below = np.ones(out.shape, dtype=bool)
    near = np.nonzero(cavity & (z > np.float32(body.dome_z - 200.0 * body.sz)))  # lowest recess is higher
    if near[0].size:
        xn, yn, zn = (np.broadcast_to(c, out.shape)[near] for c in (x, y, z))
        height = zn - diaphragm_z(body, xn, yn)  # mm above the diaphragm
        codes = out[near]
        codes[height >= 0] = T.LUNG
        codes[(height < 0) & (height > -5.0)] = T.DIAPHRAGM
        out[near] = codes
        below[near] = height < -5.0
    _paint_ribs(out, x, y, z, body, cavity_rho2, rib_phase)
    return below


def _paint_ribs(out: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, body: Body,
                cavity_rho2: np.ndarray, rib_phase: float) -> None:
    """Ribs: bands in the wall, 30 mm apart, sloping down anteriorly, above the costal margin."""
    ring = np.nonzero((cavity_rho2 > 0.94 ** 2) & (cavity_rho2 < 1.04 ** 2))
    x, y, z = (np.broadcast_to(c, out.shape)[ring] for c in (x, y, z))
    along = (z - np.float32(0.4) * y) / np.float32(30.0 * body.sz) + np.float32(rib_phase)
    band = (along - np.floor(along)) < np.float32(10.0 / 30.0)
    s = y / np.sqrt(x * x + y * y + np.float32(1e-3))  # sine of the angle: +1 posterior, -1 anterior
    z_min = np.where(s >= 0, 55.0 - 35.0 * s, 55.0 + 95.0 * s * s) * body.sz
    keep = band & (z > z_min) & ~((np.abs(x) < 40.0) & (y > 0))
    out[tuple(r[keep] for r in ring)] = T.BONE_CORTEX
