"""Fingerprint: statistics against numpy on known arrays, per modality and phase, crop, determinism, cache."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import oblique_direction, write_nifti
from scipy.ndimage import binary_fill_holes

from amos_autoseg.errors import InputError
from amos_autoseg.fingerprint import extract
from amos_autoseg.fingerprint.extract import extract_fingerprint, intensity_stats, nonzero_bbox
from amos_autoseg.fingerprint.model import Fingerprint
from amos_autoseg.io.dataset import load_dataset

SHAPE = (6, 7, 8)
SPACINGS = {1: (3.0, 0.8, 0.8), 2: (2.5, 0.7, 0.7), 3: (5.0, 0.9, 0.9), 501: (6.0, 1.2, 1.2)}
LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "bladder"}
SAMPLES_TOTAL = 4000  # 4 cases -> 1000 draws per case


def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and label of case ``n``: zero margin (z 0, y 0-1, x 7), body 5, organs with known values."""
    rng = np.random.default_rng(n)
    img = np.zeros(SHAPE, np.float32)
    img[1:, 2:, :7] = 5.0
    img[3, 4, 3] = 0.0  # a hole inside the body: must not shrink the crop
    lab = np.zeros(SHAPE, np.uint16)
    lab[2:5, 3:6, 1:4] = 1
    if n == 1:  # CT arterial: every foreground voxel is 100
        lab[2:4, 3:5, 5:7] = 2
        img[lab > 0] = 100.0
        lab[0, 0, 0] = 1  # labelled but outside the nonzero box: nnU-Net crops it away before sampling
    elif n == 2:  # CT venous: every foreground voxel is 200
        lab[4:6, 5:7, 4:7] = 3
        img[lab > 0] = 200.0
    elif n == 3:  # CT venous, arbitrary integers
        lab[1:3, 5:7, 5:7] = 2
        lab[5, 2, 6] = 3
        img[lab > 0] = rng.integers(-50, 400, int((lab > 0).sum()))
    else:  # MRI: arbitrary floats, liver only (no spleen, no bladder)
        img[lab > 0] = rng.normal(600.0, 80.0, int((lab > 0).sum()))
    return img, lab


def _make(root: Path) -> Path:
    training = []
    for n in SPACINGS:
        img, lab = _arrays(n)
        geo = {"spacing_zyx": SPACINGS[n], "origin": (n * 1.5, -20.0, 7.0),
               "direction": oblique_direction(12.0 * n % 90, flip_x=n % 2 == 1)}
        write_nifti(root / "imagesTr" / f"amos_{n:04d}.nii.gz", img, **geo)
        write_nifti(root / "labelsTr" / f"amos_{n:04d}.nii.gz", lab, **geo)
        training.append({"image": f"./imagesTr/amos_{n:04d}.nii.gz", "label": f"./labelsTr/amos_{n:04d}.nii.gz"})
    phases = {1: "arterial", 2: "venous", 3: "venous"}
    for entry, n in zip(training, SPACINGS):
        if n in phases:
            entry["phase"] = phases[n]
    (root / "dataset.json").write_text(json.dumps({"name": "toy", "labels": LABELS, "training": training,
                                                   "test": [{"image": "./imagesTs/amos_0009.nii.gz"}]}))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("fp"))


def _expected_samples(n: int, num: int) -> np.ndarray:
    """Independent re-computation: crop to the nonzero box, foreground inside it, RandomState(1234).choice."""
    img, lab = _arrays(n)
    idx = np.argwhere(img != 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pixels = img[box][lab[box] > 0]
    return np.random.RandomState(1234).choice(pixels, num, replace=True)


def _numpy_stats(x: np.ndarray) -> dict[str, float]:
    # nnU-Net passes the percentiles as a float64 array, which makes numpy interpolate float32 data in float64
    low, mid, high = np.percentile(x, np.array([0.5, 50.0, 99.5]))
    return {"n_samples": x.size, "mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(x.min()),
            "max": float(x.max()), "percentile_00_5": float(low), "percentile_50_0": float(mid),
            "percentile_99_5": float(high)}


def _as_dict(stats: object) -> dict[str, float]:
    return {k: getattr(stats, k) for k in _numpy_stats(np.ones(1))}


def test_statistics_equal_numpy_per_modality_phase_and_channel(data_dir: Path) -> None:
    fp = extract_fingerprint(load_dataset(data_dir), workers=0, samples_total=SAMPLES_TOTAL)
    assert fp.samples_per_case == 1000 and fp.seed == 1234
    s = {n: _expected_samples(n, 1000) for n in SPACINGS}
    # hand-computable: constant foreground (the labelled voxel outside the crop, intensity 0, is never drawn)
    assert _as_dict(fp.intensity_per_phase["CT"]["arterial"]) == {
        "n_samples": 1000, "mean": 100.0, "std": 0.0, "min": 100.0, "max": 100.0,
        "percentile_00_5": 100.0, "percentile_50_0": 100.0, "percentile_99_5": 100.0}
    assert _as_dict(fp.intensity_per_phase["CT"]["venous"]) == _numpy_stats(np.concatenate([s[2], s[3]]))
    assert _as_dict(fp.intensity["CT"]) == _numpy_stats(np.concatenate([s[1], s[2], s[3]]))
    assert _as_dict(fp.intensity["MRI"]) == _numpy_stats(s[501])
    assert _as_dict(fp.intensity_per_phase["MRI"]["unknown"]) == _numpy_stats(s[501])
    assert _as_dict(fp.intensity_per_channel[0]) == _numpy_stats(np.concatenate([s[n] for n in SPACINGS]))
    ct = fp.intensity["CT"]
    assert 100.0 < ct.mean < 400.0 and ct.min >= -50.0 and ct.max < 400.0


def test_case_geometry_crop_and_class_counts(data_dir: Path) -> None:
    fp = extract_fingerprint(load_dataset(data_dir), workers=0, samples_total=SAMPLES_TOTAL)
    assert [c.case_id for c in fp.cases] == ["amos_0001", "amos_0002", "amos_0003", "amos_0501"]
    assert [c.modality for c in fp.cases] == ["CT", "CT", "CT", "MRI"]
    assert [c.phase for c in fp.cases] == ["arterial", "venous", "venous", "unknown"]
    for c, n in zip(fp.cases, SPACINGS):
        assert c.shape == list(SHAPE)
        assert c.spacing == pytest.approx(SPACINGS[n])
        assert c.shape_after_crop == [5, 5, 7]  # z 1-5, y 2-6, x 0-6; the interior hole changes nothing
        _, lab = _arrays(n)
        assert c.label_voxels == {k: int((lab == k).sum()) for k in (1, 2, 3) if (lab == k).any()}
    assert fp.cases[0].label_voxels[1] == 27 + 1  # the voxel outside the crop still counts as liver
    assert fp.class_presence == {"CT": {1: 3, 2: 2, 3: 2}, "MRI": {1: 1, 2: 0, 3: 0}}
    labs = {n: _arrays(n)[1] for n in SPACINGS}
    for k in (1, 2, 3):
        assert fp.class_voxels["CT"][k] == sum(int((labs[n] == k).sum()) for n in (1, 2, 3))
    assert fp.class_voxels["MRI"] == {1: 27, 2: 0, 3: 0}
    assert fp.median_relative_size_after_crop == pytest.approx(5 * 5 * 7 / (6 * 7 * 8))
    assert fp.median_relative_size_after_crop_per_modality == {"CT": fp.median_relative_size_after_crop,
                                                               "MRI": fp.median_relative_size_after_crop}
    assert fp.modalities == ["CT", "MRI"] and fp.labels == {0: "background", 1: "liver", 2: "spleen", 3: "bladder"}


def test_fingerprint_round_trips_through_json(data_dir: Path, tmp_path: Path) -> None:
    fp = extract_fingerprint(load_dataset(data_dir), workers=0, samples_total=SAMPLES_TOTAL)
    fp.save(tmp_path / "fingerprint.json")
    assert Fingerprint.load(tmp_path / "fingerprint.json") == fp


def test_serial_and_parallel_give_identical_json(data_dir: Path) -> None:
    ds = load_dataset(data_dir)
    serial = json.dumps(extract_fingerprint(ds, workers=0, samples_total=SAMPLES_TOTAL).to_json())
    parallel = json.dumps(extract_fingerprint(ds, workers=2, samples_total=SAMPLES_TOTAL).to_json())
    assert serial == parallel


def test_cache_is_reused_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = _make(tmp_path / "data")
    cache = tmp_path / "exp" / "fingerprint_cases"
    calls: list[str] = []
    real = extract.analyze_case

    def counting(case, num_samples, seed=extract.SEED):  # type: ignore[no-untyped-def]
        calls.append(case.case_id)
        return real(case, num_samples, seed)

    monkeypatch.setattr(extract, "analyze_case", counting)
    first = extract_fingerprint(load_dataset(root), 0, cache, SAMPLES_TOTAL)
    assert len(calls) == 4 and sorted(p.name for p in cache.iterdir()) == [
        "amos_0001.npz", "amos_0002.npz", "amos_0003.npz", "amos_0501.npz"]
    calls.clear()
    with caplog.at_level(logging.INFO, logger="amos_autoseg.fingerprint.extract"):
        again = extract_fingerprint(load_dataset(root), 0, cache, SAMPLES_TOTAL)
    assert calls == [] and again == first and "4 case(s), 4 from the cache" in caplog.text

    # routing changes (a meta CSV) need no re-read: modality and phase are not cached
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,modality,phase\n501,CT,late\n")
    rerouted = extract_fingerprint(load_dataset(root, meta=meta), 0, cache, SAMPLES_TOTAL)
    assert calls == [] and rerouted.modalities == ["CT"] and "late" in rerouted.intensity_per_phase["CT"]

    # an input file changes: only that case is recomputed, and the result follows the new file
    img, lab = _arrays(2)
    lab[lab == 3] = 2
    write_nifti(root / "labelsTr" / "amos_0002.nii.gz", lab, spacing_zyx=SPACINGS[2])
    changed = extract_fingerprint(load_dataset(root), 0, cache, SAMPLES_TOTAL)
    assert calls == ["amos_0002"]
    assert changed.cases[1].label_voxels == {1: 27, 2: 12}
    assert changed.class_presence["CT"][3] == 1

    # a different sample budget invalidates every case; a corrupt cache file is recomputed
    calls.clear()
    extract_fingerprint(load_dataset(root), 0, cache, SAMPLES_TOTAL * 2)
    assert sorted(calls) == ["amos_0001", "amos_0002", "amos_0003", "amos_0501"]
    calls.clear()
    (cache / "amos_0003.npz").write_bytes(b"PK\x03\x04 cut short")
    (cache / ".tmp-amos_0001.npz.x1y2.npz").write_bytes(b"left by a killed run")
    final = extract_fingerprint(load_dataset(root), 0, cache, SAMPLES_TOTAL * 2)
    assert calls == ["amos_0003"] and final.samples_per_case == 2000
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_nonzero_bbox_equals_filled_mask_bbox_and_handles_empty() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        data = np.where(rng.random((2, 9, 10, 11)) < 0.02, rng.normal(size=(2, 9, 10, 11)), 0.0)
        box = nonzero_bbox(data)
        mask = binary_fill_holes((data != 0).any(0))
        idx = np.argwhere(mask)
        assert box == tuple(slice(a, b) for a, b in zip(idx.min(0), idx.max(0) + 1))
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == (slice(0, 3), slice(0, 4), slice(0, 5))


def test_case_without_foreground_has_no_samples(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_nifti(root / "imagesTr" / "amos_0001.nii.gz", np.ones(SHAPE, np.int16))
    write_nifti(root / "labelsTr" / "amos_0001.nii.gz", np.zeros(SHAPE, np.uint8))
    write_nifti(root / "imagesTr" / "amos_0002.nii.gz", np.full(SHAPE, 7, np.int16))
    write_nifti(root / "labelsTr" / "amos_0002.nii.gz", np.ones(SHAPE, np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": [
        {"image": f"./imagesTr/amos_{n:04d}.nii.gz", "label": f"./labelsTr/amos_{n:04d}.nii.gz"} for n in (1, 2)]}))
    fp = extract_fingerprint(load_dataset(root), workers=0, samples_total=100)
    assert fp.intensity["CT"].n_samples == 50 and fp.intensity["CT"].mean == 7.0
    assert fp.cases[0].label_voxels == {} and fp.class_presence["CT"] == {1: 1}


def test_label_of_another_size_is_an_input_error(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_nifti(root / "imagesTr" / "amos_0001.nii.gz", np.ones(SHAPE, np.int16))
    label = write_nifti(root / "labelsTr" / "amos_0001.nii.gz", np.ones((6, 7, 9), np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"}, "training": [
        {"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}]}))
    with pytest.raises(InputError, match="differs from its image") as info:
        extract_fingerprint(load_dataset(root), workers=0)
    assert info.value.path == str(load_dataset(root).root / "labelsTr" / label.name)


def test_no_labelled_training_case_is_an_input_error(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_nifti(root / "imagesTs" / "amos_0001.nii.gz", np.ones(SHAPE, np.int16))
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver"},
                                                   "test": [{"image": "./imagesTs/amos_0001.nii.gz"}]}))
    with pytest.raises(InputError, match="no labelled training case"):
        extract_fingerprint(load_dataset(root), workers=0)


def test_intensity_stats_by_hand() -> None:
    st = intensity_stats(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    assert (st.n_samples, st.mean, st.min, st.max, st.percentile_50_0) == (4, 2.5, 1.0, 4.0, 2.5)
    assert st.std == pytest.approx(np.sqrt(1.25))  # population std, as nnU-Net
    assert st.percentile_00_5 == pytest.approx(1.015) and st.percentile_99_5 == pytest.approx(3.985)


def test_real_ct_passes_the_check_and_matches_numpy(shared_data: Path, tmp_path: Path) -> None:
    from amos_autoseg.io.check import check_dataset
    from amos_autoseg.io.image import read_image, read_label
    from amos_autoseg.labels import AMOS_LABELS

    root = tmp_path / "real"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTr" / "amos_0001.nii.gz").symlink_to(shared_data / "example_ct.nii.gz")
    (root / "labelsTr" / "amos_0001.nii.gz").symlink_to(shared_data / "example_ct_seg_amos15.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "labels": {str(k): v for k, v in AMOS_LABELS.items()},
        "training": [{"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}]}))
    ds = load_dataset(root)
    assert check_dataset(ds, workers=0) == []
    fp = extract_fingerprint(ds, workers=0, samples_total=20000)
    img, _ = read_image(shared_data / "example_ct.nii.gz")
    lab, _ = read_label(shared_data / "example_ct_seg_amos15.nii.gz")
    box = nonzero_bbox(img[None])
    expected = np.random.RandomState(1234).choice(img[box][lab[box] > 0], 20000, replace=True)
    assert _as_dict(fp.intensity["CT"]) == _numpy_stats(expected)
    assert fp.cases[0].label_voxels == {k: int((lab == k).sum()) for k in range(1, 16) if (lab == k).any()}
    assert fp.cases[0].spacing == [3.0, 3.0, 3.0]


def test_synthetic_amos_folder_checks_clean_and_fingerprints_both_modalities(tiny_dataset: Path) -> None:
    from amos_autoseg.io.check import check_dataset

    ds = load_dataset(tiny_dataset)
    assert check_dataset(ds, workers=0) == []
    fp = extract_fingerprint(ds, workers=0, samples_total=60000)
    assert fp.modalities == ["CT", "MRI"] and len(fp.cases) == len(ds.training) == 6
    assert fp.samples_per_case == 10000
    assert fp.intensity["CT"].n_samples == 4 * 10000 and fp.intensity["MRI"].n_samples == 2 * 10000
    assert sum(fp.class_presence["CT"].values()) > 0 and set(fp.class_presence["MRI"]) == set(ds.foreground_labels)
    for c in fp.cases:
        assert all(0 < a <= b for a, b in zip(c.shape_after_crop, c.shape))
