"""Property tests (hypothesis): resampling round trips, sliding-window coverage, metric invariants.

Equality with the reference implementations lives next to each module (test_preprocessing_resample.py,
test_inference_sliding_window.py, test_evaluation_surface.py, test_evaluation_case.py); here generated inputs
check the invariants that must hold whatever the data.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amos_autoseg.evaluation import dice, evaluate_case, surface_dice
from amos_autoseg.inference.sliding_window import pad_to_patch, sliding_window_inference, tile_starts
from amos_autoseg.preprocessing.resample import compute_new_shape, resample_image, resample_labels

FAST = settings(max_examples=30, deadline=None)

spacing_values = st.sampled_from([0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0])
spacings = st.tuples(spacing_values, spacing_values, spacing_values)
factors = st.tuples(*[st.integers(1, 3)] * 3)
shapes = st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7))


def _labels(seed: int, shape: tuple[int, ...], n_labels: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_labels + 1, shape).astype(np.uint8)


# ---- resampling -----------------------------------------------------------------------------------------


@FAST
@given(shapes, spacings, factors, st.integers(0, 2**31 - 1))
def test_nearest_upsampling_by_integer_factors_round_trips_exactly(shape, spacing, factor, seed):
    seg = _labels(seed, shape, 4)
    fine_spacing = tuple(s / f for s, f in zip(spacing, factor))
    fine_shape = compute_new_shape(shape, spacing, fine_spacing)
    assert fine_shape == tuple(n * f for n, f in zip(shape, factor))
    fine = resample_labels(seg, fine_shape, spacing, fine_spacing, order=0)
    assert fine.shape == fine_shape and fine.dtype == seg.dtype
    back = resample_labels(fine, shape, fine_spacing, spacing, order=0)
    np.testing.assert_array_equal(back, seg)
    image = seg[None].astype(np.float32) * 10.0 - 3.0
    up = resample_image(image, fine_shape, spacing, fine_spacing, order=0)
    np.testing.assert_array_equal(resample_image(up, shape, fine_spacing, spacing, order=0), image)


@FAST
@given(shapes, spacings, spacings, st.integers(0, 2**31 - 1), st.sampled_from([0, 1]))
def test_label_resampling_never_invents_labels_and_keeps_the_requested_shape(shape, spacing, target, seed, order):
    seg = _labels(seed, shape, 3)
    new_shape = compute_new_shape(shape, spacing, target)
    assert all(n >= 1 for n in new_shape)
    out = resample_labels(seg, new_shape, spacing, target, order=order)
    assert out.shape == new_shape and out.dtype == seg.dtype
    assert set(np.unique(out)) <= set(np.unique(seg))
    back = resample_labels(out, shape, target, spacing, order=order)
    assert back.shape == shape and set(np.unique(back)) <= set(np.unique(seg))


@FAST
@given(shapes, spacings, spacings, st.floats(-1000, 1000, allow_nan=False), st.sampled_from([0, 1, 3]))
def test_constant_images_stay_constant_through_a_round_trip(shape, spacing, target, value, order):
    image = np.full((1, *shape), value, np.float32)
    new_shape = compute_new_shape(shape, spacing, target)
    out = resample_image(image, new_shape, spacing, target, order=order)
    back = resample_image(out, shape, target, spacing, order=order)
    assert out.shape == (1, *new_shape) and back.shape == image.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-3)


# ---- sliding window ---------------------------------------------------------------------------------------

sizes_and_tiles = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=3).map(
    lambda pairs: ([max(s, t) for s, t in pairs], [min(s, t) for s, t in pairs]))


@settings(max_examples=200, deadline=None)
@given(sizes_and_tiles, st.sampled_from([0.25, 0.5, 0.7, 1.0]))
def test_tiles_cover_every_voxel_within_the_volume(size_tile, step):
    size, tile = size_tile
    starts = tile_starts(size, tile, step)
    for n, t, axis in zip(size, tile, starts):
        covered = np.zeros(n, bool)
        for s in axis:
            assert 0 <= s <= n - t
            covered[s:s + t] = True
        assert covered.all()
        assert axis == sorted(axis) and axis[0] == 0 and axis[-1] == n - t
        if t * step >= 1:  # below one voxel per step nnU-Net's rule (kept for parity) repeats starts
            assert len(set(axis)) == len(axis)
        assert all(b - a <= max(1, math.ceil(t * step)) for a, b in zip(axis, axis[1:]))


@FAST
@given(st.tuples(*[st.integers(1, 9)] * 3), st.tuples(*[st.integers(1, 6)] * 3), st.booleans(),
       st.sampled_from([0.5, 1.0]), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_identity_predictor_returns_the_input(shape, patch, gaussian, step, batch, seed):
    image = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, *shape)).astype(np.float32))
    padded, crop = pad_to_patch(image, patch)
    assert all(p >= t for p, t in zip(padded.shape[1:], patch))
    out = sliding_window_inference(padded, lambda x: x.clone(), patch, step_size=step, gaussian=gaussian,
                                   tile_batch_size=batch, progress=False)
    assert out.shape == padded.shape
    torch.testing.assert_close(out[(slice(None), *crop)], image, rtol=1e-5, atol=1e-5)


# ---- metrics ----------------------------------------------------------------------------------------------


def _mask_pair(seed: int, shape: tuple[int, ...], density: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape) < density
    b = a.copy()
    flip = rng.random(shape) < 0.2
    b[flip] = ~b[flip]
    return a, b


mask_shapes = st.tuples(st.integers(2, 8), st.integers(2, 8), st.integers(2, 8))


@FAST
@given(mask_shapes, st.integers(0, 2**31 - 1), st.floats(0.05, 0.6), spacings)
def test_dsc_is_symmetric_bounded_and_one_on_identical_masks(shape, seed, density, spacing):
    a, b = _mask_pair(seed, shape, density)
    d = dice(a, b)
    if a.any() or b.any():
        assert 0.0 <= d <= 1.0 and d == dice(b, a)
    if a.any():
        assert dice(a, a) == 1.0
        assert dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


@FAST
@given(mask_shapes, st.integers(0, 2**31 - 1), st.floats(0.05, 0.6), spacings,
       st.lists(st.floats(0.0, 6.0), min_size=2, max_size=4))
def test_nsd_is_bounded_symmetric_one_on_identical_and_monotone_in_tolerance(shape, seed, density, spacing, tols):
    a, b = _mask_pair(seed, shape, density)
    if not (a.any() and b.any()):
        return
    values = [surface_dice(a, b, spacing, t) for t in sorted(tols)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(x <= y + 1e-12 for x, y in zip(values, values[1:])), values
    assert math.isclose(surface_dice(b, a, spacing, tols[0]), surface_dice(a, b, spacing, tols[0]), abs_tol=1e-12)
    assert surface_dice(a, a, spacing, 0.0) == 1.0
    assert math.isclose(surface_dice(a, b, spacing, tols[0], method="edt"),
                        surface_dice(a, b, spacing, tols[0], method="offsets"), abs_tol=1e-12)


@FAST
@given(mask_shapes, st.integers(0, 2**31 - 1), spacings, st.floats(0.0, 4.0))
def test_case_scores_follow_the_contract_conventions(shape, seed, spacing, tol):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 3, shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.3, rng.integers(0, 3, shape), ref).astype(np.uint8)
    scores = evaluate_case(pred, ref, spacing, [1, 2, 3], tol)
    assert set(scores) == {1, 2, 3}
    assert scores[3] == {"dsc": 1.0, "nsd": 1.0}  # absent from both
    for label in (1, 2):
        s = scores[label]
        assert 0.0 <= s["dsc"] <= 1.0 and 0.0 <= s["nsd"] <= 1.0
        if (ref == label).any() != (pred == label).any():
            assert s == {"dsc": 0.0, "nsd": 0.0}
    same = evaluate_case(ref, ref, spacing, [1, 2, 3], tol)
    assert all(v == {"dsc": 1.0, "nsd": 1.0} for v in same.values())
