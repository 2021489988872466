"""The dataset check: every bad-input class reported at once, each naming its file; valid oddities only warned."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_direction, write_nifti

from amos_autoseg.errors import InputErrors
from amos_autoseg.io.check import check_dataset, label_values, require_valid
from amos_autoseg.io.dataset import load_dataset

SHAPE = (6, 8, 9)
SPACING = (4.0, 0.7, 0.7)  # anisotropic, below the 10x warning
ORIGIN = (-50.0, 20.0, 300.0)
DIRECTION = oblique_direction(30.0, flip_x=True)
LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}


def _image(value: float = 40.0, dtype: type = np.int16) -> np.ndarray:
    arr = np.full(SHAPE, value, dtype)
    arr[0] = 0
    return arr


def _label(dtype: type = np.uint8) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype)
    lab[2:4, 2:5, 3:6] = 1
    lab[4, 5:7, 1:3] = 3
    return lab


def _write(path: Path, arr: np.ndarray, **geo: object) -> Path:
    kw = {"spacing_zyx": SPACING, "origin": ORIGIN, "direction": DIRECTION}
    kw.update(geo)
    return write_nifti(path, arr, **kw)  # type: ignore[arg-type]


def _case(root: Path, n: int, image: bool = True, label: bool = True) -> dict[str, str]:
    entry = {"image": f"./imagesTr/amos_{n:04d}.nii.gz", "label": f"./labelsTr/amos_{n:04d}.nii.gz"}
    if image:
        _write(root / entry["image"], _image())
    if label:
        _write(root / entry["label"], _label())
    return entry


def _dataset_json(root: Path, training: list[dict], test: list[dict] = ()) -> None:
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS, "training": training, "test": list(test)}))


def _broken_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """One folder with every bad-input class; returns it and file name -> expected phrase of its problem."""
    tr = [_case(root, 1), _case(root, 501)]  # valid CT and MRI
    expected: dict[str, str] = {}

    tr.append(_case(root, 2, image=False))
    expected["amos_0002.nii.gz@imagesTr"] = "file not found"
    tr.append(_case(root, 3, label=False))
    expected["amos_0003.nii.gz@labelsTr"] = "file not found"

    e = _case(root, 4, image=False)
    full = _write(root / "tmp_full.nii.gz", np.random.default_rng(0).normal(size=(30, 40, 50)).astype(np.float32))
    data = full.read_bytes()
    (root / e["image"]).write_bytes(data[: len(data) // 2])
    full.unlink()
    tr.append(e)
    expected["amos_0004.nii.gz@imagesTr"] = "truncated"

    e = _case(root, 5, image=False)
    (root / e["image"]).write_bytes(b"\x00garbage" * 40)
    tr.append(e)
    expected["amos_0005.nii.gz@imagesTr"] = "cannot be read"

    e = _case(root, 6, image=False)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(root / e["image"]))
    tr.append(e)
    expected["amos_0006.nii.gz@imagesTr"] = "is 2D"

    e = _case(root, 7, image=False)
    vols = sitk.JoinSeries([sitk.GetImageFromArray(_image()) for _ in range(3)])
    sitk.WriteImage(vols, str(root / e["image"]))
    tr.append(e)
    expected["amos_0007.nii.gz@imagesTr"] = "is 4D"

    e = {"image": "./imagesTr/amos_0008.mha", "label": "./labelsTr/amos_0008.nii.gz"}
    src = root / "tmp.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_image()), str(src), useCompression=False)
    (root / e["image"]).write_bytes(src.read_bytes().replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 0 1"))
    src.unlink()
    _write(root / e["label"], _label())
    tr.append(e)
    expected["amos_0008.mha@imagesTr"] = "invalid spacing"

    for n, geo, phrase in [
        (9, {"spacing_zyx": (5.0, 0.7, 0.7)}, "spacing"),
        (10, {"origin": (-50.0, 21.0, 300.0)}, "origin"),
        (11, {"direction": oblique_direction(30.0)}, "direction"),
    ]:
        e = _case(root, n, label=False)
        _write(root / e["label"], _label(), **geo)
        tr.append(e)
        expected[f"amos_{n:04d}.nii.gz@labelsTr"] = phrase
    e = _case(root, 12, label=False)
    _write(root / e["label"], np.zeros((6, 8, 10), np.uint8))
    tr.append(e)
    expected["amos_0012.nii.gz@labelsTr"] = "size"

    e = _case(root, 13, label=False)
    lab = _label(np.uint16)
    lab[1, 1, 1] = 7
    lab[1, 1, 2] = 300
    _write(root / e["label"], lab)
    tr.append(e)
    expected["amos_0013.nii.gz@labelsTr"] = "label value(s) 7, 300"

    e = _case(root, 14, label=False)
    lab = _label(np.float64)
    lab[2, 2, 3] = 1.5
    _write(root / e["label"], lab)
    tr.append(e)
    expected["amos_0014.nii.gz@labelsTr"] = "non-integer"

    for n, value in ((15, np.nan), (16, np.inf)):
        e = _case(root, n, image=False)
        img = _image(dtype=np.float32)
        img[3, 3, 3] = value
        _write(root / e["image"], img)
        tr.append(e)
        expected[f"amos_{n:04d}.nii.gz@imagesTr"] = "1 NaN or infinite intensities"

    e = _case(root, 17, label=False)
    lab = _label(np.float32)
    lab[3, 3, 3] = np.nan
    _write(root / e["label"], lab)
    tr.append(e)
    expected["amos_0017.nii.gz@labelsTr"] = "NaN or infinite label values"

    e = _case(root, 18)
    del e["label"]
    tr.append(e)
    expected["dataset.json"] = "training case 'amos_0018' has no label"

    test = [{"image": "./imagesTs/amos_0100.nii.gz"}, {"image": "./imagesTs/amos_0101.nii.gz"}]
    _write(root / "imagesTs" / "amos_0100.nii.gz", _image())
    img = _image(dtype=np.float32)
    img[1, 1, 1] = -np.inf
    _write(root / "imagesTs" / "amos_0101.nii.gz", img)
    expected["amos_0101.nii.gz@imagesTs"] = "NaN or infinite"
    _dataset_json(root, tr, test)
    return root, expected


def _match(problems: list, root: Path, expected: dict[str, str]) -> None:
    by_file = {}
    for p in problems:
        rel = Path(p.path).relative_to(root)
        key = rel.name if rel.parent == Path(".") else f"{rel.name}@{rel.parts[0]}"
        assert key not in by_file, f"two problems for {key}: {by_file.get(key)} / {p.problem}"
        by_file[key] = p.problem
    assert set(by_file) == set(expected), (sorted(by_file), sorted(expected))
    for key, phrase in expected.items():
        assert phrase in by_file[key], f"{key}: {by_file[key]!r} lacks {phrase!r}"


def test_every_bad_input_class_is_reported_at_once_naming_its_file(tmp_path: Path) -> None:
    root, expected = _broken_folder(tmp_path / "data")
    ds = load_dataset(root)
    problems = check_dataset(ds, workers=0)
    _match(problems, ds.root, expected)
    with pytest.raises(InputErrors) as info:
        require_valid(ds, workers=0)
    assert len(info.value.problems) == len(expected)
    lines = str(info.value).splitlines()
    assert len(lines) == len(expected) and all(line.startswith(str(ds.root)) for line in lines)
    assert info.value.exit_code == 2


def test_parallel_check_reports_the_same_problems(tmp_path: Path) -> None:
    root, expected = _broken_folder(tmp_path / "data")
    ds = load_dataset(root)
    serial = [str(p) for p in check_dataset(ds, workers=0)]
    parallel = [str(p) for p in check_dataset(ds, workers=2)]
    assert parallel == serial and len(serial) == len(expected)


def test_valid_folder_with_oblique_flipped_anisotropic_grids_passes(tmp_path: Path, caplog) -> None:
    root = tmp_path / "ok"
    tr = [_case(root, n) for n in (1, 2, 600)]
    # grids equal within tolerance: float noise on spacing and origin
    e = _case(root, 3, label=False)
    _write(root / e["label"], _label(np.float64), spacing_zyx=(4.0 * (1 + 1e-7), 0.7, 0.7),
           origin=(ORIGIN[0] + 2e-5, ORIGIN[1], ORIGIN[2]))
    tr.append(e)
    _write(root / "imagesTs" / "amos_0700.nii.gz", _image())
    _dataset_json(root, tr, [{"image": "./imagesTs/amos_0700.nii.gz"}])
    ds = load_dataset(root)
    with caplog.at_level(logging.WARNING):
        assert check_dataset(ds, workers=0) == []
        require_valid(ds, workers=0)
    assert "anisotropic" not in caplog.text and "single-slice" not in caplog.text


def test_unusual_but_valid_input_is_warned_not_refused(tmp_path: Path, caplog) -> None:
    root = tmp_path / "odd"
    thin = {"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}
    _write(root / thin["image"], np.ones((1, 8, 9), np.int16))
    _write(root / thin["label"], np.ones((1, 8, 9), np.uint8))
    flat = {"image": "./imagesTr/amos_0002.nii.gz", "label": "./labelsTr/amos_0002.nii.gz"}
    _write(root / flat["image"], _image(), spacing_zyx=(8.0, 0.5, 0.5))
    _write(root / flat["label"], np.zeros(SHAPE, np.uint8), spacing_zyx=(8.0, 0.5, 0.5))
    _dataset_json(root, [thin, flat])
    with caplog.at_level(logging.WARNING):
        assert check_dataset(load_dataset(root), workers=0) == []
    assert "amos_0001.nii.gz: is a single-slice volume" in caplog.text
    assert "16.0x anisotropic" in caplog.text and "amos_0002.nii.gz" in caplog.text
    assert "label holds no foreground" in caplog.text


def test_multichannel_grids_must_agree(tmp_path: Path) -> None:
    root = tmp_path / "mc"
    for cid, shift in (("a", 0.0), ("b", 3.0)):
        _write(root / "imagesTr" / f"{cid}_0000.nii.gz", _image())
        _write(root / "imagesTr" / f"{cid}_0001.nii.gz", _image(), origin=(ORIGIN[0] + shift, *ORIGIN[1:]))
        _write(root / "labelsTr" / f"{cid}.nii.gz", _label())
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI", "1": "MRI"}, "labels": {"background": 0, "liver": 1, "kidney": 3},
        "file_ending": ".nii.gz"}))
    ds = load_dataset(root)
    (problem,) = check_dataset(ds, workers=0)
    assert problem.path == str(ds.root / "imagesTr" / "b_0001.nii.gz")
    assert "not on the grid of channel 0 (b_0000.nii.gz)" in problem.problem and "origin" in problem.problem


def test_label_values_counts_and_large_ids() -> None:
    assert label_values(np.array([[[0, 3, 3, 15]]], np.uint8)) == [0, 3, 15]
    assert label_values(np.array([[[70000, 2]]], np.int32)) == [2, 70000]
    assert label_values(np.zeros((0, 2, 2), np.uint8)) == []
