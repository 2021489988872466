"""NSD and surface distances against DeepMind's ``surface-distance`` (the reference), and by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from amos_autoseg.evaluation.surface import offset_rows, surface_dice, surface_distances
from amos_autoseg.evaluation.surfels import NEIGHBOUR_WEIGHTS, neighbour_codes, surfel_area_table

sd = pytest.importorskip("surface_distance")
from surface_distance import lookup_tables  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the reference's scipy imports
METHODS = ("edt", "offsets", "auto")
spacings = st.tuples(*[st.floats(0.2, 5.0, allow_nan=False, allow_infinity=False)] * 3)


def reference_nsd(ref: np.ndarray, pred: np.ndarray, spacing, tol: float) -> float:
    return float(sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(ref, pred, spacing), tol))


@st.composite
def mask_pairs(draw, max_side: int = 12):
    """Two non-empty random masks of one random shape (1 to max_side voxels per axis)."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    fill_a, fill_b = draw(st.floats(0.02, 0.95)), draw(st.floats(0.02, 0.95))
    a = rng.random(shape) < fill_a
    b = rng.random(shape) < fill_b
    if draw(st.booleans()):  # blobby instead of noise: smoothed masks, like organs
        a = ndimage.uniform_filter(a.astype(float), 3) > 0.5 * fill_a
        b = ndimage.uniform_filter(b.astype(float), 3) > 0.5 * fill_b
    a.flat[rng.integers(a.size)] = True
    b.flat[rng.integers(b.size)] = True
    return a, b


# --- surfel areas and neighbour codes -------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(spacings)
def test_area_table_equals_reference(spacing):
    ours = surfel_area_table(spacing)
    ref = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=0)


def test_area_table_is_complement_symmetric_and_scales_quadratically():
    t1 = surfel_area_table((1.0, 1.0, 1.0))
    assert t1[0] == 0 and t1[255] == 0
    np.testing.assert_allclose(t1, t1[::-1], rtol=1e-15)
    np.testing.assert_allclose(surfel_area_table((2.0, 2.0, 2.0)), 4 * t1, rtol=1e-14)
    assert t1[1] == pytest.approx(math.sqrt(3) / 8)  # one corner cut off: a triangle on the edge midpoints
    assert t1[0b00001111] == pytest.approx(1.0)  # half the cube inside: a flat unit square


def test_area_table_rejects_bad_spacing():
    with pytest.raises(ValueError):
        surfel_area_table((1.0, 0.0, 1.0))


def test_neighbour_codes_equal_full_correlation():
    rng = np.random.default_rng(3)
    mask = rng.random((5, 6, 7)) < 0.4
    padded = np.pad(mask.astype(np.uint8), ((0, 1), (0, 1), (0, 1)))
    expected = ndimage.correlate(padded, NEIGHBOUR_WEIGHTS.astype(np.int64), mode="constant", cval=0)
    np.testing.assert_array_equal(neighbour_codes(mask), expected)


# --- NSD against the reference ----------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(mask_pairs(), spacings, st.floats(0.0, 8.0))
def test_nsd_equals_reference_on_random_masks(pair, spacing, tol):
    a, b = pair
    expected = reference_nsd(a, b, spacing, tol)
    for method in METHODS:
        assert surface_dice(a, b, spacing, tol, method) == pytest.approx(expected, abs=1e-9), method


@settings(max_examples=60, deadline=None)
@given(mask_pairs(max_side=9), st.tuples(*[st.integers(1, 3)] * 3), st.integers(0, 4))
def test_nsd_equals_reference_at_exact_ties(pair, spacing, tol):
    """Integer spacings and tolerances put many distances exactly on the tolerance: the <= must agree."""
    a, b = pair
    spacing = tuple(float(s) for s in spacing)
    expected = reference_nsd(a, b, spacing, float(tol))
    for method in METHODS:
        assert surface_dice(a, b, spacing, float(tol), method) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(mask_pairs(max_side=10), spacings)
def test_surface_distances_equal_reference(pair, spacing):
    a, b = pair
    ours = surface_distances(a, b, spacing)
    ref = sd.compute_surface_distances(a, b, spacing)
    for key in ("distances_gt_to_pred", "distances_pred_to_gt", "surfel_areas_gt", "surfel_areas_pred"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 0.7, 0.7), (0.6, 2.5, 1.3)])
def test_tiny_organs_far_apart_and_on_the_volume_border(spacing):
    """Single voxels, corners of the volume and far-away islands (the crops and margins must not matter)."""
    a = np.zeros((20, 30, 25), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = True  # on the volume corner
    b[0, 1, 0] = True
    b[19, 29, 24] = True  # an island as far as it gets
    a[10, 15, 12] = b[10, 15, 13] = True
    for tol in (0.0, 0.5, 1.0, 2.0, 7.0, 60.0):
        expected = reference_nsd(a, b, spacing, tol)
        for method in METHODS:
            assert surface_dice(a, b, spacing, tol, method) == pytest.approx(expected, abs=1e-12)


def test_organ_shaped_masks_with_false_positive_islands():
    """Ellipsoids at AMOS-like anisotropic spacing, shifted and eroded, plus islands far away."""
    zz, yy, xx = np.ogrid[:24, :64, :64]
    ref = ((zz - 11) / 7.0) ** 2 + ((yy - 30) / 20.0) ** 2 + ((xx - 28) / 14.0) ** 2 <= 1
    pred = np.roll(ndimage.binary_erosion(ref), (1, 2, -1), axis=(0, 1, 2))
    pred[2:4, 58:62, 2:5] = True
    pred[20, 3, 60] = True
    spacing = (3.36, 0.59, 0.72)
    for tol in (1.0, 2.0, 3.0, 5.0, 7.0):
        expected = reference_nsd(ref, pred, spacing, tol)
        for method in METHODS:
            assert surface_dice(ref, pred, spacing, tol, method) == pytest.approx(expected, abs=1e-9)


def test_real_shaped_labels_equal_reference(shared_data):
    """Every organ of a real label map (3 mm) against a shifted, partly eroded copy of itself."""
    from amos_autoseg.io.image import read_label

    labels, geo = read_label(shared_data / "example_ct_seg_amos15.nii.gz")
    pred = np.roll(labels, (1, -1, 2), axis=(0, 1, 2))
    pred[ndimage.binary_erosion(pred == 6, iterations=2) ^ (pred == 6)] = 0  # thin the liver
    spacing = (geo.spacing[0], geo.spacing[1] * 0.5, geo.spacing[2] * 0.25)  # anisotropic on purpose
    for label in sorted(set(np.unique(labels)) - {0}):
        r, p = labels == label, pred == label
        for tol in (1.0, 3.0):
            expected = reference_nsd(r, p, spacing, tol)
            assert surface_dice(r, p, spacing, tol) == pytest.approx(expected, abs=1e-9), (label, tol)


# --- by hand and conventions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_two_neighbouring_voxels_by_hand(method):
    """Voxels A and B adjacent along x: half of each surface (the 4 shared-face corners) is at distance 0, the
    other half at exactly one x-spacing, every corner carrying the same area. So NSD is 0.5 below one spacing
    and 1 from there on."""
    a = np.zeros((3, 3, 4), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[1, 1, 2] = True
    for sx in (1.0, 2.0, 0.7):
        spacing = (1.3, 0.9, sx)
        assert surface_dice(a, b, spacing, 0.0, method) == pytest.approx(0.5)
        assert surface_dice(a, b, spacing, sx * 0.99, method) == pytest.approx(0.5)
        assert surface_dice(a, b, spacing, sx, method) == pytest.approx(1.0)


def test_identical_masks_score_one_and_conventions_for_empty_masks():
    a = np.zeros((6, 6, 6), bool)
    a[1:4, 2:5, 1:3] = True
    assert surface_dice(a, a, (2.0, 1.0, 0.5), 0.0) == pytest.approx(1.0)
    empty = np.zeros_like(a)
    assert math.isnan(surface_dice(empty, empty, (1.0, 1.0, 1.0), 1.0))  # like the reference's 0/0
    assert surface_dice(a, empty, (1.0, 1.0, 1.0), 1.0) == 0.0
    assert surface_dice(empty, a, (1.0, 1.0, 1.0), 1.0) == 0.0
    dist = surface_distances(a, empty, (1.0, 1.0, 1.0))
    assert len(dist["distances_pred_to_gt"]) == 0 and np.isinf(dist["distances_gt_to_pred"]).all()


def test_offset_rows_hold_exactly_the_offsets_within_the_tolerance():
    spacing, tol = (3.0, 0.8, 0.7), 2.0
    axis, rows = offset_rows(spacing, tol)
    assert axis == 2
    got = {(a, b, c) for a, b, w in rows for c in range(-w, w + 1)}
    brute = {(i, j, k) for i in range(-3, 4) for j in range(-4, 5) for k in range(-4, 5)
             if math.sqrt((i * 3.0) ** 2 + (j * 0.8) ** 2 + (k * 0.7) ** 2) <= tol}
    assert got == brute


def test_bad_arguments_are_refused():
    a = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError):
        surface_dice(a, np.ones((2, 2, 3), bool), (1, 1, 1), 1.0)
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 1), 1.0)
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 1, 1), -1.0)
    with pytest.raises(ValueError):
        surface_dice(a, a, (1, 1, 1), 1.0, method="fast")
