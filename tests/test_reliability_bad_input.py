"""The bad-input matrix through the real CLI: each row is one broken (or unusual) data folder or input image.

Bad input: exit code 2, exactly one error line on stderr naming the file and the problem, and nothing written to
the experiment or output folder. Valid but unusual input: a correct result.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from amos_autoseg.cli.main import main
from reliability_helpers import few_samples, make_data, tiny_preset, trained  # noqa: F401 - fixtures

CT, MRI = "amos_0002", "amos_0501"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix")
    tiny_preset(root / "tiny.json")
    return make_data(root / "data")


def _img(data: Path, case: str = CT) -> Path:
    return data / "imagesTr" / f"{case}.nii.gz"


def _lab(data: Path, case: str = CT) -> Path:
    return data / "labelsTr" / f"{case}.nii.gz"


def _rewrite(path: Path, change: Callable[[np.ndarray], np.ndarray], **geometry: object) -> None:
    """Replace the voxels of ``path`` by ``change(voxels)`` (and optionally its spacing/origin), keeping the rest."""
    img = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(img)))
    out.SetSpacing(geometry.get("spacing") or img.GetSpacing())
    out.SetOrigin(geometry.get("origin") or img.GetOrigin())
    out.SetDirection(img.GetDirection())
    sitk.WriteImage(out, str(path))


def _spec(data: Path) -> dict:
    return json.loads((data / "dataset.json").read_text())


def _set_spec(data: Path, spec: dict) -> None:
    (data / "dataset.json").write_text(json.dumps(spec))


# ---- the broken folders: each mutates a copy of the tiny dataset; returns (file at fault, phrase) ----------


def unreadable(d: Path):
    _img(d).write_bytes(b"\x00not a nifti" * 50)
    return _img(d), "cannot be read"


def truncated(d: Path):
    raw = _img(d).read_bytes()
    _img(d).write_bytes(raw[: len(raw) // 2])
    return _img(d), "truncated"


def geometry_mismatch(d: Path):
    _rewrite(_lab(d), lambda a: a, spacing=(1.0, 1.0, 1.0))
    return _lab(d), "spacing"


def label_outside_set(d: Path):
    _rewrite(_lab(d), lambda a: np.where(a == 1, 42, a).astype(np.uint8))
    return _lab(d), "label value(s) 42"


def float_label_fraction(d: Path):
    def change(a: np.ndarray) -> np.ndarray:
        f = a.astype(np.float32)
        f[0, 0, 0] = 0.5
        return f
    _rewrite(_lab(d), change)
    return _lab(d), "non-integer"


def nan_intensity(d: Path):
    def change(a: np.ndarray) -> np.ndarray:
        f = a.astype(np.float32)
        f[1, 2, 3] = np.nan
        return f
    _rewrite(_img(d), change)
    return _img(d), "NaN or infinite"


def inf_intensity(d: Path):
    def change(a: np.ndarray) -> np.ndarray:
        f = a.astype(np.float32)
        f[1, 2, 3] = -np.inf
        return f
    _rewrite(_img(d), change)
    return _img(d), "NaN or infinite"


def image_2d(d: Path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(_img(d)))
    return _img(d), "2D"


def image_4d(d: Path):
    vol = sitk.ReadImage(str(_img(d)))
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(_img(d)))
    return _img(d), "4D"


def missing_file(d: Path):
    _img(d).unlink()
    return _img(d), "not found"


def duplicated_case(d: Path):
    spec = _spec(d)
    spec["training"].append(dict(spec["training"][0]))
    _set_spec(d, spec)
    return d / "dataset.json", "more than once"


def not_json(d: Path):
    (d / "dataset.json").write_text('{"labels": {"0": "background",')
    return d / "dataset.json", "not valid JSON"


def zero_spacing(d: Path):
    # SimpleITK will not write a zero spacing; patch the NIfTI header's pixdim[1] (x spacing) to 0.
    import gzip

    raw = bytearray(gzip.decompress(_img(d).read_bytes()))
    raw[80:84] = np.float32(0.0).tobytes()
    _img(d).write_bytes(gzip.compress(bytes(raw)))
    return _img(d), "spacing"


def negative_spacing(d: Path):
    import gzip

    raw = bytearray(gzip.decompress(_img(d).read_bytes()))
    raw[84:88] = np.float32(-2.0).tobytes()
    _img(d).write_bytes(gzip.compress(bytes(raw)))
    return _img(d), "spacing"


def path_traversal(d: Path):
    spec = _spec(d)
    spec["training"][0]["image"] = "../../etc/passwd"
    _set_spec(d, spec)
    return d / "dataset.json", "outside the data folder"


def meta_unknown_modality(d: Path):
    (d / "meta.csv").write_text("case_id,modality\namos_0001,PET\n")
    return d / "meta.csv", "unknown modality 'PET'"


BAD = [unreadable, truncated, geometry_mismatch, label_outside_set, float_label_fraction, nan_intensity,
       inf_intensity, image_2d, image_4d, missing_file, duplicated_case, not_json, zero_spacing, negative_spacing,
       path_traversal, meta_unknown_modality]


@pytest.mark.parametrize("breaker", BAD, ids=[f.__name__ for f in BAD])
def test_bad_data_folder_exit_2_one_line_naming_the_file(breaker, base, tmp_path, capsys, few_samples):
    data = tmp_path / "data"
    shutil.copytree(base, data)
    at_fault, phrase = breaker(data)
    exp = tmp_path / "exp"
    argv = ["plan", str(data), "--exp", str(exp), "--workers", "0", "--preset", str(base.parent / "tiny.json")]
    if (data / "meta.csv").is_file():
        argv += ["--meta", str(data / "meta.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, err
    assert str(at_fault.resolve()) in errors[0] or str(at_fault) in errors[0], errors[0]
    assert phrase in errors[0], errors[0]
    assert "Traceback" not in err
    assert not exp.exists() or not any(exp.rglob("*")), sorted(exp.rglob("*"))


# ---- valid but unusual data folders: the plan and preprocessing succeed with a correct result -----------


def _plan_and_preprocess(data: Path, exp: Path, preset: Path, *extra: str) -> dict:
    assert main(["plan", str(data), "--exp", str(exp), "--workers", "0", "--preset", str(preset), *extra]) == 0
    assert main(["preprocess", str(exp), "--workers", "0"]) == 0
    return json.loads((exp / "plans.json").read_text())


def test_empty_label_is_valid(base, tmp_path, few_samples):
    data = tmp_path / "data"
    shutil.copytree(base, data)
    _rewrite(_lab(data), lambda a: np.zeros_like(a))
    _plan_and_preprocess(data, tmp_path / "exp", base.parent / "tiny.json")
    seg = np.load(tmp_path / "exp" / "preprocessed" / "3d_fullres" / f"{CT}_seg.npy")
    assert seg.max() <= 0  # no foreground (only background, and -1 outside the crop)


def test_ct_id_declared_mri_by_meta_is_routed_as_mri(base, tmp_path, few_samples):
    data = tmp_path / "data"
    shutil.copytree(base, data)
    meta = tmp_path / "meta.csv"
    meta.write_text(f"case_id,modality\n{CT},MRI\n{MRI},MRI\n")
    _plan_and_preprocess(data, tmp_path / "exp", base.parent / "tiny.json", "--meta", str(meta))
    ref = json.loads((tmp_path / "exp" / "dataset_ref.json").read_text())
    assert ref["modalities"][CT] == "MRI" and ref["modalities"]["amos_0001"] == "CT"
    props = json.loads((tmp_path / "exp" / "preprocessed" / "3d_fullres" / f"{CT}.json").read_text())
    assert props.get("modality", "MRI") == "MRI"


def _reshape_case(data: Path, case: str, make: Callable[[np.ndarray], np.ndarray], spacing: tuple) -> None:
    for path in (_img(data, case), _lab(data, case)):
        _rewrite(path, make, spacing=spacing)


def test_huge_anisotropy_and_single_slice_volume_are_valid(base, tmp_path, few_samples, capsys):
    data = tmp_path / "data"
    shutil.copytree(base, data)
    # one case at 0.5 x 0.5 x 10 mm, one a single slice
    _reshape_case(data, CT, lambda a: a, spacing=(0.5, 0.5, 10.0))
    _reshape_case(data, "amos_0003", lambda a: a[a.shape[0] // 2: a.shape[0] // 2 + 1].copy(), spacing=None)
    img = sitk.ReadImage(str(_img(data, "amos_0003")))
    assert img.GetSize()[2] == 1
    plans = _plan_and_preprocess(data, tmp_path / "exp", base.parent / "tiny.json")
    err = capsys.readouterr().err  # the CLI's log goes to stderr: warned, not refused
    assert "20.0x anisotropic" in err and "single-slice" in err and ": error: " not in err
    folder = tmp_path / "exp" / "preprocessed" / "3d_fullres"
    for case in (CT, "amos_0003"):
        image, seg = np.load(folder / f"{case}.npy"), np.load(folder / f"{case}_seg.npy")
        assert image.shape[1:] == seg.shape[1:] and min(image.shape) >= 1 and np.isfinite(image).all()
    assert all(s > 0 for s in plans["configurations"]["3d_fullres"]["spacing"])


# ---- predict: bad input images and valid images smaller than the patch ---------------------------------


def _predict(trained, inputs: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(trained["exp"]), "--input", str(inputs), "--output", str(out), "--device", "cpu",
                 "--no-tta", *extra])


@pytest.mark.parametrize("breaker", [truncated, nan_intensity, image_4d], ids=["truncated", "nan", "4d"])
def test_predict_refuses_a_bad_image_naming_it(breaker, trained, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    shutil.copy(trained["inputs"] / "amos_0001.nii.gz", _img(data))
    at_fault, phrase = breaker(data)
    out = tmp_path / "out"
    assert _predict(trained, at_fault, out) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and str(at_fault.name) in errors[0] and phrase in errors[0], err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("shape,spacing", [((1, 40, 40), (0.8, 0.8, 3.0)), ((3, 5, 6), (2.0, 2.0, 5.0)),
                                           ((12, 30, 30), (0.5, 0.5, 10.0))],
                         ids=["single_slice", "smaller_than_patch", "anisotropic"])
def test_predict_unusual_valid_images_on_their_own_grid(shape, spacing, trained, tmp_path):
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(40, 20, shape).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 30.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(img, str(inputs / "amos_0007.nii.gz"))
    out = tmp_path / "out"
    assert _predict(trained, inputs, out) == 0
    pred = sitk.ReadImage(str(out / "amos_0007.nii.gz"))
    assert pred.GetSize() == img.GetSize()
    assert np.allclose(pred.GetSpacing(), spacing) and np.allclose(pred.GetOrigin(), img.GetOrigin())
    assert np.allclose(pred.GetDirection(), img.GetDirection())
    labels = sitk.GetArrayFromImage(pred)
    assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() <= 15
