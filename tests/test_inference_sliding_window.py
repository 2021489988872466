"""Sliding window, mirroring TTA and fold ensemble with analytic predictors (MONAI-style)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from amos_autoseg.inference import sliding_window as sw
from amos_autoseg.inference.ensemble import probability_ensemble
from amos_autoseg.inference.sliding_window import gaussian_importance, sliding_window_inference, tile_starts
from amos_autoseg.inference.tta import mirror_combinations, mirrored


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((17, 31, 9), (8, 16, 8)), ((5, 7, 3), (8, 16, 8)), ((8, 16, 8), (8, 16, 8)), ((33, 9, 20), (7, 5, 6))],
)
@pytest.mark.parametrize("predictor,factor", [(identity, 1.0), (double, 2.0)])
def test_analytic_predictors_recover_the_volume(shape, patch, predictor, factor):
    """Odd shapes and volumes smaller than the patch: the result is the analytic value everywhere."""
    image = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    out = sliding_window_inference(image, predictor, patch, progress=False)
    assert out.shape == image.shape
    torch.testing.assert_close(out, factor * image, rtol=1e-5, atol=1e-5)


def test_uniform_blending_and_float16_buffers_also_recover_the_volume():
    image = torch.randn(1, 17, 31, 9, generator=torch.Generator().manual_seed(1))
    flat = sliding_window_inference(image, double, (8, 16, 8), gaussian=False, progress=False)
    torch.testing.assert_close(flat, 2 * image, rtol=1e-5, atol=1e-5)
    half = sliding_window_inference(image, identity, (8, 16, 8), dtype=torch.float16, progress=False)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), image, rtol=2e-2, atol=2e-2)


def test_output_channels_may_differ_from_input_channels():
    image = torch.randn(1, 12, 13, 14)
    out = sliding_window_inference(image, lambda t: torch.cat([t, -t, 3 * t], dim=1), (8, 8, 8), progress=False)
    assert out.shape == (3, 12, 13, 14)
    torch.testing.assert_close(out[2], 3 * image[0], rtol=1e-5, atol=1e-5)


def test_tile_starts_follow_nnunet():
    # nnU-Net's documented example: size 110, patch 64, step 0.5 -> 0, 23, 46
    assert tile_starts((110,), (64,)) == [[0, 23, 46]]
    assert tile_starts((64, 65), (64, 64)) == [[0], [0, 1]]
    assert tile_starts((128,), (64,), 1.0) == [[0, 64]]
    with pytest.raises(ValueError):
        tile_starts((10,), (16,))
    with pytest.raises(ValueError):
        tile_starts((20,), (16,), 0.0)


@pytest.mark.parametrize(("size", "tile", "step"), [(110, 64, 0.5), (31, 16, 0.5), (200, 48, 0.25), (9, 8, 0.5)])
def test_tiles_cover_every_voxel_with_steps_no_larger_than_asked(size, tile, step):
    starts = tile_starts((size,), (tile,), step)[0]
    covered = np.zeros(size, dtype=int)
    for s in starts:
        covered[s:s + tile] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] == size - tile
    assert max(np.diff(starts), default=0) <= tile * step


def test_every_tile_is_seen_once_and_batches_equal_single_tiles():
    image = torch.randn(1, 21, 19, 11, generator=torch.Generator().manual_seed(2))
    calls = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.sigmoid(x * 3) + x ** 2

    single = sliding_window_inference(image, recording, (8, 8, 8), tile_batch_size=1, progress=False)
    n_tiles = int(np.prod([len(s) for s in tile_starts((21, 19, 11), (8, 8, 8))]))
    assert sum(calls) == len(calls) == n_tiles
    calls.clear()
    batched = sliding_window_inference(image, recording, (8, 8, 8), tile_batch_size=4, progress=False)
    assert sum(calls) == n_tiles and max(calls) == 4
    torch.testing.assert_close(batched, single, rtol=1e-6, atol=1e-6)


def test_gaussian_map_is_centred_positive_and_scaled():
    g = gaussian_importance((9, 16, 7))
    assert g.shape == (9, 16, 7)
    assert float(g.max()) == pytest.approx(sw.GAUSSIAN_MAX)
    assert tuple(int(i) for i in np.unravel_index(int(g.argmax()), g.shape)) == (4, 8, 3)
    assert float(g.min()) > 0
    # separable and symmetric about the centre along an odd axis
    torch.testing.assert_close(g, g.flip(0))
    half = gaussian_importance((64, 64, 64), dtype=torch.float16)
    assert float(half.min()) >= sw.FLOAT16_MIN_WEIGHT * 0.99 and torch.isfinite(half).all()


def test_gaussian_matches_a_blurred_delta():
    """nnU-Net's definition: a delta at the centre blurred with sigma = tile / 8 (scipy), scaled to max 10."""
    from scipy.ndimage import gaussian_filter

    tile = (12, 20, 9)
    delta = np.zeros(tile)
    delta[tuple(s // 2 for s in tile)] = 1
    ref = gaussian_filter(delta, [s / 8 for s in tile], 0, mode="constant", cval=0)
    ref = ref / ref.max() * sw.GAUSSIAN_MAX
    ref[ref == 0] = ref[ref > 0].min()
    np.testing.assert_allclose(gaussian_importance(tile, dtype=torch.float64).numpy(), ref, rtol=1e-6)


def test_gaussian_weighting_normalises_overlaps():
    """A constant predictor gives the constant back, so the weights are divided out exactly."""
    image = torch.zeros(1, 30, 30, 30)
    out = sliding_window_inference(image, lambda t: torch.full_like(t, 0.25), (12, 12, 12), progress=False)
    torch.testing.assert_close(out, torch.full_like(image, 0.25))


def test_centre_of_a_tile_dominates_its_border():
    """Where two tiles overlap, the prediction of the tile whose centre is closer wins most of the weight."""
    image = torch.zeros(1, 1, 1, 24)
    marks = itertools.count()  # tile id per call: starts 0, 4, 8, 12, 16 along x

    def tile_id(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, float(next(marks)))

    out = sliding_window_inference(image, tile_id, (1, 1, 8), progress=False)[0, 0, 0]
    assert float(out[1]) == pytest.approx(0.0, abs=1e-6)  # only tile 0 covers x = 1
    assert float(out[5]) < 0.5 < float(out[7])  # tiles 0 (centre 4) and 1 (centre 8) overlap: nearer centre wins


def test_out_of_memory_on_the_accumulation_device_falls_back_to_the_cpu(monkeypatch, caplog):
    real = sw._predict
    devices = []

    def flaky(image, predictor, patch, step, gaussian, batch, compute, accumulate, dtype, progress):
        devices.append(accumulate.type)
        if accumulate.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(image, predictor, patch, step, gaussian, batch, compute, accumulate, dtype, progress)

    monkeypatch.setattr(sw, "_predict", flaky)
    image = torch.randn(1, 10, 10, 10)
    out = sw.sliding_window_inference(image, double, (8, 8, 8), compute_device="cpu", accumulate_device="meta",
                                      progress=False)
    assert devices == ["meta", "cpu"]
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, 2 * image, rtol=1e-5, atol=1e-5)
    assert "out of memory" in caplog.text


def test_other_errors_are_not_swallowed():
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), broken, (8, 8, 8), accumulate_device="cpu", progress=False)
    with pytest.raises(ValueError, match="predictor returned"):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), lambda t: t[:, :, :4], (8, 8, 8), progress=False)


def test_mirror_combinations_cover_every_subset_once():
    combos = mirror_combinations([2, 0, 1])
    assert combos[0] == () and len(combos) == 8 and len(set(combos)) == 8
    assert mirror_combinations([]) == [()]


def test_tta_with_a_mirror_equivariant_predictor_equals_no_tta():
    image = torch.randn(1, 13, 17, 11, generator=torch.Generator().manual_seed(3))

    def pointwise(x: torch.Tensor) -> torch.Tensor:  # commutes with every flip
        return torch.cat([torch.tanh(x), x ** 3], dim=1)

    plain = sliding_window_inference(image, pointwise, (8, 8, 8), progress=False)
    with_tta = sliding_window_inference(image, mirrored(pointwise, [0, 1, 2]), (8, 8, 8), progress=False)
    torch.testing.assert_close(with_tta, plain, rtol=1e-5, atol=1e-5)


def test_tta_averages_the_flipped_predictions():
    """A position-dependent predictor shows the average over the 4 flips of 2 axes."""
    x = torch.zeros(1, 1, 4, 6, 1)
    ramp = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6, 1)

    def position(t: torch.Tensor) -> torch.Tensor:
        return t + ramp

    out = mirrored(position, [1])(x)
    torch.testing.assert_close(out, torch.full_like(x, 2.5))  # mean of the ramp and its flip
    assert mirrored(position, []) is position
    with pytest.raises(ValueError):
        mirrored(position, [3])(x)


def test_probability_ensemble_averages_softmax_not_logits():
    x = torch.zeros(1, 1, 2, 2, 2)
    a = lambda t: torch.cat([t, t + 4.0], dim=1)  # noqa: E731 - probabilities (0.018, 0.982)
    b = lambda t: torch.cat([t, t - 4.0], dim=1)  # noqa: E731 - probabilities (0.982, 0.018)
    out = probability_ensemble([a, b])(x)
    torch.testing.assert_close(out, torch.full_like(out, 0.5))
    weighted = probability_ensemble([a, b], weights=[3, 1])(x)
    p = torch.softmax(torch.tensor([0.0, 4.0]), 0)
    torch.testing.assert_close(weighted[0, :, 0, 0, 0], 0.75 * p + 0.25 * p.flip(0))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(1, 2, 2, 2))
    with pytest.raises(ValueError):
        probability_ensemble([])


def test_pad_to_patch_centres_and_crops_back():
    image = torch.arange(3 * 5 * 2, dtype=torch.float32).view(1, 3, 5, 2)
    padded, unpad = sw.pad_to_patch(image, (6, 4, 5))
    assert padded.shape == (1, 6, 5, 5)
    assert [(s.start, s.stop) for s in unpad] == [(1, 4), (0, 5), (1, 3)]
    torch.testing.assert_close(padded[(slice(None), *unpad)], image)
    assert float(padded.sum()) == float(image.sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_accumulation_matches_cpu():
    image = torch.randn(1, 40, 50, 30)
    cpu = sliding_window_inference(image, double, (16, 32, 16), progress=False)
    gpu = sliding_window_inference(image, double, (16, 32, 16), compute_device="cuda", progress=False)
    torch.testing.assert_close(gpu.float().cpu(), cpu, rtol=1e-2, atol=1e-2)


def test_all_tile_corners_are_distinct():
    starts = tile_starts((40, 33, 17), (16, 16, 8))
    corners = list(itertools.product(*starts))
    assert len(set(corners)) == len(corners)


@pytest.mark.parametrize("group", [1, 3, 8])
def test_grouped_mirroring_equals_one_flip_per_call(group):
    x = torch.randn(2, 1, 5, 6, 7, generator=torch.Generator().manual_seed(5))
    ramp = torch.linspace(-1, 1, 5 * 6 * 7).view(1, 1, 5, 6, 7)
    sizes = []

    def position(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.shape[0])
        return torch.cat([t * ramp, t + ramp], dim=1)

    reference = mirrored(position, [0, 1, 2])(x)
    sizes.clear()
    grouped = mirrored(position, [0, 1, 2], group=group)(x)
    torch.testing.assert_close(grouped, reference, rtol=1e-6, atol=1e-6)
    assert sizes == [2 * min(group, 8 - i) for i in range(0, 8, group)]
