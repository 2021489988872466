"""Normalisation formulas, the body crop (holes, bbox, -1 outside) and class location sampling."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from amos_autoseg.errors import InputError
from amos_autoseg.planning.plans import NormalizationPlan
from amos_autoseg.preprocessing.cropping import OUTSIDE, crop_to_nonzero, nonzero_bbox
from amos_autoseg.preprocessing.locations import sample_class_locations
from amos_autoseg.preprocessing.normalization import normalize


def test_ct_scheme_clips_then_standardises() -> None:
    x = np.array([-2000.0, -100.0, 0.0, 40.0, 3000.0], dtype=np.float32)
    plan = NormalizationPlan("ct", clip_low=-1000.0, clip_high=1000.0, mean=40.0, std=20.0)
    used = normalize(x, plan)
    np.testing.assert_allclose(x, [(-1000 - 40) / 20, -7.0, -2.0, 0.0, (1000 - 40) / 20])
    assert used == {"clip_low": -1000.0, "clip_high": 1000.0, "mean": 40.0, "std": 20.0}


def test_ct_scheme_guards_a_zero_std_and_missing_numbers() -> None:
    x = np.full(4, 5.0, dtype=np.float32)
    normalize(x, NormalizationPlan("ct", clip_low=0.0, clip_high=10.0, mean=5.0, std=0.0))
    assert np.all(x == 0)
    with pytest.raises(InputError, match="clip_low"):
        normalize(x, NormalizationPlan("ct", mean=1.0, std=1.0))


def test_zscore_whole_image() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 7, 8)) * 30 + 200).astype(np.float32)
    ref = (x - x.mean()) / x.std()
    used = normalize(x, NormalizationPlan("zscore"))
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4 and used["std"] > 0


def test_zscore_masked_leaves_the_outside_alone() -> None:
    rng = np.random.default_rng(1)
    x = np.zeros((6, 10, 10), dtype=np.float32)
    x[:, 2:8, 2:8] = rng.normal(size=(6, 6, 6)) * 50 + 300
    mask = x != 0
    inside = x[mask].copy()
    normalize(x, NormalizationPlan("zscore", use_mask=True), mask)
    np.testing.assert_allclose(x[mask], (inside - inside.mean()) / inside.std(), rtol=1e-4, atol=1e-4)
    assert np.all(x[~mask] == 0)


def test_unknown_scheme_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown normalization"):
        normalize(np.zeros(3, dtype=np.float32), NormalizationPlan("minmax"))


def test_crop_box_holes_and_outside_label() -> None:
    data = np.zeros((2, 12, 14, 16), dtype=np.float32)
    data[0, 3:9, 4:11, 5:13] = 1.0  # body in channel 0 ...
    data[1, 2, 6, 7] = 5.0  # ... and a voxel only channel 1 sees
    data[0, 5:7, 6:8, 8:10] = 0.0  # an enclosed hole
    data[0, 3:9, 4, 5:13] = 0.0  # an open notch on the box face (not a hole)
    seg = np.zeros((12, 14, 16), dtype=np.uint8)
    seg[4:6, 5:7, 6:8] = 3
    seg[2, 6, 7] = 2
    cropped, cseg, mask, bbox = crop_to_nonzero(data, seg)
    assert bbox == [[2, 9], [5, 11], [5, 13]]
    assert cropped.shape == (2, 7, 6, 8) and cseg.dtype == np.int16
    full_mask = ndi.binary_fill_holes((data != 0).any(axis=0))
    np.testing.assert_array_equal(mask, full_mask[2:9, 5:11, 5:13])
    assert mask[4, 2, 4]  # the hole is filled: inside the body, not -1
    seg16 = seg.astype(np.int16)
    expected = np.where(full_mask, seg16, np.where(seg16 == 0, OUTSIDE, seg16))[2:9, 5:11, 5:13]
    np.testing.assert_array_equal(cseg, expected)


def test_empty_image_keeps_its_extent() -> None:
    bbox, mask = nonzero_bbox(np.zeros((1, 3, 4, 5), dtype=np.float32))
    assert bbox == [[0, 3], [0, 4], [0, 5]] and not mask.any()


def test_class_locations_follow_nnunet_counts_and_hit_their_label() -> None:
    seg = np.zeros((40, 60, 60), dtype=np.int16)
    seg[:, :, :50] = 1  # 120,000 voxels -> 1 % = 1200 < 10000 -> 10000
    seg[0:2, 0:3, 55:60] = 2  # 30 voxels -> all of them
    seg[10, 10, 55] = -1
    locs = sample_class_locations(seg, [1, 2, 3])
    assert set(locs) == {1, 2, 3}
    assert locs[1].shape == (10000, 3) and locs[2].shape == (30, 3) and locs[3].shape == (0, 3)
    for lab, coords in locs.items():
        assert np.all(seg[tuple(coords.T)] == lab)
    assert len({tuple(c) for c in locs[1]}) == 10000  # without replacement
    again = sample_class_locations(seg, [1, 2, 3])
    assert all(np.array_equal(locs[k], again[k]) for k in locs)  # seeded per case
    big = np.ones((100, 100, 120), dtype=np.int16)  # 1.2 M voxels -> 1 % = 12,000 > 10000
    assert sample_class_locations(big, [1])[1].shape == (12000, 3)
