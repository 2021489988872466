"""The device augmentation (batched, torch) equals the CPU path for the same records, on CPU tensors.

Tolerances: images within 1e-4 absolute (unit-variance inputs: float32 rounding of differently computed sampling
grids and reductions; observed about 2e-5); labels identical except at float16 score ties that the different grid
rounding may settle differently, at most 1 voxel in 10,000 (observed: none). The noise field is the one exception:
the device draws it from a torch generator, so only its law is compared.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from data_standin import MemoryCases, make_case
from scipy import ndimage, stats

from amos_autoseg.augmentation import AugmentationConfig, apply, config_for, enlarged_patch_size, input_window
from amos_autoseg.augmentation import sample_params
from amos_autoseg.augmentation.batched import augment_batch
from amos_autoseg.augmentation.labels import linear_labels, nearest_labels
from amos_autoseg.data.batches import BatchSource, augment_on_device, pack_windows
from amos_autoseg.data.loader import BatchLoader

IMAGE_TOL = 1e-4
SEG_MISMATCH = 1e-4
NONE = dict(p_rotation=0, p_scaling=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_lowres=0,
            p_gamma_inverted=0, p_gamma=0, p_mirror_per_axis=0)
TRANSFORMS = {
    "rotation": dict(p_rotation=1),
    "scaling": dict(p_scaling=1),
    "mirror": dict(p_mirror_per_axis=0.6),
    "rotation+mirror": dict(p_rotation=1, p_mirror_per_axis=0.6),
    "blur": dict(p_blur=1, blur_p_per_channel=0.7),
    "brightness": dict(p_brightness=1),
    "contrast": dict(p_contrast=1),
    "lowres": dict(p_lowres=1, lowres_p_per_channel=0.7),
    "lowres+mirror": dict(p_lowres=1, lowres_p_per_channel=1, p_mirror_per_axis=0.6),
    "gamma_inverted": dict(p_gamma_inverted=1),
    "gamma": dict(p_gamma=1),
    "mask": dict(p_rotation=0.5, mask_channels=(1,)),
    "nnunet_default": {k: v for k, v in AugmentationConfig().__dict__.items() if k.startswith("p_") and k != "p_noise"},
}
GEOMETRIES = {"3d": [13, 21, 18], "dummy_2d": [5, 23, 21], "2d": [19, 26]}


def _crop(shape: list[int], channels: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An enlarged crop: unit-variance image, blocky labels 0..4 with -1 (outside) along one face."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(channels, *shape)).astype(np.float32)
    coarse = rng.integers(0, 5, size=[s // 5 + 1 for s in shape])
    seg = ndimage.zoom(coarse, 5, order=0)[tuple(slice(0, s) for s in shape)].astype(np.int16)
    seg[0] = -1
    return data, seg[None]


def _both_paths(cfg: AugmentationConfig, patch: list[int], seeds: range, channels: int = 2):
    """(CPU outputs per sample, device batch outputs, records) for records drawn from ``seeds``."""
    crop = enlarged_patch_size(patch, cfg)
    full, seg = _crop(crop, channels)
    records = [sample_params(np.random.default_rng(s), cfg, channels) for s in seeds]
    windows, cpu = [], []
    for rec in records:
        w = input_window(rec, crop, patch)
        region = (slice(None), *[slice(lo, hi) for lo, hi in w])
        windows.append((full[region], seg[region], [lo for lo, _ in w]))
        cpu.append(apply(full[region], seg[region], rec, patch, offset=windows[-1][2], in_shape=crop))
    data, labels = pack_windows([w[0] for w in windows], [w[1] for w in windows])
    dev = augment_batch(torch.from_numpy(data), torch.from_numpy(labels), records, [w[2] for w in windows], crop,
                        patch)
    return cpu, dev, records


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_each_transform_equals_the_cpu_path(transform, geometry):
    patch = GEOMETRIES[geometry]
    cfg = replace(config_for(patch), **{**NONE, **TRANSFORMS[transform]})
    cpu, (x, labels), records = _both_paths(cfg, patch, range(4))
    assert x.shape == (4, 2, *patch) and x.dtype == torch.float32 and labels.dtype == torch.int16
    mismatched = 0
    for k, (image, seg) in enumerate(cpu):
        assert np.abs(image - x[k].numpy()).max() <= IMAGE_TOL, (k, records[k])
        mismatched += int((seg != labels[k].numpy()).sum())
    assert mismatched <= SEG_MISMATCH * labels.numel()
    changed = [not np.array_equal(image, cpu[0][0]) for image, _ in cpu[1:]]
    assert any(changed)  # the records differ per sample, and so do the outputs


def test_the_label_tolerance_tells_linear_from_nearest():
    patch = GEOMETRIES["3d"]
    cfg = replace(config_for(patch), **{**NONE, "p_rotation": 1, "p_scaling": 1})
    cpu, (_, labels), _ = _both_paths(cfg, patch, range(4))
    _, (_, nearest), _ = _both_paths(replace(cfg, seg_interpolation="nearest"), patch, range(4))
    assert all(np.array_equal(seg, labels[k].numpy()) for k, (_, seg) in enumerate(cpu))
    assert int((nearest != labels).sum()) > 10 * SEG_MISMATCH * labels.numel()


@pytest.mark.parametrize("dims", [2, 3])
def test_sparse_label_sampling_equals_the_full_argmax(dims):
    rng = np.random.default_rng(dims)
    shape = [17, 23, 20][:dims]
    seg = torch.from_numpy(np.stack([_crop(shape, seed=s)[1] for s in range(2)]))
    seg[1, 0, 3:6] = 7  # a third label only in sample 1
    theta = torch.from_numpy(rng.uniform(-0.5, 0.5, size=(2, dims, dims + 1)).astype(np.float32))
    theta[:, :, :dims] += torch.eye(dims) * 1.1
    grid = torch.nn.functional.affine_grid(theta, [2, 1, *[15, 19, 16][:dims]], align_corners=False)
    full = linear_labels(seg, grid, sparse=False)
    assert torch.equal(linear_labels(seg, grid, sparse=True), full)
    assert 0 < int((nearest_labels(seg, grid) != full).sum()) < full.numel() // 10
    assert set(torch.unique(full).tolist()) <= {-1, 0, 1, 2, 3, 4, 7}


def test_device_noise_has_the_cpu_law_and_replays_from_its_seed():
    cfg = replace(config_for([16, 32, 32]), **{**NONE, "p_noise": 1})
    records = [replace(r, noise_std=0.08) for r in
               (sample_params(np.random.default_rng(s), cfg, 2) for s in range(3))]
    zeros = np.zeros((3, 2, 16, 32, 32), np.float32)
    seg = np.zeros((3, 1, 16, 32, 32), np.int8)

    def device(recs):
        return augment_batch(torch.from_numpy(zeros), torch.from_numpy(seg), recs, [[0, 0, 0]] * 3,
                             [16, 32, 32], [16, 32, 32])[0].numpy()

    field = device(records)
    cpu = np.stack([apply(zeros[k], seg[k].astype(np.int16), r, [16, 32, 32])[0] for k, r in enumerate(records)])
    assert np.array_equal(field, device(records))  # replayed from the seeds
    assert not np.array_equal(field[0], field[1])  # one field per sample
    assert stats.ks_2samp(field.ravel(), cpu.ravel()).pvalue > 0.01
    assert abs(field.std() - 0.08) < 0.002 and abs(field.mean()) < 0.002
    wider = device([replace(r, noise_std=0.088) for r in records])  # a 10% wider law is told apart
    assert stats.ks_2samp(wider.ravel(), cpu.ravel()).pvalue < 1e-6


BOXES = {1: (slice(3, 12), slice(6, 30), slice(6, 30)), 2: (slice(10, 13), slice(30, 34), slice(20, 24))}


@pytest.fixture(scope="module")
def cases() -> MemoryCases:
    return MemoryCases({f"c{i}": make_case((18, 40, 38), BOXES, channels=2, seed=i, body_margin=1)
                        for i in range(3)})


@pytest.mark.parametrize("patch", [[8, 16, 16], [16, 20]])
def test_window_batches_augmented_on_the_device_equal_cpu_batches(cases, patch):
    cfg = replace(config_for(patch), p_rotation=0.6, p_scaling=0.6, p_noise=0)

    def source(on):
        return BatchSource(cases, sorted(cases.cases), patch, 3, 0.33, 4, cfg, augment_on=on)

    cpu, device = source("cpu"), source("device")
    for step in range(4):
        want = cpu.make_batch(step)
        raw = device.make_batch(step)
        assert raw["target"].dtype == np.int8 and "augment" in raw
        got = augment_on_device(raw, torch.device("cpu"))
        assert got["case_ids"] == want["case_ids"] and "augment" not in got
        assert np.abs(got["data"].numpy() - want["data"]).max() <= IMAGE_TOL
        assert np.mean(got["target"].numpy() != want["target"]) <= SEG_MISMATCH
        assert int(got["target"].min()) >= 0


def test_window_batches_through_worker_processes_are_the_serial_ones(cases):
    src = BatchSource(cases, sorted(cases.cases), [8, 16, 16], 2, 0.33, 9, config_for([8, 16, 16]),
                      augment_on="device")
    serial = [augment_on_device(b, torch.device("cpu")) for b in BatchLoader(src, 2, 3, workers=0)]
    workers = [augment_on_device(b, torch.device("cpu")) for b in BatchLoader(src, 2, 3, workers=2)]
    for a, b in zip(serial, workers, strict=True):
        assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"])
    again = augment_on_device(src.make_batch(3), torch.device("cpu"))  # a pure function of the step
    assert torch.equal(again["data"], serial[1]["data"]) and torch.equal(again["target"], serial[1]["target"])
    with pytest.raises(ValueError):
        BatchSource(cases, ["c0"], [8, 16, 16], 2, 0.33, 9, None, augment_on="gpu")


def test_cases_of_masked_modalities_are_zero_outside_the_body_after_augmenting():
    mri = make_case((18, 40, 38), BOXES, channels=2, seed=5, body_margin=3)
    mri.properties = {"modality": "MRI"}
    ct = make_case((18, 40, 38), BOXES, channels=2, seed=6, body_margin=3)
    ct.properties = {"modality": "CT"}
    cfg = replace(config_for([8, 16, 16]), p_brightness=1, p_contrast=1, p_noise=0, p_rotation=0.5)

    def source(on):
        return BatchSource(MemoryCases({"mri": mri, "ct": ct}), ["ct", "mri"], [8, 16, 16], 4, 0.0, 3, cfg,
                           augment_on=on, mask_modalities=("MRI",))

    cpu, device = source("cpu"), source("device")
    seen = {"mri": 0, "ct": 0}
    for step in range(6):
        windows = [cpu.make_window(step, i) for i in range(4)]
        assert all(w[2].mask_channels == ((0, 1) if w[4] == "mri" else ()) for w in windows)
        for data, seg, rec, offset, case_id in windows:
            image, labels = apply(data, seg, rec, [8, 16, 16], offset=offset, in_shape=cpu.crop_size)
            outside = labels[0] < 0
            if outside.any():
                seen[case_id] += 1
                assert (np.all(image[:, outside] == 0)) == (case_id == "mri")
        got = augment_on_device(device.make_batch(step), torch.device("cpu"))["data"].numpy()
        assert np.abs(got - cpu.make_batch(step)["data"]).max() <= IMAGE_TOL  # the device path masks alike
    assert seen["mri"] and seen["ct"]
