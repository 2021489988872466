"""`amos-autoseg predict` end to end with a tiny random-weight U-Net: files, geometry, npz, skip, shards, DICOM."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.inference.postprocess import PostprocessingRules, save_rules
from amos_autoseg.io.image import read_header, read_label
from tests.conftest import oblique_direction, write_nifti
from tests.inference_fakes import save_checkpoint, tiny_plans
from tests.test_inference_inputs import write_dicom_series
from tests.test_inference_predict import phantom


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("exp")
    plans = tiny_plans()
    for fold in (0, 1):
        save_checkpoint(exp, plans, fold, seed=fold)
    return exp


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    image, _ = phantom(shape=(10, 30, 26))
    write_nifti(folder / "amos_0004.nii.gz", image, (2.5, 1.1, 1.3), (3.0, -7.0, 11.0), oblique_direction(30.0))
    write_nifti(folder / "amos_0555.nii.gz", image + 1000, (1.5, 1.5, 1.5), (0.0, 0.0, 0.0),
                oblique_direction(-10.0, flip_x=True))
    write_nifti(folder / "amos_0010.nii.gz", image[:4, :9, :7], (4.0, 0.7, 0.7))  # smaller than the patch
    return folder


def predict(*args: str) -> int:
    return main(["predict", *[str(a) for a in args]])


def test_predict_writes_labels_on_the_input_grid_and_probabilities(experiment, images, tmp_path):
    out = tmp_path / "out"
    assert predict(experiment, "--input", images, "--output", out, "--save-probabilities", "--device", "cpu") == 0
    for case in ("amos_0004", "amos_0010", "amos_0555"):
        labels, geometry = read_label(out / f"{case}.nii.gz")
        assert geometry == read_header(images / f"{case}.nii.gz")
        assert labels.dtype == np.uint8 and labels.max() <= 3
        with np.load(out / f"{case}.npz") as npz:
            assert list(npz.keys()) == ["probabilities"]
            probs = npz["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (4, *labels.shape)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c}{e}" for c in ("amos_0004", "amos_0010", "amos_0555") for e in (".nii.gz", ".npz"))


def test_finished_cases_are_skipped_and_the_model_is_not_loaded(experiment, images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert predict(experiment, "--input", images / "amos_0010.nii.gz", "--output", out, "--no-tta") == 0
    first = (out / "amos_0010.nii.gz").stat().st_mtime_ns
    from amos_autoseg.inference import predictor

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not be loaded when every case is done")

    monkeypatch.setattr(predictor.Predictor, "from_experiment", refuse)
    capsys.readouterr()
    assert predict(experiment, "--input", images / "amos_0010.nii.gz", "--output", out, "--no-tta") == 0
    assert (out / "amos_0010.nii.gz").stat().st_mtime_ns == first
    assert "1 case(s) already predicted" in capsys.readouterr().err


def test_shards_split_the_inputs(experiment, images, tmp_path):
    out = tmp_path / "out"
    assert predict(experiment, "--input", images, "--output", out, "--shard", "1/2", "--no-tta", "--folds", "0") == 0
    assert sorted(p.name for p in out.iterdir()) == ["amos_0010.nii.gz"]  # sorted ids: 0004, 0010, 0555
    os.environ["SLURM_ARRAY_TASK_ID"], os.environ["SLURM_ARRAY_TASK_COUNT"] = "0", "2"
    try:
        assert predict(experiment, "--input", images, "--output", out, "--no-tta", "--folds", "0") == 0
    finally:
        del os.environ["SLURM_ARRAY_TASK_ID"], os.environ["SLURM_ARRAY_TASK_COUNT"]
    assert len(list(out.iterdir())) == 3


def test_dicom_series_is_routed_by_its_modality_tag(experiment, tmp_path, capsys):
    image, _ = phantom(shape=(6, 20, 18))
    series = write_dicom_series(tmp_path / "patient_x", image, (3.0, 0.9, 0.9))  # Modality (0008,0060) CT
    out = tmp_path / "out"
    assert predict(experiment, "--input", series, "--output", out, "--no-tta", "--modality", "MRI") == 2
    err = capsys.readouterr().err
    assert f"{series}: --modality MRI contradicts what its DICOM Modality tag (CT) says CT" in err
    assert not out.exists()
    assert predict(experiment, "--input", series, "--output", out, "--no-tta") == 0  # no flag needed
    labels, geometry = read_label(out / "patient_x.nii.gz")
    # NIfTI stores spacing in float32: 0.9 mm comes back as 0.8999999762, the format's precision
    assert read_header(series).mismatch(geometry, rtol=1e-6, atol_mm=1e-5) is None and labels.shape == image.shape


def test_postprocessing_rules_of_the_experiment_are_applied(experiment, images, tmp_path):
    exp = tmp_path / "exp"
    plans = tiny_plans()
    save_checkpoint(exp, plans, 0)
    for fold_file in (experiment / "3d_fullres").glob("fold_*/checkpoint_final.pt"):
        target = exp / "3d_fullres" / fold_file.parent.name / fold_file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fold_file.read_bytes())
    args = ["--input", images / "amos_0004.nii.gz", "--no-tta"]
    assert predict(exp, *args, "--output", tmp_path / "raw") == 0
    rules = PostprocessingRules(min_volume_mm3={1: 1e12, 2: 1e12, 3: 1e12})
    save_rules(rules, exp / "3d_fullres" / "postprocessing.json")
    assert predict(exp, *args, "--output", tmp_path / "pp") == 0
    assert predict(exp, *args, "--output", tmp_path / "off", "--no-postprocessing") == 0
    raw, pp, off = (read_label(tmp_path / d / "amos_0004.nii.gz")[0] for d in ("raw", "pp", "off"))
    assert (raw > 0).any() and (pp == 0).all()  # every component is below 1e12 mm^3
    np.testing.assert_array_equal(off, raw)


def test_usage_errors(experiment, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict("--model", tmp_path / "m.zip", "--input", images, "--output", out) == 2
    assert "m.zip" in capsys.readouterr().err  # a missing model file is an input error naming it
    assert predict(experiment, "--model", tmp_path / "m.zip", "--input", images, "--output", out) == 2
    assert "either" in capsys.readouterr().err
    assert predict(experiment, "--input", images, "--output", out, "--folds", "7") == 2
    assert "fold_7" in capsys.readouterr().err
    assert predict(experiment, "--input", tmp_path / "missing", "--output", out) == 2
    assert "input not found" in capsys.readouterr().err
    assert predict(experiment, "--input", images, "--output", out, "--device", "tpu9") == 2
    assert predict(tmp_path / "no_exp", "--input", images, "--output", out) == 2
    assert not any(out.glob("*.nii.gz"))


def test_real_dicom_series_through_the_cli(shared_data, tmp_path):
    exp = tmp_path / "exp"
    save_checkpoint(exp, tiny_plans(spacing=(4.0, 4.0, 4.0), patch=(8, 32, 32)), 0)
    series = shared_data / "example_ct_dicom"
    assert predict(exp, "--input", series, "--output", tmp_path / "out", "--no-tta", "--modality", "CT") == 0
    labels, geometry = read_label(tmp_path / "out" / "example_ct_dicom.nii.gz")
    assert read_header(series).mismatch(geometry, rtol=1e-6, atol_mm=1e-4) is None
    assert labels.shape == (20, 512, 512)
