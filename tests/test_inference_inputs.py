"""Input discovery (files, folders, DICOM series), modality routing, shards and skip-if-done."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.errors import InputError, InputErrors
from amos_autoseg.inference import inputs
from amos_autoseg.utils.shard import Shard
from tests.conftest import oblique_direction, write_nifti


def write_dicom_series(folder: Path, array: np.ndarray, spacing_zyx=(2.0, 0.8, 0.8),
                       origin=(-20.0, 10.0, 5.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), modality: str = "CT") -> Path:
    """Write ``array`` (z, y, x) int16 as a DICOM series (Modality tag ``modality``), one file per slice."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array.astype(np.int16))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    img.SetOrigin(origin)
    img.SetDirection(tuple(float(d) for d in direction))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.12345"
    d = img.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for z in range(img.GetDepth()):
        sl = img[:, :, z]
        for tag, value in [("0008|0060", modality), ("0020|000e", series_uid), ("0020|000d", series_uid + ".0"),
                           ("0020|0037", orientation), ("0020|0013", str(z + 1)),
                           ("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, z)))),
                           ("0008|0018", f"{series_uid}.{z + 1}"), ("0028|1053", "1"), ("0028|1052", "0")]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(sl)
    return folder


def test_single_file_and_folder_are_sorted(tmp_path):
    for name in ["amos_0600.nii.gz", "amos_0002.nii.gz", "other.mha"]:
        write_nifti(tmp_path / "in" / name, np.zeros((2, 3, 4), np.float32))
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    (tmp_path / "in" / ".tmp-amos_0003.nii.gz.x.nii.gz").write_text("half-written")
    found = inputs.discover(tmp_path / "in")
    assert [cid for cid, _ in found] == ["amos_0002", "amos_0600", "other"]
    assert inputs.discover(tmp_path / "in" / "other.mha") == [("other", tmp_path / "in" / "other.mha")]
    with pytest.raises(InputError, match="not an image"):
        inputs.discover(tmp_path / "in" / "notes.txt")
    with pytest.raises(InputError, match="not found"):
        inputs.discover(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        inputs.discover(tmp_path / "empty")


def test_nnunet_channel_suffix_is_dropped_but_not_from_amos_ids(tmp_path):
    for name in ["liver_7_0000.nii.gz", "liver_9_0000.nii.gz"]:
        write_nifti(tmp_path / "nn" / name, np.zeros((2, 2, 2), np.float32))
    assert [cid for cid, _ in inputs.discover(tmp_path / "nn")] == ["liver_7", "liver_9"]
    write_nifti(tmp_path / "amos" / "amos_0000.nii.gz", np.zeros((2, 2, 2), np.float32))
    assert [cid for cid, _ in inputs.discover(tmp_path / "amos")] == ["amos_0000"]
    write_nifti(tmp_path / "dup" / "a.nii.gz", np.zeros((2, 2, 2), np.float32))
    write_nifti(tmp_path / "dup" / "a.mha", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError, match="same case id|case id"):
        inputs.discover(tmp_path / "dup")


def test_dicom_series_folder_and_folder_of_series(tmp_path):
    arr = (np.arange(4 * 6 * 5).reshape(4, 6, 5) % 50).astype(np.int16)
    write_dicom_series(tmp_path / "series" / "patient_a", arr, direction=oblique_direction(0.0))
    write_dicom_series(tmp_path / "series" / "patient_b", arr)
    assert inputs.discover(tmp_path / "series" / "patient_a") == [("patient_a", tmp_path / "series" / "patient_a")]
    assert [cid for cid, _ in inputs.discover(tmp_path / "series")] == ["patient_a", "patient_b"]
    from amos_autoseg.io.image import read_image

    image, geom = read_image(tmp_path / "series" / "patient_a")
    np.testing.assert_array_equal(image, arr)
    assert geom.spacing == pytest.approx((2.0, 0.8, 0.8))


def test_modality_routing(tmp_path):
    found = [("amos_0001", Path("a")), ("amos_0507", Path("b")), ("scan", Path("c"))]
    with pytest.raises(InputErrors, match="--modality") as unknown:
        inputs.route(found)
    assert [p.path for p in unknown.value.problems] == ["c"]  # one problem, naming the case that lacks it
    cases = inputs.route(found[2:], modality="MRI")
    assert [(c.modality, c.source) for c in cases] == [("MRI", "--modality")]
    # an explicit flag is never silently overridden: against an AMOS id it is a problem of that case
    cases, problems = inputs.route_cases(found, modality="MRI")
    assert [c.modality for c in cases] == ["MRI", "MRI"] and [p.path for p in problems] == ["a"]
    assert "--modality MRI contradicts what its AMOS id says CT" in str(problems[0])
    # the --meta row settles any case, the id rule the others
    cases = inputs.route(found, modality="CT", meta={"scan": ("MRI", "T2"), "1": ("MRI", None), "507": ("CT", None)})
    assert [(c.modality, c.phase) for c in cases] == [("MRI", "unknown"), ("CT", "unknown"), ("MRI", "T2")]
    # a one-modality model needs no flag; a case it was not trained on is refused; guessing only when asked
    cases, problems = inputs.route_cases(found, model_modalities=["CT"])
    assert [(c.case_id, c.modality) for c in cases] == [("amos_0001", "CT"), ("scan", "CT")]
    assert "the model was trained on CT only" in str(problems[0]) and problems[0].path == "b"
    cases = inputs.route(found, guess=True)
    assert [c.modality for c in cases] == ["CT", "MRI", None] and "intensities" in cases[2].source


def test_dicom_modality_tag_routes_a_series(tmp_path):
    from amos_autoseg.io.modality import dicom_modality

    arr = (np.arange(3 * 6 * 5).reshape(3, 6, 5) % 50).astype(np.int16)
    series = write_dicom_series(tmp_path / "patient_a", arr)
    assert dicom_modality(series) == ("CT", "CT")
    assert dicom_modality(tmp_path / "nowhere") == (None, None)
    [case] = inputs.route([("patient_a", series)])
    assert (case.modality, case.source) == ("CT", "its DICOM Modality tag (CT)")
    with pytest.raises(InputErrors, match="contradicts what its DICOM Modality tag"):
        inputs.route([("patient_a", series)], modality="MRI")
    [case] = inputs.route([("patient_a", series)], modality="MRI", meta={"patient_a": ("MRI", None)})
    assert case.modality == "MRI"  # the --meta row is the user's word on this very case


def test_intensity_guess_says_why():
    from amos_autoseg.io.modality import guess_from_intensities

    ct = np.concatenate([np.full(100, -1000.0), np.random.default_rng(0).normal(40, 30, 900)])
    assert guess_from_intensities(ct)[0] == "CT" and "10.0 %" in guess_from_intensities(ct)[1]
    assert guess_from_intensities(np.abs(ct))[0] == "MRI"
    undecided, why = guess_from_intensities(np.random.default_rng(1).normal(0, 1, 1000))  # a z-scored scan
    assert undecided is None and "neither" in why


def test_shards_partition_the_cases_and_finished_cases_are_skipped(tmp_path):
    cases = inputs.route([(f"amos_{i:04d}", Path(f"{i}")) for i in range(1, 8)])
    parts = [inputs.select(cases, Shard(k, 3), tmp_path, False)[0] for k in range(3)]
    ids = sorted(c.case_id for part in parts for c in part)
    assert ids == [c.case_id for c in cases]
    assert [c.case_id for c in parts[1]] == ["amos_0002", "amos_0005"]
    (tmp_path / "amos_0002.nii.gz").write_bytes(b"done")
    todo, skipped = inputs.select(cases, Shard(1, 3), tmp_path, False)
    assert [c.case_id for c in todo] == ["amos_0005"] and skipped == 1
    todo, skipped = inputs.select(cases, Shard(1, 3), tmp_path, True)  # probabilities missing: not finished
    assert [c.case_id for c in todo] == ["amos_0002", "amos_0005"] and skipped == 0


def test_real_dicom_series(shared_data):
    found = inputs.discover(shared_data / "example_ct_dicom")
    assert found == [("example_ct_dicom", shared_data / "example_ct_dicom")]
