"""Compose the preview mosaic: windowed slices with organ outlines and fills, captions and a legend.

One *block* is a grid of 3 x 2 square cells under a one-line header:

    axial (upper)   axial (middle)   axial (lower)
    coronal         sagittal         legend

Each slice is scaled to fit its cell with its physical proportions (spacing taken into account) and centred on
black. Axial levels are the 75th, 50th and 25th percentiles (head to foot) of the organ voxels' head-foot
positions; the coronal and sagittal planes go through the organs' median. With a reference, the prediction
block and the reference block stand side by side on the same slices, and the legend of the prediction block
gives each organ's DSC.
"""
from __future__ import annotations

import colorsys
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from amos_autoseg.labels import AMOS_COLORS, AMOS_SHORT_NAMES
from amos_autoseg.preview.orient import PLANE, VIEWS, Orientation
from amos_autoseg.preview.window import to_uint8

CELL = 256
HEADER = 22
STYLES = ("both", "outline", "fill")
FILL_ALPHA = 0.3
TEXT = (255, 255, 255)
LETTERS = (255, 255, 0)
AXIAL_LEVELS = (0.75, 0.5, 0.25)  # head to foot
GRID: tuple[tuple[str, int, int], ...] = (
    ("axial_0", 0, 0), ("axial_1", 1, 0), ("axial_2", 2, 0), ("coronal", 0, 1), ("sagittal", 1, 1),
)
LEGEND_CELL = (2, 1)


@dataclass(frozen=True)
class LegendRow:
    """One organ in the legend: id, text after the name (volume, DSC)."""

    label: int
    note: str = ""


@dataclass
class Mosaic:
    """The rendered preview and where each panel lies in it.

    Attributes:
        pixels: RGB image, (height, width, 3) uint8.
        panels: ``"<block>/<panel>"`` (e.g. ``"prediction/axial_1"``) -> (x0, y0, x1, y1), x1/y1 exclusive.
        slices: ``"<panel>"`` -> canonical slice index shown.
        dsc: label -> DSC of prediction against reference (empty without a reference).
    """

    pixels: np.ndarray
    panels: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    slices: dict[str, int] = field(default_factory=dict)
    dsc: dict[int, float] = field(default_factory=dict)


def block_size(cell: int = CELL) -> tuple[int, int]:
    """(width, height) of one block in pixels."""
    return 3 * cell, HEADER + 2 * cell


def color_lut(max_label: int) -> np.ndarray:
    """(max_label + 1, 3) uint8 colours: the AMOS colours, then well-spread hues for other ids; 0 is black."""
    lut = np.zeros((max(max_label, 15) + 1, 3), dtype=np.uint8)
    for label in range(1, lut.shape[0]):
        if label in AMOS_COLORS:
            lut[label] = AMOS_COLORS[label]
        else:
            r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.75, 0.95)
            lut[label] = (int(r * 255), int(g * 255), int(b * 255))
    return lut


def label_name(label: int) -> str:
    """Short organ name for the legend."""
    return AMOS_SHORT_NAMES.get(label, f"label {label}")


def pick_slices(profiles: Sequence[np.ndarray]) -> dict[str, int]:
    """Slices through the organs from the foreground counts per canonical plane (S, P, L profiles).

    Returns:
        panel name -> canonical index. Without foreground, the middle planes (axial at 75/50/25 % height).
    """
    def quantile(profile: np.ndarray, q: float) -> int:
        total = float(profile.sum())
        if total <= 0:
            return min(len(profile) - 1, int(q * len(profile)))
        cum = np.cumsum(profile, dtype=np.float64)
        return int(np.searchsorted(cum, q * total, side="left"))

    out = {f"axial_{n}": quantile(profiles[0], q) for n, q in enumerate(AXIAL_LEVELS)}
    out["coronal"] = quantile(profiles[1], 0.5)
    out["sagittal"] = quantile(profiles[2], 0.5)
    return out


def stored_profiles(labels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Organ voxel counts per plane along each stored axis (z, y, x) of the union of label arrays.

    Two passes over the volume: a count per z plane, and one 2D count map over the z planes that hold organs.
    """
    fg = labels[0] != 0
    for other in labels[1:]:
        fg |= other != 0
    prof_z = np.count_nonzero(fg.reshape(fg.shape[0], -1), axis=1)
    nz = np.flatnonzero(prof_z)
    if nz.size == 0:
        return [prof_z, np.zeros(fg.shape[1], dtype=np.int64), np.zeros(fg.shape[2], dtype=np.int64)]
    plane = fg[nz[0]:nz[-1] + 1].sum(axis=0, dtype=np.int32)
    return [prof_z, plane.sum(axis=1), plane.sum(axis=0)]


def bounding_box(profiles: Sequence[np.ndarray]) -> tuple[slice, slice, slice] | None:
    """The organs' bounding box (stored z, y, x) from :func:`stored_profiles`, or ``None`` without organs."""
    spans = [np.flatnonzero(p) for p in profiles]
    if any(s.size == 0 for s in spans):
        return None
    return tuple(slice(int(s[0]), int(s[-1]) + 1) for s in spans)  # type: ignore[return-value]


def canonical_profiles(profiles: Sequence[np.ndarray], orient: Orientation) -> list[np.ndarray]:
    """Reorder stored-axis profiles into canonical (S, P, L) ones."""
    out = []
    for b in range(3):
        prof = profiles[orient.axes[b]]
        out.append(prof[::-1] if orient.flips[b] else prof)
    return out


def fit_size(shape: tuple[int, int], spacing: tuple[float, float], cell: int) -> tuple[int, int]:
    """(height, width) in pixels of a plane of ``shape`` voxels scaled to fit ``cell`` in physical proportion."""
    h_mm, w_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    scale = min(cell / h_mm, cell / w_mm)
    return max(1, min(cell, round(h_mm * scale))), max(1, min(cell, round(w_mm * scale)))


def resize_nearest(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array (labels)."""
    rows = np.minimum(((np.arange(height) + 0.5) * plane.shape[0] / height).astype(np.intp), plane.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * plane.shape[1] / width).astype(np.intp), plane.shape[1] - 1)
    return plane[rows[:, None], cols[None, :]]


def resize_grey(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 plane."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize((width, height), Image.BILINEAR))


def edges(labels: np.ndarray) -> np.ndarray:
    """Organ pixels with a 4-neighbour of another label (the 1-pixel outline, inside each organ)."""
    pad = np.pad(labels, 1, mode="edge")
    centre = pad[1:-1, 1:-1]
    diff = (pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre)
    diff |= (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre)
    return diff & (labels != 0)


def overlay(grey: np.ndarray, labels: np.ndarray, lut: np.ndarray, style: str = "both") -> np.ndarray:
    """RGB of a grey plane with organs drawn in their colours (translucent fill and/or exact-colour outline)."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    inside = labels != 0
    if not inside.any():
        return rgb
    safe = np.clip(labels, 0, lut.shape[0] - 1)
    if style in ("both", "fill"):
        colours = lut[safe[inside]].astype(np.float32)
        mixed = (1.0 - FILL_ALPHA) * rgb[inside].astype(np.float32) + FILL_ALPHA * colours
        rgb[inside] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if style in ("both", "outline"):
        edge = edges(labels)
        rgb[edge] = lut[safe[edge]]
    return rgb


@functools.lru_cache(maxsize=16)
def _font(size: int):  # noqa: ANN202 - a PIL font object
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text(draw, xy: tuple[int, int], text: str, fill: tuple[int, int, int], size: int,  # noqa: ANN001
          anchor: str = "la") -> None:
    font = _font(size)
    try:
        draw.text(xy, text, fill=fill, font=font, anchor=anchor, stroke_width=1, stroke_fill=(0, 0, 0))
    except (TypeError, ValueError):  # bitmap fonts take neither anchors nor strokes
        draw.text(xy, text, fill=fill, font=font)


def render_block(
    image_can: np.ndarray,
    label_can: np.ndarray,
    spacing: tuple[float, float, float],
    slices: Mapping[str, int],
    limits: tuple[float, float],
    title: str,
    legend: Sequence[LegendRow],
    lut: np.ndarray,
    style: str = "both",
    cell: int = CELL,
) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """Draw one 3 x 2 block of canonical image and label volumes.

    Args:
        image_can: canonical ``[s, p, l]`` intensities.
        label_can: canonical labels on the same grid.
        spacing: canonical voxel size (S, P, L) in mm.
        slices: panel name -> canonical index (see :func:`pick_slices`).
        limits: intensity window (low, high).
        title: header text.
        legend: organs to list, in order.
        lut: label colours (:func:`color_lut`).
        style: ``"both"``, ``"outline"`` or ``"fill"``.
        cell: cell side in pixels.

    Returns:
        RGB pixels and panel name -> (x0, y0, x1, y1) within the block.
    """
    from PIL import Image, ImageDraw

    width, height = block_size(cell)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for name, col, row in GRID:
        view = name.split("_")[0]
        _, (ra, ca), _ = VIEWS[view]
        img_plane = PLANE[view](image_can, slices[name])
        lab_plane = PLANE[view](label_can, slices[name])
        h, w = fit_size(img_plane.shape, (spacing[ra], spacing[ca]), cell)
        grey = resize_grey(to_uint8(img_plane, limits), h, w)
        rgb = overlay(grey, resize_nearest(lab_plane, h, w), lut, style)
        x0 = col * cell + (cell - w) // 2
        y0 = HEADER + row * cell + (cell - h) // 2
        canvas[y0:y0 + h, x0:x0 + w] = rgb
        boxes[name] = (x0, y0, x0 + w, y0 + h)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    _text(draw, (4, 4), title, TEXT, 13)
    for name, col, row in GRID:
        view = name.split("_")[0]
        axis, _, (left, right, top, bottom) = VIEWS[view]
        x0, y0, x1, y1 = boxes[name]
        n = {0: image_can.shape[0], 1: image_can.shape[1], 2: image_can.shape[2]}[axis]
        _text(draw, (col * cell + 3, HEADER + row * cell + 2), f"{view} {slices[name] + 1}/{n}", TEXT, 11)
        xm, ym = (x0 + x1) // 2, (y0 + y1) // 2
        _text(draw, (x0 + 2, ym), left, LETTERS, 12, "lm")
        _text(draw, (x1 - 2, ym), right, LETTERS, 12, "rm")
        _text(draw, (xm, y0 + 1), top, LETTERS, 12, "ma")
        _text(draw, (xm, y1 - 1), bottom, LETTERS, 12, "md")
    _draw_legend(draw, legend, lut, LEGEND_CELL[0] * cell, HEADER + LEGEND_CELL[1] * cell, cell)
    return np.asarray(pil), boxes


def _draw_legend(draw, legend: Sequence[LegendRow], lut: np.ndarray, x: int, y: int, cell: int) -> None:  # noqa: ANN001
    if not legend:
        _text(draw, (x + 8, y + 8), "no organs", TEXT, 12)
        return
    step = max(8, min(18, (cell - 8) // len(legend)))
    size = max(8, step - 5)
    for n, row in enumerate(legend):
        top = y + 4 + n * step
        colour = tuple(int(c) for c in lut[min(row.label, lut.shape[0] - 1)])
        draw.rectangle((x + 6, top + 2, x + 6 + size, top + 2 + size - 2), fill=colour)
        _text(draw, (x + 12 + size, top), f"{row.label} {label_name(row.label)} {row.note}".rstrip(), TEXT, size + 1)


def compose(blocks: Sequence[tuple[str, np.ndarray, dict[str, tuple[int, int, int, int]]]]) -> Mosaic:
    """Put blocks side by side; panel boxes are renamed ``"<block>/<panel>"`` in mosaic coordinates."""
    mosaic = Mosaic(np.concatenate([pixels for _, pixels, _ in blocks], axis=1))
    offset = 0
    for name, pixels, boxes in blocks:
        for panel, (x0, y0, x1, y1) in boxes.items():
            mosaic.panels[f"{name}/{panel}"] = (x0 + offset, y0, x1 + offset, y1)
        offset += pixels.shape[1]
    return mosaic
