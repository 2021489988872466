"""Paint shapes into a tissue-code volume, visiting only the voxels inside each shape's bounding box."""
from __future__ import annotations

import numpy as np

from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.anatomy import Part
from amos_autoseg.synth.grid import Grid, index_box, patient_coords


def _allowed(codes: tuple[int, ...]) -> np.ndarray:
    lut = np.zeros(T.N_TISSUES, dtype=bool)
    lut[list(codes)] = True
    return lut


def _sub_box(outer: tuple[slice, ...], inner: tuple[slice, ...]) -> tuple[slice, ...] | None:
    """``inner`` clipped to ``outer``, relative to ``outer``'s start; ``None`` when they do not meet."""
    out = []
    for o, n in zip(outer, inner):
        lo, hi = max(o.start, n.start), min(o.stop, n.stop)
        if hi <= lo:
            return None
        out.append(slice(lo - o.start, hi - o.start))
    return tuple(out)


def part_level(grid: Grid, part: Part) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The part's level function on its bounding box: (array slices, float32 block), or ``None`` off-grid.

    Each piece of the shape (a tube segment) is evaluated only inside its own box; elsewhere the level is +inf.
    """
    lo, hi = part.shape.bounds()
    box = index_box(grid, lo, hi)
    if box is None:
        return None
    shape = tuple(s.stop - s.start for s in box)
    f = np.full(shape, np.inf, dtype=np.float32)
    for (plo, phi), level in part.shape.pieces():
        pbox = index_box(grid, plo, phi)
        rel = None if pbox is None else _sub_box(box, pbox)
        if rel is None:
            continue
        absolute = tuple(slice(b.start + r.start, b.start + r.stop) for b, r in zip(box, rel))
        x, y, z = patient_coords(grid, *absolute)
        np.minimum(f[rel], level(x, y, z), out=f[rel])
    return box, f


def paint_part(tissue: np.ndarray, grid: Grid, part: Part) -> None:
    """Write ``part`` into ``tissue`` (in place) where the voxel's current code is in ``part.on``."""
    found = part_level(grid, part)
    if found is None:
        return
    box, f = found
    block = tissue[box]
    inside = f <= 0
    if not inside.any():
        return
    codes = block[inside]
    ok = _allowed(part.on)[codes]
    new = codes.copy()
    new[ok] = part.code
    if part.layers or part.gas is not None:
        f_in = f[inside]
        for level, code in part.layers:
            new[ok & (f_in <= level)] = code
        if part.gas is not None:
            lumen, gas, y_level = part.gas
            _, y, _ = patient_coords(grid, *box)
            y_in = np.broadcast_to(y, f.shape)[inside]
            new[ok & (new == lumen) & (y_in < np.float32(y_level))] = gas
    block[inside] = new


def paint_parts(tissue: np.ndarray, grid: Grid, parts: list[Part]) -> None:
    """Paint ``parts`` in order; a later part wins where two overlap."""
    for part in parts:
        paint_part(tissue, grid, part)
