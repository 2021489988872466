"""Render and write previews: one PNG per case, optionally prediction and reference side by side.

Public API:
    render_case(files, modality, style, cell) -> Mosaic
    write_preview(image_path, seg_path, out_png, ref_path=None, modality=None) -> Path
    write_previews(image_dir_or_file, seg_dir_or_file, out_dir, ref_dir=None, workers=0) -> list[Path]
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from amos_autoseg.errors import InputError
from amos_autoseg.evaluation.report import percent
from amos_autoseg.io.image import Geometry, read_header, read_image, read_label, strip_ending
from amos_autoseg.preview.orient import from_canonical, orientation_of, same_box, to_canonical
from amos_autoseg.preview.pairing import CaseFiles, case_of_image, pair_cases
from amos_autoseg.preview.render import (
    CELL,
    STYLES,
    LegendRow,
    Mosaic,
    bounding_box,
    canonical_profiles,
    color_lut,
    compose,
    pick_slices,
    render_block,
    stored_profiles,
)
from amos_autoseg.preview.window import resolve_modality, sample, window_limits, window_text
from amos_autoseg.utils.atomic import write_bytes
from amos_autoseg.utils.parallel import map_cases

log = logging.getLogger(__name__)


def _read_on_grid(path: Path, grid: Geometry) -> np.ndarray:
    """A label map in the image's stored layout; one stored with axes flipped or swapped is brought onto it."""
    labels, geometry = read_label(path)
    problem = grid.mismatch(geometry)
    if problem is None:
        return labels
    if not same_box(grid, geometry):
        raise InputError(path, f"does not lie on its image's grid: {problem}")
    log.info("%s: stored with other axis order or signs than its image; reoriented for display", path)
    own = orientation_of(geometry.direction, geometry.spacing)
    target = orientation_of(grid.direction, grid.spacing)
    return np.ascontiguousarray(from_canonical(to_canonical(labels, own), target))


def dice_per_label(pred: np.ndarray, ref: np.ndarray) -> dict[int, float]:
    """DSC of every label present in ``pred`` or ``ref`` (background excluded)."""
    either = (pred != 0) | (ref != 0)
    p, r = pred[either], ref[either]  # organ voxels only: background never counts
    n = int(max(p.max(initial=0), r.max(initial=0))) + 1
    pred_counts = np.bincount(p, minlength=n)
    ref_counts = np.bincount(r, minlength=n)
    inter = np.bincount(p[p == r], minlength=n)
    return {label: float(2.0 * inter[label] / (pred_counts[label] + ref_counts[label]))
            for label in range(1, n) if pred_counts[label] + ref_counts[label] > 0}


def _volumes_ml(labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[int, float]:
    counts = np.bincount(labels[labels != 0])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {label: float(c) * voxel_ml for label, c in enumerate(counts) if label > 0 and c > 0}


def _ml(v: float | None) -> str:
    return "absent" if v is None else f"{v:.1f} ml" if v < 1000 else f"{v / 1000:.2f} l"


def read_display_image(path: Path) -> tuple[np.ndarray, Geometry]:
    """An image in its stored type (no float copy, no NaN scan: twice as fast as ``read_image`` on a CT).

    The header checks of :func:`~amos_autoseg.io.image.read_header` (3D, positive spacing, a complete NIfTI file)
    still apply; DICOM folders go through :func:`~amos_autoseg.io.image.read_image`. Non-finite voxels, which
    SimpleITK's NIfTI reader already turns into 0, are ignored by the window and shown black.
    """
    if path.is_dir():
        return read_image(path, check_finite=False)
    import SimpleITK as sitk

    grid = read_header(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot be read ({str(exc).strip().splitlines()[-1][:200]})") from None
    array = sitk.GetArrayFromImage(img)
    return array.reshape(grid.shape), grid


def _load(files: CaseFiles, modality: str | None) -> tuple[np.ndarray, Geometry, np.ndarray, tuple[float, float], str]:
    """Image, its grid, the segmentation on it, the display window and its description."""
    if files.image is None:  # labels on black: a zero image that takes no memory
        seg, grid = read_label(files.seg)
        return np.broadcast_to(np.float32(0.0), grid.shape), grid, seg, (0.0, 1.0), "no image"
    image, grid = read_display_image(files.image)
    seg = _read_on_grid(files.seg, grid)
    values = sample(image)
    mod = resolve_modality(modality, files.case_id, values)
    limits = window_limits(values, mod)
    return image, grid, seg, limits, window_text(mod, limits)


def render_case(files: CaseFiles, modality: str | None = None, style: str = "both", cell: int = CELL) -> Mosaic:
    """Read one case and draw its mosaic (two blocks when ``files.ref`` is set).

    Raises:
        InputError: unreadable files, or a segmentation/reference not on the image's grid.
    """
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {STYLES}")
    image, grid, seg, limits, window = _load(files, modality)
    ref = _read_on_grid(files.ref, grid) if files.ref is not None else None
    orient = orientation_of(grid.direction, grid.spacing)
    stored = [seg] if ref is None else [seg, ref]
    profiles = stored_profiles(stored)
    slices = pick_slices(canonical_profiles(profiles, orient))
    box = bounding_box(profiles)  # counts and DSC on the organs' box only: a fraction of a full scan
    crop = [a[box] if box is not None else a[:0] for a in stored]
    lut = color_lut(int(max(a.max(initial=0) for a in crop)))
    info = f"{window} | {orient.code}"
    if orient.is_oblique:
        info += f", oblique {orient.oblique_deg:.0f} deg: nearest axes, not resampled"
    image_can = to_canonical(image, orient)
    seg_vol = _volumes_ml(crop[0], grid.spacing)
    blocks = []
    if ref is None:
        legend = [LegendRow(k, _ml(v)) for k, v in sorted(seg_vol.items())]
        pixels, boxes = render_block(image_can, to_canonical(seg, orient), orient.spacing, slices, limits,
                                     f"{files.case_id} | {info}", legend, lut, style, cell)
        blocks.append(("segmentation", pixels, boxes))
        dsc: dict[int, float] = {}
    else:
        dsc = dice_per_label(crop[0], crop[1])
        ref_vol = _volumes_ml(crop[1], grid.spacing)
        in_ref = sorted(ref_vol)  # the organs of the reference: the case's mean is over these
        mean = float(np.mean([dsc[k] for k in in_ref])) if in_ref else None
        pred_legend = [LegendRow(k, f"DSC {percent(v, 1)} %" if k in ref_vol else "not in reference")
                       for k, v in sorted(dsc.items())]
        ref_legend = [LegendRow(k, _ml(ref_vol.get(k))) for k in sorted(dsc)]
        score = f"mean DSC {percent(mean, 1)} % over {len(in_ref)} organ(s) of the reference" if in_ref \
            else "no organ in the reference"
        head = f"{files.case_id} prediction | {score} | {info}"
        for name, labels, legend, text in (
            ("prediction", seg, pred_legend, head),
            ("reference", ref, ref_legend, f"{files.case_id} reference | {files.ref.name}"),  # type: ignore[union-attr]
        ):
            pixels, boxes = render_block(image_can, to_canonical(labels, orient), orient.spacing, slices, limits,
                                         text, legend, lut, style, cell)
            blocks.append((name, pixels, boxes))
    mosaic = compose(blocks)
    mosaic.slices.update(slices)
    mosaic.dsc.update(dsc)
    return mosaic


def png_bytes(mosaic: Mosaic) -> bytes:
    """The mosaic encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mosaic.pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_preview(
    image_path: str | os.PathLike[str],
    seg_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    ref_path: str | os.PathLike[str] | None = None,
    modality: str | None = None,
    style: str = "both",
    cell: int = CELL,
) -> Path:
    """Draw one case and write its PNG atomically.

    Args:
        image_path: the image file (or DICOM folder).
        seg_path: its segmentation.
        out_png: the PNG to write.
        ref_path: optional reference segmentation: prediction and reference side by side with DSC per organ.
        modality: ``"CT"`` or ``"MRI"``; default: AMOS id rule, else guessed from intensities.
        style: ``"both"`` (translucent fill and outline), ``"outline"`` or ``"fill"``.
        cell: side of one panel cell in pixels.

    Returns:
        ``out_png``.
    """
    seg = Path(seg_path)
    case_id = strip_ending(seg.name) if seg.is_file() else case_of_image(Path(image_path))
    files = CaseFiles(case_id, Path(image_path), seg, Path(ref_path) if ref_path is not None else None)
    return _write(files, Path(out_png), modality, style, cell)


def _write(files: CaseFiles, out_png: Path, modality: str | None, style: str, cell: int) -> Path:
    for p in (files.image, files.seg, files.ref):  # a clear message before any reading
        if p is not None and not p.exists():
            raise InputError(p, "file not found")
    write_bytes(out_png, png_bytes(render_case(files, modality, style, cell)))
    log.info("preview %s", out_png)
    return out_png


def write_job(job: tuple[CaseFiles, Path, str | None, str, int]) -> Path:
    """Worker entry: (files, out_png, modality, style, cell) -> out_png."""
    return _write(*job)


def write_previews(
    image_dir_or_file: str | os.PathLike[str],
    seg_dir_or_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str] | None = None,
    workers: int = 0,
    modality: str | None = None,
    style: str = "both",
    cell: int = CELL,
) -> list[Path]:
    """Write ``out_dir/<case>.png`` for every segmentation (see :func:`~amos_autoseg.preview.pairing.pair_cases`).

    All pairs are checked before the first PNG is drawn, so a missing image fails at once.

    Returns:
        The PNG paths, sorted by case.
    """
    cases = pair_cases(image_dir_or_file, seg_dir_or_file, ref_dir)
    out = Path(out_dir)
    jobs = [(c, out / f"{c.case_id}.png", modality, style, cell) for c in cases]
    return map_cases(write_job, jobs, workers, desc="previews")
