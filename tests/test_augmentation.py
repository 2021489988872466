"""Augmentation: nnU-Net's settings, reproducible parameter records, and what each transform does."""
from __future__ import annotations

import json
from dataclasses import replace
from math import pi

import numpy as np
import pytest

from amos_autoseg.augmentation import (
    AugmentationConfig,
    AugParams,
    apply,
    config_for,
    enlarged_patch_size,
    input_window,
    sample_params,
)
from amos_autoseg.augmentation import intensity


def _params(dims: int = 3, channels: int = 1, **changes) -> AugParams:
    """A record that does nothing, with ``changes`` applied."""
    base = AugParams(dims=dims, dummy_2d=False, angles=(0.0,) * (3 if dims == 3 else 1), scale=1.0, spatial=False,
                     noise_std=None, noise_seed=0, blur_sigmas=None, brightness=None, contrast=None,
                     lowres_zoom=None, gamma_inverted=None, gamma=None, mirror=())
    return replace(base, **changes)


def _volume(shape, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(channels, *shape)).astype(np.float32)
    seg = np.zeros((1, *shape), dtype=np.int16)
    centre = tuple(slice(s // 4, s - s // 4) for s in shape)
    seg[(0, *centre)] = 1
    seg[(0, *[slice(s // 2 - 2, s // 2 + 2) for s in shape])] = 3
    return data, seg


def test_config_for_follows_nnunets_rules():
    iso = config_for([64, 128, 128])
    assert (iso.dummy_2d, iso.rotation_deg, iso.mirror_axes, iso.rotation_axes) == (False, (-30.0, 30.0), (0, 1, 2), 3)
    flat = config_for([16, 128, 128])  # 128 / 16 > 3
    assert (flat.dummy_2d, flat.rotation_deg, flat.rotation_axes) == (True, (-180.0, 180.0), 1)
    assert config_for([48, 40]).rotation_deg == (-180.0, 180.0)
    assert config_for([40, 80], mirror_axes=[0, 1, 2]).rotation_deg == (-15.0, 15.0)
    assert config_for([40, 80], mirror_axes=[0, 1, 2]).mirror_axes == (0, 1)
    defaults = AugmentationConfig()
    assert (defaults.p_rotation, defaults.p_scaling, defaults.scaling) == (0.2, 0.2, (0.7, 1.4))
    assert (defaults.p_noise, defaults.noise_std, defaults.p_blur, defaults.blur_sigma) == (0.1, (0, 0.1), 0.2,
                                                                                             (0.5, 1.0))
    assert (defaults.p_brightness, defaults.p_contrast, defaults.p_lowres, defaults.lowres_zoom) == (
        0.15, 0.15, 0.25, (0.5, 1.0))
    assert (defaults.p_gamma_inverted, defaults.p_gamma, defaults.gamma) == (0.1, 0.3, (0.7, 1.5))
    with pytest.raises(ValueError):
        AugmentationConfig(seg_interpolation="cubic")
    with pytest.raises(ValueError):
        AugmentationConfig(dims=2, mirror_axes=(0, 1, 2))


@pytest.mark.parametrize("patch, expected", [
    ([64, 128, 128], [140, 205, 168]),
    ([20, 56, 40], [53, 80, 52]),
    ([13, 27, 33], [29, 46, 41]),
    ([64, 160, 224], [64, 263, 263]),  # 224 / 64 > 3: dummy 2-d
    ([16, 128, 128], [16, 150, 150]),  # dummy 2-d: axis 0 kept
    ([8, 64, 96], [8, 112, 112]),
    ([48, 40], [56, 56]),
    ([512, 512], [602, 602]),
])
def test_enlarged_patch_size_equals_nnunets_get_patch_size(patch, expected):
    # expected values from nnunetv2 2.8.1's get_patch_size with the trainer's arguments
    assert enlarged_patch_size(patch, config_for(patch)) == expected


def test_enlarged_patch_size_for_a_narrow_2d_rotation():
    assert enlarged_patch_size([48, 40], replace(config_for([48, 40]), rotation_deg=(-15.0, 15.0))) == [66, 47]


def test_parameters_are_reproducible_from_seeds_and_serialisable():
    cfg = config_for([32, 64, 64])
    a = [sample_params(np.random.default_rng(s), cfg, 2) for s in range(50)]
    b = [sample_params(np.random.default_rng(s), cfg, 2) for s in range(50)]
    assert a == b
    assert len({json.dumps(p.to_dict()) for p in a}) == 50
    for p in a:
        assert AugParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_parameter_frequencies_and_ranges():
    cfg = config_for([32, 64, 64])
    rng = np.random.default_rng(1)
    n = 4000
    ps = [sample_params(rng, cfg, 1) for _ in range(n)]

    def rate(pred):
        return sum(1 for p in ps if pred(p)) / n

    def close(observed, expected):
        return abs(observed - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 1e-9

    assert close(rate(lambda p: any(a != 0 for a in p.angles)), 0.2)
    assert close(rate(lambda p: p.scale != 1.0), 0.2)
    assert close(rate(lambda p: p.spatial), 1 - 0.8 * 0.8)
    assert close(rate(lambda p: p.noise_std is not None), 0.1)
    assert close(rate(lambda p: p.blur_sigmas is not None), 0.2)
    assert close(rate(lambda p: p.blur_sigmas is not None and p.blur_sigmas[0] is not None), 0.1)
    assert close(rate(lambda p: p.brightness is not None), 0.15)
    assert close(rate(lambda p: p.contrast is not None), 0.15)
    assert close(rate(lambda p: p.lowres_zoom is not None and p.lowres_zoom[0] is not None), 0.125)
    assert close(rate(lambda p: p.gamma_inverted is not None), 0.1)
    assert close(rate(lambda p: p.gamma is not None), 0.3)
    assert close(rate(lambda p: 1 in p.mirror), 0.5)
    assert all(abs(a) <= pi / 6 for p in ps for a in p.angles)
    assert all(0.7 <= p.scale <= 1.4 for p in ps)
    gammas = [p.gamma[0] for p in ps if p.gamma is not None]
    assert all(0.7 <= g <= 1.5 for g in gammas)
    assert abs(np.mean([g < 1 for g in gammas]) - 0.5) < 0.1  # BGContrast: half below 1, half above
    sigmas = [s for p in ps if p.blur_sigmas and p.blur_sigmas[0] for s in p.blur_sigmas[0]]
    assert sigmas and all(0.5 <= s <= 1.0 for s in sigmas)


def test_dummy_2d_parameters_stay_in_plane():
    cfg = replace(config_for([16, 128, 128]), p_rotation=1.0, p_lowres=1.0, lowres_p_per_channel=1.0)
    p = sample_params(np.random.default_rng(0), cfg, 2)
    assert len(p.angles) == 1 and abs(p.angles[0]) <= pi
    assert all(z[0] == 1.0 and z[1] == z[2] < 1.0 for z in p.lowres_zoom)


def test_mirroring_equals_array_flips():
    data, seg = _volume((12, 16, 20), channels=2)
    for axes in [(0,), (1, 2), (0, 1, 2)]:
        out, out_seg = apply(data, seg, _params(mirror=axes), [12, 16, 20])
        flip = tuple(a + 1 for a in axes)
        assert np.array_equal(out, np.flip(data, flip)) and np.array_equal(out_seg, np.flip(seg, flip))


def test_no_spatial_transform_is_a_centre_crop():
    data, seg = _volume((15, 20, 24))
    out, out_seg = apply(data, seg, _params(), [8, 10, 12])
    assert np.array_equal(out, data[:, 3:11, 5:15, 6:18]) and np.array_equal(out_seg, seg[:, 3:11, 5:15, 6:18])


@pytest.mark.parametrize("seg_order", [0, 1])
def test_rotation_zero_and_scale_one_is_identity_up_to_interpolation(seg_order):
    data, seg = _volume((14, 20, 24))
    out, out_seg = apply(data, seg, _params(spatial=True, seg_order=seg_order), [8, 10, 12])
    crop = (slice(None), slice(3, 11), slice(5, 15), slice(6, 18))
    assert np.allclose(out, data[crop], atol=1e-4)
    assert np.array_equal(out_seg, seg[crop])


def test_quarter_turn_in_plane_is_rot90():
    data, seg = _volume((20, 20))
    out, out_seg = apply(data, seg, _params(dims=2, spatial=True, angles=(pi / 2,)), [12, 12])
    crop = data[0, 4:16, 4:16]
    assert np.allclose(out[0], np.rot90(crop, k=-1), atol=1e-4)
    assert np.array_equal(out_seg[0], np.rot90(seg[0, 4:16, 4:16], k=-1))


def test_scaling_above_one_makes_objects_smaller():
    data, seg = _volume((32, 32))  # label 1 covers the central 16 x 16
    _, out_seg = apply(data, seg, _params(dims=2, spatial=True, angles=(0.0,), scale=2.0), [32, 32])
    assert abs(int((out_seg > 0).sum()) - 8 * 8) <= 8
    assert (out_seg == -1).any()  # the zoomed-out view reaches outside the image: -1 there


def test_noise_statistics_and_replay():
    data = np.zeros((2, 16, 32, 32), dtype=np.float32)
    seg = np.zeros((1, 16, 32, 32), dtype=np.int16)
    p = _params(channels=2, noise_std=0.1, noise_seed=123)
    out, _ = apply(data, seg, p, [16, 32, 32])
    assert abs(out.std() - 0.1) < 0.005 and abs(out.mean()) < 0.005
    assert np.array_equal(out, apply(data, seg, p, [16, 32, 32])[0])
    assert not np.array_equal(out, apply(data, seg, replace(p, noise_seed=124), [16, 32, 32])[0])


def test_brightness_and_contrast():
    data, seg = _volume((8, 16, 16), channels=2)
    out, _ = apply(data, seg, _params(channels=2, brightness=(0.8, 1.2)), [8, 16, 16])
    assert np.allclose(out[0], data[0] * 0.8) and np.allclose(out[1], data[1] * 1.2)
    out, _ = apply(data, seg, _params(channels=2, contrast=(0.8, 1.25)), [8, 16, 16])
    for c in range(2):
        assert out[c].min() >= data[c].min() and out[c].max() <= data[c].max()
    assert out[0].std() < data[0].std() and out[1].std() > data[1].std() * 1.1
    assert abs(out[0].mean() - data[0].mean()) < 1e-4  # a reduction never clips: mean kept


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_keeps_range_and_retains_statistics(invert):
    data = np.random.default_rng(0).uniform(-1, 3, size=(1, 8, 16, 16)).astype(np.float32)
    plain = data.copy()
    intensity.adjust_gamma(plain, [1.5], invert=invert, retain_stats=False)
    assert np.isclose(plain.min(), data.min(), atol=1e-5) and np.isclose(plain.max(), data.max(), atol=1e-5)
    assert not np.allclose(plain, data)
    kept = data.copy()
    intensity.adjust_gamma(kept, [0.7], invert=invert, retain_stats=True)
    assert np.isclose(kept.mean(), data.mean(), atol=1e-4) and np.isclose(kept.std(), data.std(), rtol=1e-4)


def test_blur_and_low_resolution():
    data, seg = _volume((16, 24, 24), channels=2)
    out, _ = apply(data, seg, _params(channels=2, blur_sigmas=((1.0, 1.0, 1.0), None)), [16, 24, 24])
    assert out[0].std() < 0.5 * data[0].std() and np.array_equal(out[1], data[1])
    out, _ = apply(data, seg, _params(channels=2, lowres_zoom=((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))), [16, 24, 24])
    assert out[0].std() < data[0].std() and np.array_equal(out[1], data[1])
    flat = np.full((1, 8, 12, 12), 2.5, dtype=np.float32)
    intensity.simulate_low_resolution(flat, [(0.5, 0.5, 0.5)])
    assert np.allclose(flat, 2.5)


@pytest.mark.parametrize("interp", ["nearest", "linear"])
def test_every_transform_keeps_labels_in_the_label_set(interp):
    data, seg = _volume((30, 40, 40), channels=2)
    seg[0, :2] = -1  # outside the body
    cfg = AugmentationConfig(p_rotation=1, p_scaling=1, p_noise=1, p_blur=1, p_brightness=1, p_contrast=1,
                             p_lowres=1, p_gamma_inverted=1, p_gamma=1, seg_interpolation=interp)
    for seed in range(4):
        p = sample_params(np.random.default_rng(seed), cfg, 2)
        out, out_seg = apply(data, seg, p, [16, 24, 24])
        assert out.shape == (2, 16, 24, 24) and out.dtype == np.float32 and np.isfinite(out).all()
        assert out_seg.shape == (1, 16, 24, 24) and out_seg.dtype == np.int16
        assert set(np.unique(out_seg)) <= {-1, 0, 1, 3}


def test_linear_and_nearest_segmentation_differ_only_at_borders():
    data, seg = _volume((30, 40, 40))
    p = _params(spatial=True, angles=(0.3, -0.2, 0.4), scale=1.1)
    _, nearest = apply(data, seg, p, [20, 30, 30])
    _, linear = apply(data, seg, replace(p, seg_order=1), [20, 30, 30])
    assert 0 < np.mean(nearest != linear) < 0.05


def test_reading_only_the_window_gives_the_same_result():
    data, seg = _volume((40, 50, 44), channels=2)
    cfg = AugmentationConfig(p_rotation=1, p_scaling=1, p_noise=1, p_blur=1, seg_interpolation="linear")
    for seed in range(5):
        p = sample_params(np.random.default_rng(seed), cfg, 2)
        full = apply(data, seg, p, [16, 24, 20])
        window = input_window(p, [40, 50, 44], [16, 24, 20])
        region = (slice(None), *[slice(lo, hi) for lo, hi in window])
        part = apply(data[region], seg[region], p, [16, 24, 20], offset=[lo for lo, _ in window],
                     in_shape=[40, 50, 44])
        # the normalised sampling grid is rounded differently for a different input size: float noise only
        assert np.allclose(full[0], part[0], atol=1e-4) and np.array_equal(full[1], part[1])


def test_inputs_are_not_modified_and_masking_zeroes_outside():
    data, seg = _volume((12, 16, 16), channels=2)
    seg[0, :3] = -1
    before = (data.copy(), seg.copy())
    out, out_seg = apply(data, seg, _params(channels=2, gamma=(1.3, 0.8), mask_channels=(1,)), [12, 16, 16])
    assert np.array_equal(data, before[0]) and np.array_equal(seg, before[1])
    assert np.all(out[1][out_seg[0] < 0] == 0) and np.any(out[0][out_seg[0] < 0] != 0)
