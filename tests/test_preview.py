"""Preview rendering: orientation for LPS, RAS, oblique and permuted grids, mosaic size, colours, windows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.labels import AMOS_COLORS
from amos_autoseg.preview import CaseFiles, render_case
from amos_autoseg.errors import InputError
from amos_autoseg.preview.orient import from_canonical, orientation_of, to_canonical
from amos_autoseg.preview.render import HEADER, block_size, edges, fit_size, pick_slices
from amos_autoseg.preview.window import guess_modality, window_limits
from tests.conftest import oblique_direction, write_nifti

CELL = 160
SHAPE = (20, 32, 32)  # z, y, x
SPACING = (3.0, 1.0, 1.0)  # anisotropic: 60 mm head-foot, 32 mm in plane
# kidneys on the patient's left and right, liver at the head, stomach in front
LEFT, RIGHT, HEAD, FRONT = 3, 2, 6, 7

DIRECTIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": oblique_direction(20.0),
    "oblique_flipped": oblique_direction(-25.0, flip_x=True),
    "coronal_stored": (1, 0, 0, 0, 0, 1, 0, -1, 0),  # index y runs foot-ward, index z runs back-ward
}


def _physical(direction: tuple[float, ...], origin: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Physical x, y, z (LPS, mm) of every voxel centre relative to the grid's centre, each of shape SHAPE."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    idx_mm = np.stack([i * SPACING[2], j * SPACING[1], k * SPACING[0]])  # index x, y, z in mm
    centre = np.array([(SHAPE[2] - 1) * SPACING[2], (SHAPE[1] - 1) * SPACING[1], (SHAPE[0] - 1) * SPACING[0]]) / 2
    rel = np.tensordot(d, idx_mm - centre[:, None, None, None], axes=1)
    return rel[0], rel[1], rel[2]


def _phantom(tmp: Path, direction: tuple[float, ...]) -> CaseFiles:
    """A CT-like box with three organs placed in physical space, written on a grid with ``direction``."""
    x, y, z = _physical(direction, (0.0, 0.0, 0.0))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    # within +-14 mm on every axis, so that every grid below (whatever its axes) holds all three organs
    labels[(x > 5) & (x < 12) & (y > -2) & (y < 8) & (z > -12) & (z < 2)] = LEFT
    labels[(x > -12) & (x < -5) & (y > -2) & (y < 8) & (z > -12) & (z < 2)] = RIGHT
    labels[(x > -12) & (x < 6) & (y > -2) & (y < 8) & (z > 6) & (z < 14)] = HEAD
    labels[(x > -4) & (x < 4) & (y > -12) & (y < -7) & (z > -10) & (z < 12)] = FRONT
    image = np.where(x**2 + y**2 < 15**2, 40.0, -1000.0).astype(np.int16)
    write_nifti(tmp / "img.nii.gz", image, SPACING, (10.0, -20.0, 30.0), direction)
    write_nifti(tmp / "seg.nii.gz", labels, SPACING, (10.0, -20.0, 30.0), direction)
    return CaseFiles("phantom", tmp / "img.nii.gz", tmp / "seg.nii.gz")


def _where(pixels: np.ndarray, box: tuple[int, int, int, int], label: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (relative to the box's centre, in [-0.5, 0.5]) of pixels in ``label``'s exact colour."""
    x0, y0, x1, y1 = box
    panel = pixels[y0:y1, x0:x1]
    rows, cols = np.nonzero(np.all(panel == np.array(AMOS_COLORS[label], dtype=np.uint8), axis=2))
    return (rows + 0.5) / (y1 - y0) - 0.5, (cols + 0.5) / (x1 - x0) - 0.5


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_orientation_left_right_head_foot_front_back(tmp_path: Path, name: str) -> None:
    mosaic = render_case(_phantom(tmp_path, DIRECTIONS[name]), cell=CELL)
    px, boxes = mosaic.pixels, mosaic.panels
    seen_left = 0
    for n in range(3):
        box = boxes[f"segmentation/axial_{n}"]
        rows, cols = _where(px, box, LEFT)
        seen_left += rows.size
        assert (cols > 0).all(), f"{name}: patient-left organ must be on the image's right in the axial view"
        rows, cols = _where(px, box, FRONT)
        assert rows.size and (rows < 0).all(), f"{name}: anterior organ must be in the upper half"
    assert seen_left > 0
    rows3, cols3 = _where(px, boxes["segmentation/coronal"], LEFT)
    rows2, cols2 = _where(px, boxes["segmentation/coronal"], RIGHT)
    rows6, cols6 = _where(px, boxes["segmentation/coronal"], HEAD)
    assert rows3.size and rows2.size and rows6.size
    assert rows6.mean() < rows3.mean(), f"{name}: head-side organ must be higher in the coronal view"
    assert (cols3 > 0).all() and (cols2 < 0).all(), f"{name}: coronal view must show patient right on image left"
    rows6, cols6 = _where(px, boxes["segmentation/sagittal"], HEAD)
    rows7, cols7 = _where(px, boxes["segmentation/sagittal"], FRONT)
    assert rows6.size and rows7.size
    assert rows6.mean() < rows7.mean(), f"{name}: head-side organ must be higher in the sagittal view"
    assert cols7.mean() < cols6.mean() and (cols7 < 0).all(), f"{name}: anterior must be on the sagittal's left"


def test_orientation_codes_and_oblique_angle() -> None:
    assert orientation_of(DIRECTIONS["LPS"], SPACING).code == "LPS"
    assert orientation_of(DIRECTIONS["RAS"], SPACING).code == "RAS"
    obl = orientation_of(DIRECTIONS["oblique"], SPACING)
    assert obl.is_oblique and abs(obl.oblique_deg - 20.0) < 0.01
    cor = orientation_of(DIRECTIONS["coronal_stored"], SPACING)
    assert cor.code == "LIP" and not cor.is_oblique
    # canonical spacing follows the axes: stored z (3 mm) runs along P for this grid
    assert cor.spacing == (1.0, 3.0, 1.0)
    arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    can = to_canonical(arr, cor)
    assert can.shape == (SHAPE[1], SHAPE[0], SHAPE[2])
    assert can[0, 0, 0] == arr[0, SHAPE[1] - 1, 0]  # most inferior row of stored y comes first


def test_mosaic_size_and_physical_proportions(tmp_path: Path) -> None:
    mosaic = render_case(_phantom(tmp_path, DIRECTIONS["LPS"]), cell=CELL)
    assert mosaic.pixels.shape == (HEADER + 2 * CELL, 3 * CELL, 3)
    assert block_size(CELL) == (3 * CELL, HEADER + 2 * CELL)
    x0, y0, x1, y1 = mosaic.panels["segmentation/coronal"]
    # 60 mm head-foot by 32 mm wide: full cell height, 32/60 of it wide
    assert (y1 - y0, x1 - x0) == (CELL, round(CELL * 32 / 60))
    x0, y0, x1, y1 = mosaic.panels["segmentation/axial_1"]
    assert (y1 - y0, x1 - x0) == (CELL, CELL)


def test_outline_and_fill_styles(tmp_path: Path) -> None:
    files = _phantom(tmp_path, DIRECTIONS["LPS"])
    box = None
    counts = {}
    for style in ("outline", "fill", "both"):
        m = render_case(files, style=style, cell=CELL)
        box = m.panels["segmentation/coronal"]
        counts[style] = _where(m.pixels, box, LEFT)[0].size
    assert counts["outline"] > 0 and counts["both"] == counts["outline"]
    assert counts["fill"] == 0  # a translucent fill never shows the pure colour on a grey background


def test_slices_follow_the_organs() -> None:
    profile_s = np.zeros(100)
    profile_s[60:80] = 1.0  # organs in the upper part only
    slices = pick_slices([profile_s, np.ones(10), np.ones(10)])
    assert 60 <= slices["axial_2"] < slices["axial_1"] < slices["axial_0"] < 80
    empty = pick_slices([np.zeros(40), np.zeros(10), np.zeros(12)])
    assert empty["axial_1"] == 20 and empty["coronal"] == 5 and empty["sagittal"] == 6


def test_fit_size_keeps_physical_aspect() -> None:
    assert fit_size((200, 512), (2.5, 0.8), 256) == (256, 210)  # 500 mm tall, 409.6 mm wide
    assert fit_size((512, 512), (0.8, 0.8), 256) == (256, 256)


def test_edges_are_one_pixel_inside_the_organ() -> None:
    lab = np.zeros((9, 9), dtype=np.uint8)
    lab[2:7, 2:7] = 4
    e = edges(lab)
    assert e.sum() == 16 and not e[3:6, 3:6].any() and not e[lab == 0].any()


def test_modality_guess_and_windows() -> None:
    ct = np.concatenate([np.full(500, -1000.0), np.full(9500, 50.0)])
    mri = np.concatenate([np.zeros(5000), np.linspace(100, 900, 5000)])
    assert guess_modality("case_a", ct) == "CT"
    assert guess_modality("case_b", mri) == "MRI"
    assert guess_modality("amos_0600", ct) == "MRI"  # the AMOS id rule wins
    assert window_limits(ct, "CT") == (-160.0, 240.0)
    lo, hi = window_limits(mri, "MRI")
    assert 100 <= lo < 110 and 890 < hi <= 900  # percentiles of the body, not of the zero background


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_from_canonical_inverts_to_canonical(name: str) -> None:
    orient = orientation_of(DIRECTIONS[name], SPACING)
    arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    assert np.array_equal(from_canonical(to_canonical(arr, orient), orient), arr)


def test_segmentation_stored_flipped_over_the_same_box_is_reoriented(tmp_path: Path) -> None:
    files = _phantom(tmp_path, DIRECTIONS["LPS"])
    import SimpleITK as sitk

    seg = sitk.ReadImage(str(files.seg))
    labels = sitk.GetArrayFromImage(seg)
    far = seg.TransformIndexToPhysicalPoint((SHAPE[2] - 1, SHAPE[1] - 1, 0))  # x and y run the other way
    flipped = write_nifti(tmp_path / "seg_ras.nii.gz", np.ascontiguousarray(labels[:, ::-1, ::-1]), SPACING,
                          far, DIRECTIONS["RAS"])
    same = render_case(files, cell=96)
    other = render_case(CaseFiles("phantom", files.image, flipped), cell=96)
    assert np.array_equal(same.pixels, other.pixels)
    moved = write_nifti(tmp_path / "seg_moved.nii.gz", labels, SPACING, (10.0, -20.0, 35.0))
    with pytest.raises(InputError, match="seg_moved.nii.gz.*grid"):
        render_case(CaseFiles("phantom", files.image, moved), cell=96)
