"""`amos-autoseg predict` left running on a folder: every input checked before the first case, --keep-going,
no output folder left by a failed run, and modality from the image, the model or (when asked) the intensities."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.io.image import read_header, read_label
from tests.conftest import write_nifti
from tests.inference_fakes import CT_NORM, save_checkpoint, tiny_plans
from tests.test_inference_inputs import write_dicom_series
from tests.test_inference_predict import phantom


def predict(*args) -> int:
    return main(["predict", *[str(a) for a in args]])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("amos-autoseg predict: error: ")]


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Path:
    """An experiment trained (random weights) on CT and MRI."""
    exp = tmp_path_factory.mktemp("both")
    save_checkpoint(exp, tiny_plans(), 0)
    return exp


@pytest.fixture(scope="module")
def ct_only(tmp_path_factory) -> Path:
    """An experiment whose plan has CT only."""
    exp = tmp_path_factory.mktemp("ct_only")
    save_checkpoint(exp, dataclasses.replace(tiny_plans(), modalities=["CT"], normalization={"CT": CT_NORM}), 0)
    return exp


@pytest.fixture
def folder(tmp_path) -> Path:
    """amos_0001..0003 (CT by id) and patient_z (name tells nothing); amos_0002 is garbage bytes."""
    image, _ = phantom(shape=(6, 20, 18))
    out = tmp_path / "in"
    for name in ("amos_0001", "amos_0003", "patient_z"):
        write_nifti(out / f"{name}.nii.gz", image, (2.5, 1.2, 1.2))
    (out / "amos_0002.nii.gz").write_bytes(b"\x00 not an image " * 40)
    return out


def test_every_bad_input_is_reported_before_the_first_case_and_no_output_folder_is_left(both, folder, tmp_path,
                                                                                        capsys):
    out = tmp_path / "out"
    assert predict(both, "--input", folder, "--output", out, "--no-tta") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 2  # both problems at once, one line each, naming the file
    assert any(f"{folder / 'amos_0002.nii.gz'}: cannot be read" in line for line in lines)
    assert any(f"{folder / 'patient_z.nii.gz'}: cannot tell its modality" in line for line in lines)
    assert not out.exists()  # nothing predicted, no folder made


def test_keep_going_predicts_the_good_cases_and_lists_the_bad_ones(both, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(both, "--input", folder, "--output", out, "--no-tta", "--keep-going") == 2
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["amos_0001.nii.gz", "amos_0003.nii.gz"]
    assert [line.split(": error: ")[1].split(":")[0] for line in error_lines(err)] == [
        str(folder / "amos_0002.nii.gz"), str(folder / "patient_z.nii.gz")]
    assert "2 case(s) predicted, 2 not" in err
    # the good cases are done: the same command with the bad files fixed predicts only what is left
    (folder / "amos_0002.nii.gz").unlink()
    assert predict(both, "--input", folder, "--output", out, "--no-tta", "--modality", "CT") == 0
    assert "2 case(s) already predicted" in capsys.readouterr().err
    assert (out / "patient_z.nii.gz").is_file()


def test_a_failed_run_removes_the_output_folder_it_created(both, folder, tmp_path, capsys):
    good = folder / "amos_0001.nii.gz"
    out = tmp_path / "out"
    assert predict(both, "--input", good, "--output", out, "--folds", "3") == 2  # fold 3 is not trained
    assert "fold 3" in capsys.readouterr().err and not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert predict(both, "--input", good, "--output", existing, "--folds", "3") == 2
    assert existing.is_dir()  # a folder the user made is never removed


def test_a_ct_only_model_needs_no_modality_flag(ct_only, folder, tmp_path, capsys):
    image, _ = phantom(shape=(6, 20, 18))
    write_nifti(tmp_path / "single" / "patient1.nii.gz", image, (2.5, 1.2, 1.2))
    out = tmp_path / "out"
    assert predict(ct_only, "--input", tmp_path / "single" / "patient1.nii.gz", "--output", out, "--no-tta") == 0
    series = write_dicom_series(tmp_path / "series" / "patient_x", image, (3.0, 0.9, 0.9))
    assert predict(ct_only, "--input", series, "--output", out, "--no-tta") == 0
    for case, source in (("patient1", tmp_path / "single" / "patient1.nii.gz"), ("patient_x", series)):
        labels, geometry = read_label(out / f"{case}.nii.gz")
        assert labels.shape == read_header(source).shape
    # an MR series is refused by a CT-only model, saying why
    mr = write_dicom_series(tmp_path / "series" / "patient_mr", image, modality="MR")
    capsys.readouterr()
    assert predict(ct_only, "--input", mr, "--output", out, "--no-tta") == 2
    assert "is MRI (from its DICOM Modality tag (MR)), but the model was trained on CT only" in capsys.readouterr().err


def test_guess_modality_only_when_asked_and_logged_with_its_reason(both, folder, tmp_path, capsys):
    case = folder / "patient_z.nii.gz"  # a phantom with air at -1000 around the body
    out = tmp_path / "out"
    assert predict(both, "--input", case, "--output", out, "--no-tta") == 2
    assert predict(both, "--input", case, "--output", out, "--no-tta", "--guess-modality") == 0
    err = capsys.readouterr().err
    assert "patient_z.nii.gz: modality guessed CT:" in err and "air, -1000 HU in a CT" in err
    assert np.array_equal(read_label(out / "patient_z.nii.gz")[0].shape, read_header(case).shape)
