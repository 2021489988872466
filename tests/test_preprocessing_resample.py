"""Resampling: the separable float32 implementation against scikit-image, label argmax, tiny structures."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.transform import resize

from amos_autoseg.preprocessing.resample import (
    compute_new_shape,
    nearest_indices,
    present_labels,
    resample_image,
    resample_labels,
    separate_axis,
)


def _smooth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32) * 100


def _blobs(shape: tuple[int, ...], n_labels: int = 4, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    edges = np.quantile(field, np.linspace(0, 1, n_labels + 1)[1:-1])
    seg = np.digitize(field, edges).astype(np.int16)
    seg[:2] = -1  # outside-the-body marker, as after cropping
    return seg


def _reference_labels(seg: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Per-label linear scores with scikit-image and argmax; ties to the nearest label, else the smallest."""
    labels = np.unique(seg)
    scores = np.stack([resize((seg == c).astype(float), new_shape, 1, mode="edge", anti_aliasing=False)
                       for c in labels])
    nn = resize(seg.astype(float), new_shape, 0, mode="edge", anti_aliasing=False).astype(seg.dtype)
    best = scores.max(axis=0)
    nn_score = np.take_along_axis(scores, np.searchsorted(labels, nn)[None], 0)[0]
    smallest = labels[np.argmax(scores == best[None], axis=0)]
    return np.where(nn_score == best, nn, smallest).astype(seg.dtype)


def test_compute_new_shape_rounds_like_nnunet() -> None:
    assert compute_new_shape((100, 512, 512), (5.0, 0.7, 0.7), (2.0, 1.0, 1.0)) == (250, 358, 358)
    assert compute_new_shape((3, 5, 7), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) == (2, 2, 4)  # round half to even
    with pytest.raises(ValueError):
        compute_new_shape((3, 5), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))


@pytest.mark.parametrize(
    ("current", "target", "force", "expected"),
    [
        ((5.0, 0.8, 0.8), (1.0, 1.0, 1.0), None, 0),  # the current grid is anisotropic
        ((1.0, 1.0, 1.0), (0.8, 4.0, 0.8), None, 1),  # only the target is
        ((1.0, 1.0, 1.0), (1.5, 1.0, 1.2), None, None),
        ((3.1, 3.1, 1.0), (1.0, 1.0, 1.0), None, None),  # two axes tie for the coarsest
        ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), True, 0),
        ((5.0, 0.8, 0.8), (1.0, 1.0, 1.0), False, None),
    ],
)
def test_separate_axis_rules(current, target, force, expected) -> None:
    assert separate_axis(current, target, force) == expected


@pytest.mark.parametrize("new_shape", [(30, 20, 50), (23, 60, 19), (11, 37, 80)])
@pytest.mark.parametrize("order", [3, 1])
def test_image_matches_skimage_resize(new_shape: tuple[int, int, int], order: int) -> None:
    x = _smooth((23, 37, 41))
    ours = resample_image(x[None], new_shape, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=order)
    ref = resize(x.astype(float), new_shape, order, mode="edge", anti_aliasing=False)
    assert ours.dtype == np.float32 and ours.shape == (1, *new_shape)
    np.testing.assert_allclose(ours[0], ref, atol=1e-4 * np.abs(ref).max())


def test_anisotropic_image_is_resampled_per_slice_then_nearest_along_z() -> None:
    x = _smooth((9, 40, 44), seed=1)
    current, target = (5.0, 0.8, 0.8), (2.0, 1.0, 1.0)
    new_shape = compute_new_shape(x.shape, current, target)
    ours = resample_image(x[None], new_shape, current, target)[0]
    in_plane = np.stack([resize(s.astype(float), new_shape[1:], 3, mode="edge", anti_aliasing=False) for s in x])
    ref = in_plane[nearest_indices(x.shape[0], new_shape[0])]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_image_with_unchanged_shape_is_a_float32_copy() -> None:
    x = _smooth((5, 6, 7))[None].astype(np.float64)
    out = resample_image(x, (5, 6, 7), (1, 1, 1), (1, 1, 1))
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("new_shape", [(40, 15, 13), (20, 60, 52), (10, 45, 26), (31, 29, 27)])
def test_labels_match_per_label_linear_argmax(new_shape: tuple[int, int, int]) -> None:
    seg = _blobs((20, 30, 26))
    ours = resample_labels(seg, new_shape, (1, 1, 1), (1, 1, 1), keep_small=False)
    assert ours.dtype == seg.dtype
    np.testing.assert_array_equal(ours, _reference_labels(seg, new_shape))


def test_anisotropic_labels_in_plane_then_nearest_slice() -> None:
    seg = _blobs((8, 30, 28), seed=2)
    current, target = (4.0, 1.0, 1.0), (1.5, 0.7, 0.7)
    new_shape = compute_new_shape(seg.shape, current, target)
    ours = resample_labels(seg, new_shape, current, target, keep_small=False)
    in_plane = np.stack([_reference_labels(s[None], (1, *new_shape[1:]))[0] for s in seg])
    np.testing.assert_array_equal(ours, in_plane[nearest_indices(seg.shape[0], new_shape[0])])


def test_round_trip_keeps_shape_and_label_set() -> None:
    seg = _blobs((24, 40, 36), n_labels=5, seed=3, sigma=4.0)
    spacing, target = (2.5, 0.8, 0.8), (1.7, 1.3, 1.3)
    small = compute_new_shape(seg.shape, spacing, target)
    down = resample_labels(seg[None], small, spacing, target)
    back = resample_labels(down, seg.shape, target, spacing)
    assert down.shape == (1, *small) and back.shape == (1, *seg.shape)
    assert present_labels(back) == present_labels(seg) == present_labels(down)
    assert (back[0] == seg).mean() > 0.9


def test_tiny_structure_survives_downsampling() -> None:
    seg = np.zeros((30, 30, 30), dtype=np.int16)
    seg[5:25, 5:25, 5:25] = 1
    seg[14:16, 14, 14] = 7  # two voxels
    seg[2, 28, 3] = 9  # one voxel in the corner, in background
    new_shape = (10, 10, 10)
    plain = resample_labels(seg, new_shape, (1, 1, 1), (3, 3, 3), keep_small=False)
    assert 7 not in present_labels(plain) and 9 not in present_labels(plain)  # the argmax alone loses them
    kept = resample_labels(seg, new_shape, (1, 1, 1), (3, 3, 3))
    assert present_labels(kept) == [0, 1, 7, 9]
    assert kept[4, 4, 4] == 7 and kept[0, 9, 1] == 9  # at the voxels holding their centres
    assert np.count_nonzero(kept != plain) <= 3  # at most one output voxel per input voxel


def test_present_labels_counts_negative_values() -> None:
    assert present_labels(np.array([[[-1, 0, 3]], [[3, 3, 12]]], dtype=np.int16)) == [-1, 0, 3, 12]
    assert present_labels(np.zeros((0, 2, 2), dtype=np.int16)) == []
