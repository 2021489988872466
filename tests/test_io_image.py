"""Image IO: geometry round trips, integer labels, and refusal of bad files (each naming the file)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import oblique_direction, write_nifti

from amos_autoseg.errors import InputError
from amos_autoseg.io.image import Geometry, read_header, read_image, read_label, strip_ending, write_image
from amos_autoseg.io.integrity import nifti_nonfinite, nifti_truncation

GRIDS = {
    "oblique": ((2.5, 0.7, 0.7), (-120.5, 33.25, 410.0), oblique_direction(25.0)),
    "flipped": ((1.0, 0.8, 1.2), (10.0, -20.0, 30.0), oblique_direction(0.0, flip_x=True)),
    "oblique_flipped_anisotropic": ((5.0, 0.6, 0.9), (1.5, 2.5, -3.5), oblique_direction(-40.0, flip_x=True)),
}


def _ramp(shape: tuple[int, int, int] = (7, 9, 11)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 251 - 100).astype(np.int16)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_write_read_round_trip_keeps_geometry(tmp_path: Path, grid: str, ending: str) -> None:
    spacing, origin, direction = GRIDS[grid]
    arr = _ramp()
    geo = Geometry(arr.shape, spacing, origin, direction)  # type: ignore[arg-type]
    path = tmp_path / f"img{ending}"
    write_image(arr, geo, path)
    back, back_geo = read_image(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, arr.astype(np.float32))
    assert back_geo.shape == arr.shape
    np.testing.assert_allclose(back_geo.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(back_geo.origin, origin, atol=1e-4)
    np.testing.assert_allclose(back_geo.direction, direction, atol=1e-6)
    assert geo.mismatch(back_geo) is None
    assert read_header(path) == back_geo
    assert not list(tmp_path.glob(".tmp-*")), "atomic write left a temporary file"


def test_array_axis_order_is_z_y_x(tmp_path: Path) -> None:
    arr = np.zeros((3, 4, 5), np.int16)
    arr[2, 1, 0] = 7
    path = write_nifti(tmp_path / "a.nii.gz", arr, spacing_zyx=(4.0, 2.0, 1.0))
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == (5, 4, 3)
    assert img.GetPixel(0, 1, 2) == 7
    back, geo = read_image(path)
    assert back[2, 1, 0] == 7 and geo.spacing == (4.0, 2.0, 1.0)


@pytest.mark.parametrize("dtype", [np.uint16, np.float64, np.int32, np.float32, np.uint8])
def test_labels_read_as_integers_whatever_the_stored_type(tmp_path: Path, dtype: type) -> None:
    lab = np.zeros((4, 5, 6), dtype)
    lab[1:3, 2:4, 1:5] = 15
    lab[0, 0, 0] = 3
    path = write_nifti(tmp_path / "lab.nii.gz", lab)
    arr, geo = read_label(path)
    assert arr.dtype.kind in "ui"
    np.testing.assert_array_equal(arr, lab.astype(np.int64))
    assert geo.shape == (4, 5, 6)


def test_large_label_ids_keep_their_value(tmp_path: Path) -> None:
    lab = np.zeros((2, 3, 4), np.uint16)
    lab[1, 1, 1] = 300
    arr, _ = read_label(write_nifti(tmp_path / "lab.nii.gz", lab))
    assert arr.dtype == np.int16 and arr[1, 1, 1] == 300


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, "non-integer"), (np.nan, "NaN"), (-2.0, "negative")],
)
def test_bad_label_values_are_refused(tmp_path: Path, value: float, message: str) -> None:
    lab = np.zeros((3, 4, 5), np.float64)
    lab[1, 1, 1] = value
    path = tmp_path / "lab.mha"  # MetaImage keeps NaN; SimpleITK's NIfTI reader turns it into 0 (see below)
    sitk.WriteImage(sitk.GetImageFromArray(lab), str(path))
    with pytest.raises(InputError, match=message) as info:
        read_label(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_intensities_are_refused(tmp_path: Path, value: float) -> None:
    arr = np.ones((3, 4, 5), np.float32)
    arr[2, 3, 4] = value
    path = tmp_path / "img.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    with pytest.raises(InputError, match="1 NaN or infinite") as info:
        read_image(path)
    assert info.value.path == str(path)
    data, _ = read_image(path, check_finite=False)
    assert not np.isfinite(data[2, 3, 4])


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_non_finite_voxels_are_counted_in_the_stored_bytes(tmp_path: Path, ending: str, dtype: type) -> None:
    arr = np.ones((6, 7, 8), dtype)
    arr[0, 0, 0], arr[3, 4, 5], arr[5, 6, 7] = np.nan, np.inf, -np.inf
    path = write_nifti(tmp_path / f"img{ending}", arr)
    assert float(read_image(path, check_finite=False)[0][0, 0, 0]) == 0.0  # what SimpleITK makes of a stored NaN
    assert nifti_nonfinite(path) == 3
    with pytest.raises(InputError, match="holds 3 NaN or infinite intensities"):
        read_image(path)  # the stored bytes are checked, so every stage refuses the file
    assert nifti_nonfinite(write_nifti(tmp_path / f"ok{ending}", np.ones((6, 7, 8), dtype))) == 0
    assert nifti_nonfinite(write_nifti(tmp_path / f"int{ending}", np.ones((6, 7, 8), np.int16))) == 0


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_header(tmp_path / "nope.nii.gz")
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all" * 5)
    for reader in (read_header, read_image, read_label):
        with pytest.raises(InputError, match="cannot be read") as info:
            reader(junk)
        assert info.value.path == str(junk)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused_by_header_and_full_read(tmp_path: Path, ending: str) -> None:
    good = write_nifti(tmp_path / f"good{ending}", np.random.default_rng(0).normal(size=(20, 30, 40)))
    data = good.read_bytes()
    cut = tmp_path / f"cut{ending}"
    cut.write_bytes(data[: len(data) // 2])
    # SimpleITK itself reads the cut file without complaint (zero-filled): the reason for io.integrity.
    assert sitk.ReadImage(str(cut)).GetSize() == (40, 30, 20)
    for reader in (read_header, read_image):
        with pytest.raises(InputError, match="truncated") as info:
            reader(cut)
        assert info.value.path == str(cut)
    assert nifti_truncation(good) is None


def test_gzip_without_end_marker_and_multi_member_gzip(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "good.nii", np.arange(2000, dtype=np.int16).reshape(10, 10, 20))
    raw = good.read_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    assert nifti_truncation(multi) is None
    np.testing.assert_array_equal(read_image(multi)[0], read_image(good)[0])
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(raw) + b"\x00" * 32)
    assert nifti_truncation(padded) is None
    no_end = tmp_path / "no_end.nii.gz"
    no_end.write_bytes(gzip.compress(raw)[:-6])
    assert "truncated" in (nifti_truncation(no_end) or "")


def test_2d_and_multi_volume_4d_are_refused_single_volume_4d_is_squeezed(tmp_path: Path) -> None:
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 7), np.int16)), str(flat))
    with pytest.raises(InputError, match="2D"):
        read_header(flat)
    with pytest.raises(InputError, match="2D"):
        read_image(flat)
    four = tmp_path / "four.nii.gz"
    img4 = sitk.JoinSeries([sitk.GetImageFromArray(np.full((3, 4, 5), v, np.int16)) for v in (1, 2, 3)])
    sitk.WriteImage(img4, str(four))
    with pytest.raises(InputError, match="4D"):
        read_header(four)
    with pytest.raises(InputError, match="4D"):
        read_image(four)
    one = tmp_path / "one.nii.gz"
    img1 = sitk.JoinSeries([sitk.GetImageFromArray(np.full((3, 4, 5), 9, np.int16))])
    img1.SetSpacing((0.5, 0.6, 2.0, 1.0))
    sitk.WriteImage(img1, str(one))
    arr, geo = read_image(one)
    assert arr.shape == (3, 4, 5) and float(arr.max()) == 9.0
    assert geo.spacing == pytest.approx((2.0, 0.6, 0.5))
    assert read_header(one).shape == (3, 4, 5)
    assert read_header(one).direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_vector_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError, match="components"):
        read_image(path)


def _mha_with_spacing(tmp_path: Path, spacing: str) -> Path:
    src = tmp_path / "src.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), str(src), useCompression=False)
    out = tmp_path / f"spacing_{spacing.replace(' ', '_')}.mha"
    out.write_bytes(src.read_bytes().replace(b"ElementSpacing = 1 1 1", f"ElementSpacing = {spacing}".encode()))
    return out


@pytest.mark.parametrize("spacing", ["0 1 1", "1 -1 1"])
def test_zero_or_negative_spacing_is_refused(tmp_path: Path, spacing: str) -> None:
    path = _mha_with_spacing(tmp_path, spacing)
    with pytest.raises(InputError, match="spacing") as info:
        read_header(path)
    assert info.value.path == str(path)


def test_negative_pixdim_in_nifti_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "neg.nii", np.zeros((3, 4, 5), np.int16))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", -2.0)  # pixdim[1], the x spacing
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="invalid spacing"):
        read_header(path)


def test_write_image_takes_bool_and_float16_and_checks_shape(tmp_path: Path) -> None:
    geo = Geometry((2, 3, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 2, 3] = True
    write_image(mask, geo, tmp_path / "m.nii.gz")
    arr, _ = read_label(tmp_path / "m.nii.gz")
    assert arr[1, 2, 3] == 1 and arr.sum() == 1
    write_image(np.full((2, 3, 4), 0.5, np.float16), geo, tmp_path / "h.nii.gz")
    assert read_image(tmp_path / "h.nii.gz")[0][0, 0, 0] == 0.5
    with pytest.raises(ValueError, match="does not match"):
        write_image(np.zeros((3, 3, 4)), geo, tmp_path / "bad.nii.gz")


def test_geometry_mismatch_names_the_difference() -> None:
    base = Geometry((4, 5, 6), (3.0, 0.8, 0.8), (100.0, -50.0, 20.0), oblique_direction(15.0))
    assert base.mismatch(base) is None
    noisy = Geometry((4, 5, 6), (3.0 * (1 + 1e-6), 0.8, 0.8), (100.0 + 1e-5, -50.0, 20.0), base.direction)
    assert base.mismatch(noisy) is None
    assert "size" in (base.mismatch(Geometry((4, 5, 7), base.spacing, base.origin, base.direction)) or "")
    assert "spacing" in (base.mismatch(Geometry(base.shape, (2.0, 0.8, 0.8), base.origin, base.direction)) or "")
    assert "origin" in (base.mismatch(Geometry(base.shape, base.spacing, (101.0, -50.0, 20.0), base.direction)) or "")
    flipped = oblique_direction(15.0, flip_x=True)
    assert "direction" in (base.mismatch(Geometry(base.shape, base.spacing, base.origin, flipped)) or "")
    assert Geometry.from_json(base.to_json()) == base


def test_strip_ending() -> None:
    assert strip_ending("amos_0001.nii.gz") == "amos_0001"
    assert strip_ending("case.MHA") == "case"
    assert strip_ending("case_0000.nrrd") == "case_0000"
    assert strip_ending("notes.txt") == "notes.txt"


def test_mismatch_hints_at_a_flipped_copy_of_the_same_grid() -> None:
    base = Geometry((4, 5, 6), (2.0, 1.0, 0.5), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    flipped_x = Geometry(base.shape, base.spacing, (10.0 + 5 * 0.5, 20.0, 30.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert "flipped or swapped" in (base.mismatch(flipped_x) or "")
    shifted = Geometry(base.shape, base.spacing, (12.5, 20.0, 30.0), base.direction)
    assert "flipped" not in (base.mismatch(shifted) or "x") and "origin" in (base.mismatch(shifted) or "")
    turned = Geometry(base.shape, base.spacing, base.origin, (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    message = base.mismatch(turned) or ""
    assert "direction" in message and "flipped" not in message


def test_real_ct_and_its_dicom_series(shared_data: Path) -> None:
    ct, ct_geo = read_image(shared_data / "example_ct.nii.gz")
    seg, seg_geo = read_label(shared_data / "example_ct_seg_amos15.nii.gz")
    assert ct.shape == seg.shape == ct_geo.shape and ct_geo.mismatch(seg_geo) is None
    assert ct.min() < -900 and seg.dtype == np.uint8 and int(seg.max()) <= 15
    assert read_header(shared_data / "example_ct.nii.gz") == ct_geo
    dicom = read_header(shared_data / "example_ct_dicom")
    dicom_seg = read_header(shared_data / "example_ct_dicom_seg_amos15.nii.gz")
    assert dicom.shape == dicom_seg.shape
    assert "flipped or swapped" in (dicom.mismatch(dicom_seg) or "")
