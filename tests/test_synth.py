"""The synthetic AMOS-like data generator: layout, determinism, anatomy in physical space, intensities."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.io.dataset import load_dataset
from amos_autoseg.io.image import Geometry, read_image, read_label
from amos_autoseg.synth import SIZES, make_case, make_spec, write_dataset
from amos_autoseg.synth import tissues as T
from amos_autoseg.synth.case import case_rng, sample_grid
from amos_autoseg.synth.anatomy import sample_body
from amos_autoseg.synth.ct import CT_PHASES
from amos_autoseg.synth.grid import DIRECTION_KINDS
from amos_autoseg.synth.mri import MRI_PHASES, bias_field, mri_image
from amos_autoseg.synth.writer import validation_indices

SPLEEN, KIDNEY_R, KIDNEY_L, LIVER, AORTA, IVC, PANCREAS, BLADDER = 1, 2, 3, 6, 8, 9, 10, 14


def _centroids(label: np.ndarray, geometry: Geometry) -> dict[int, np.ndarray]:
    """Physical (x, y, z) centroid of every label present, through SimpleITK's index-to-point transform."""
    import SimpleITK as sitk

    ref = sitk.Image([int(s) for s in reversed(geometry.shape)], sitk.sitkUInt8)
    geometry.apply_to(ref)
    out = {}
    for k in np.unique(label):
        if k == 0:
            continue
        zyx = np.argwhere(label == k).mean(axis=0)
        out[int(k)] = np.array(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))
    return out


def _check_anatomy(c: dict[int, np.ndarray], where: str) -> None:
    # LPS: +x patient left, +y posterior, +z superior
    assert c[LIVER][0] < c[SPLEEN][0], f"{where}: liver not on the patient's right of the spleen"
    assert c[KIDNEY_R][0] < c[KIDNEY_L][0], f"{where}: right kidney not right of the left kidney"
    assert c[KIDNEY_R][1] > c[PANCREAS][1] and c[KIDNEY_L][1] > c[PANCREAS][1], f"{where}: kidneys not posterior"
    assert c[IVC][0] < c[AORTA][0], f"{where}: IVC not right of the aorta"
    assert c[LIVER][2] > c[KIDNEY_R][2], f"{where}: liver not above the right kidney"
    if BLADDER in c:
        assert c[BLADDER][2] < c[LIVER][2] - 100.0, f"{where}: bladder not caudal to the liver"


def test_dataset_layout_loads_with_modalities_and_phases(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    assert ds.layout == "amos"
    assert ds.labels[8] == "arota" and len(ds.labels) == 16
    ids = [c.case_id for c in ds.cases]
    assert ids == ["amos_0001", "amos_0002", "amos_0003", "amos_0004", "amos_0501", "amos_0502"]
    assert all(c.modality == ("CT" if int(c.case_id[5:]) < 500 else "MRI") for c in ds.cases)
    ct_phases = {c.phase for c in ds.cases if c.modality == "CT"}
    assert ct_phases == set(CT_PHASES)
    assert all(c.phase in MRI_PHASES for c in ds.cases if c.modality == "MRI")
    spec = json.loads((tiny_dataset / "dataset.json").read_text())
    for key in ("name", "description", "licence", "tensorImageSize", "modality", "training"):
        assert key in spec
    assert spec["training"][0] == {"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz",
                                   "phase": ds.cases[0].phase}
    meta = (tiny_dataset / "meta.csv").read_text().splitlines()
    assert meta[0] == "case_id,modality,phase" and len(meta) == 7
    from_meta = load_dataset(tiny_dataset, meta=tiny_dataset / "meta.csv")
    assert [(c.modality, c.phase) for c in from_meta.cases] == [(c.modality, c.phase) for c in ds.cases]


def test_cases_have_valid_labels_types_and_anatomy(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    label_types, directions, bladder_seen = set(), set(), 0
    for case in ds.cases:
        image, geo = read_image(case.image)
        label, lgeo = read_label(case.label)
        assert geo.mismatch(lgeo) is None
        import SimpleITK as sitk

        stored = sitk.ReadImage(str(case.image))
        label_types.add(sitk.ReadImage(str(case.label)).GetPixelIDTypeAsString())
        if case.modality == "CT":
            assert stored.GetPixelID() == sitk.sitkInt16
        else:
            assert stored.GetPixelID() in (sitk.sitkFloat32, sitk.sitkUInt16)
        values = set(np.unique(label).tolist())
        assert values <= set(range(16))
        assert len(values - {0}) >= 11, f"{case.case_id}: only organs {sorted(values)}"
        directions.add(tuple(np.round(geo.direction, 3)))
        cents = _centroids(label, geo)
        _check_anatomy(cents, case.case_id)
        bladder_seen += BLADDER in cents
    assert bladder_seen >= 1
    assert len(directions) >= 4 and (1, 0, 0, 0, 1, 0, 0, 0, 1) in directions
    assert any("8-bit" in t for t in label_types)


@pytest.mark.parametrize("direction", DIRECTION_KINDS)
def test_anatomy_in_physical_space_for_every_direction(direction: str, tmp_path: Path) -> None:
    from amos_autoseg.io.image import write_image

    for modality, index in (("CT", 1), ("MRI", 0)):
        spec = make_spec(modality, index, seed=3).with_(direction=direction, thick=False)
        case = make_case(spec)
        _check_anatomy(_centroids(case.label, case.geometry), f"{spec.case_id} {direction}")
        write_image(case.label, case.geometry, tmp_path / f"{spec.case_id}.nii.gz")  # through the file header
        label, geo = read_label(tmp_path / f"{spec.case_id}.nii.gz")
        assert geo.mismatch(case.geometry) is None
        _check_anatomy(_centroids(label, geo), f"{spec.case_id} {direction} (file)")
        if direction == "identity":
            assert np.allclose(np.reshape(geo.direction, (3, 3)), np.eye(3))
        else:
            assert not np.allclose(np.reshape(geo.direction, (3, 3)), np.eye(3))


def test_shapes_grid_and_fields() -> None:
    from amos_autoseg.synth.fields import SmoothField, partial_volume
    from amos_autoseg.synth.grid import direction_matrix, index_box, patient_coords, place_grid
    from amos_autoseg.synth.shapes import Ellipsoid, Tube, rotation

    e = Ellipsoid(np.array([1.0, 2.0, 3.0]), np.array([10.0, 5.0, 2.0]), rotation(30.0, 10.0, 0.0))

    def at(*p: float) -> list[np.ndarray]:
        return [np.array([v], dtype=np.float32) for v in p]

    assert abs(float(e.level(*at(1.0, 2.0, 3.0))[0]) + 1.0) < 1e-5  # centre
    assert abs(float(e.level(*at(*(e.c + e.rot[:, 0] * 10.0)))[0])) < 1e-4  # end of the first semi-axis
    t = Tube(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 100.0], [50.0, 0.0, 100.0]]), np.array([4.0, 8.0, 8.0]))
    assert abs(float(t.level(*at(4.0, 0.0, 0.0))[0])) < 1e-5
    assert float(t.level(*at(25.0, 0.0, 107.0))[0]) < 0 < float(t.level(*at(25.0, 0.0, 109.0))[0])
    rng = np.random.default_rng(0)
    grid = place_grid((6, 7, 8), (2.0, 3.0, 4.0), direction_matrix("oblique", rng), np.zeros(3), np.array([5.0, 6, 7]))
    x, y, z = patient_coords(grid, slice(0, 6), slice(0, 7), slice(0, 8))
    assert abs(float(x.mean())) < 1e-3 and abs(float(z.mean())) < 1e-3  # centred on the patient origin
    box = index_box(grid, np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0]))
    assert box is not None and all(s.stop - s.start <= 4 for s in box)  # a few voxels around the centre
    assert all(s.start <= (n - 1) / 2 < s.stop for s, n in zip(box, grid.shape))
    assert index_box(grid, np.array([500.0, 0, 0]), np.array([510.0, 1, 1])) is None
    field = SmoothField(rng, (20, 30, 40), (2.0, 2.0, 2.0), corr_mm=10.0).full()
    assert 0.7 < float(field.std()) < 1.3 and abs(float(field.mean())) < 0.5
    img = rng.normal(size=(5, 6, 7)).astype(np.float32)
    blurred = img.copy()
    partial_volume(blurred)
    assert abs(float(blurred.mean() - img.mean())) < 0.05 and blurred.std() < img.std()


def test_same_seed_gives_identical_cases_and_files(tmp_path: Path) -> None:
    a = make_case(make_spec("MRI", 1, seed=5))
    b = make_case(make_spec("MRI", 1, seed=5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.geometry == b.geometry
    other = make_case(make_spec("MRI", 2, seed=5))
    assert other.geometry != a.geometry or not np.array_equal(other.label, a.label)
    reseeded = make_case(make_spec("MRI", 1, seed=6))
    assert reseeded.geometry != a.geometry
    d1 = write_dataset(tmp_path / "a", n_ct=1, n_mri=1, seed=11)
    d2 = write_dataset(tmp_path / "b", n_ct=1, n_mri=1, seed=11)
    for sub in ("imagesTr", "labelsTr"):
        for name in ("amos_0001.nii.gz", "amos_0501.nii.gz"):
            x, gx = read_image(d1 / sub / name)
            y, gy = read_image(d2 / sub / name)
            assert np.array_equal(x, y) and gx == gy
    assert (d1 / "dataset.json").read_text() != "" and (d1 / "meta.csv").read_text() == (d2 / "meta.csv").read_text()


def test_ct_hounsfield_units_by_phase() -> None:
    spec = make_spec("CT", 0, seed=2).with_(thick=False)
    plain = make_case(spec.with_(phase="non-contrast"))
    arterial = make_case(spec.with_(phase="arterial"))
    venous = make_case(spec.with_(phase="venous"))
    assert np.array_equal(plain.label, arterial.label)  # same anatomy, only the contrast differs
    img = plain.image.astype(np.float32)
    assert plain.image.dtype == np.int16 and img.min() >= -1024 and img.max() <= 3071
    corners = np.concatenate([img[:, :2, :2].ravel(), img[:, -2:, -2:].ravel(), img[:, :2, -2:].ravel()])
    assert abs(float(np.median(corners)) + 1000.0) < 40.0  # air (or -1024 outside the scan circle)
    assert float(np.percentile(img, 99.9)) > 300.0  # bone

    def mean(case: object, k: int) -> float:
        return float(case.image[case.label == k].astype(np.float32).mean())  # type: ignore[attr-defined]

    assert mean(arterial, AORTA) > mean(plain, AORTA) + 100.0
    assert mean(venous, LIVER) > mean(plain, LIVER) + 25.0
    assert 20.0 < mean(plain, LIVER) < 90.0
    assert mean(arterial, AORTA) > mean(venous, AORTA)


def test_mri_is_not_hu_and_has_a_smooth_bias_field() -> None:
    case = make_case(make_spec("MRI", 0, seed=1))
    img = case.image.astype(np.float32)
    assert img.min() >= 0.0
    background = img[:, :2, :2]
    assert float(np.median(background)) < 0.05 * float(np.percentile(img, 99))
    rng = np.random.default_rng(0)
    field = bias_field(rng, (16, 40, 40), (6.0, 8.0, 8.0), strength=0.25)
    assert field.max() / field.min() > 1.15
    assert float(np.abs(np.diff(np.log(field), axis=2)).max()) < 0.05  # smooth from voxel to voxel
    liver_only = np.full((16, 40, 40), T.LIVER, dtype=np.uint8)
    mr = mri_image(liver_only, "t1", (6.0, 8.0, 8.0), np.random.default_rng(1), as_uint16=False)
    blocks = mr.reshape(4, 4, 5, 8, 5, 8).mean(axis=(1, 3, 5))
    cv = blocks.std() / blocks.mean()
    assert cv > 0.04  # the bias field makes one tissue vary across the volume
    assert float(np.abs(np.diff(np.log(blocks), axis=2)).max()) < 0.3  # ... smoothly (64 mm apart)


def test_spacing_and_field_of_view_vary_like_amos() -> None:
    ratios = []
    for i in range(8):
        spec = make_spec("CT", i, seed=0)
        grid = sample_grid(spec, sample_body(case_rng(spec, 0)), case_rng(spec, 1))
        ratios.append(grid.spacing[2] / grid.spacing[0])
    assert min(ratios) < 1.8 and max(ratios) > 2.5
    for modality in ("CT", "MRI"):
        zs, xy = [], []
        for i in range(12):
            spec = make_spec(modality, i, seed=4, size="full")
            grid = sample_grid(spec, sample_body(case_rng(spec, 0)), case_rng(spec, 1))
            nz, ny, nx = grid.shape
            sx, sy, sz = grid.spacing
            zs.append(sz)
            xy.append(sx)
            assert 280.0 <= nx * sx <= 520.0 and 120.0 <= nz * sz <= 520.0
            (lo, hi), (zlo, zhi) = SIZES["full"][modality]
            assert lo <= nx <= hi and zlo <= nz <= zhi
        if modality == "CT":
            assert min(zs) <= 2.0 and max(zs) >= 5.0 and 0.6 <= min(xy) and max(xy) <= 0.95
        else:
            assert min(zs) >= 3.0 and max(zs) <= 8.0 and 1.15 <= min(xy) and max(xy) <= 1.7


def test_validation_split(tmp_path: Path) -> None:
    assert validation_indices(5, 0.0) == set() and len(validation_indices(5, 0.4)) == 2
    assert len(validation_indices(2, 0.9)) == 1  # always keeps a training case
    out = write_dataset(tmp_path / "d", n_ct=3, n_mri=2, seed=1, val_fraction=0.4)
    ds = load_dataset(out)
    val = ds.split("validation")
    assert [c.case_id for c in val] == ["amos_0003", "amos_0502"]
    assert all(c.image.parent.name == "imagesVa" and c.label.is_file() for c in val)  # type: ignore[union-attr]
    assert len(ds.training) == 3


def test_rerun_with_same_parameters_keeps_files(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", n_ct=1, n_mri=0, seed=1)
    f = out / "imagesTr" / "amos_0001.nii.gz"
    before = f.stat().st_mtime_ns
    write_dataset(out, n_ct=1, n_mri=0, seed=1)
    assert f.stat().st_mtime_ns == before
    first, _ = read_image(f)
    write_dataset(out, n_ct=1, n_mri=0, seed=2)
    second, _ = read_image(f)
    assert not np.array_equal(first, second) or first.shape != second.shape


def test_cli_synth(tmp_path: Path) -> None:
    from amos_autoseg.cli.main import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--n-ct", "2", "--n-mri", "1", "--size", "tiny",
                 "--workers", "0"]) == 0
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert names == ["amos_0001.nii.gz", "amos_0002.nii.gz", "amos_0501.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == names
    assert main(["synth", "--out", str(out), "--val-fraction", "1.5"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", "--out", str(blocker), "--n-ct", "1", "--n-mri", "0"]) == 2


def test_medium_size_is_near_isotropic_with_every_organ_a_few_voxels_thick() -> None:
    """The "medium" preset (CPU learning benchmarks): in-plane and slice counts in range, slices at most about
    twice the in-plane spacing (tiny goes to 4x), voxels of 6-16 mm, and the anatomy still right."""
    for modality in ("CT", "MRI"):
        (lo, hi), (zlo, zhi) = SIZES["medium"][modality]
        ratios = []
        for i in range(10):
            spec = make_spec(modality, i, seed=0, size="medium")
            grid = sample_grid(spec, sample_body(case_rng(spec, 0)), case_rng(spec, 1))
            nz, ny, nx = grid.shape
            sx, _, sz = grid.spacing
            assert lo <= nx <= hi and zlo <= nz <= zhi and 6.0 <= sx <= 10.0 and sz <= 16.0
            ratios.append(sz / sx)
        assert max(ratios) < 2.3 and min(ratios) >= 0.9
    case = make_case(make_spec("CT", 0, seed=0, size="medium"))
    organs = set(np.unique(case.label).tolist()) - {0}
    assert {SPLEEN, KIDNEY_R, KIDNEY_L, LIVER, AORTA, IVC, PANCREAS, 4, 5, 7, 11, 12, 13} <= organs
    _check_anatomy(_centroids(case.label, case.geometry), "medium CT 0")


def test_demo_size_is_fine_consistent_and_holds_every_organ() -> None:
    from amos_autoseg.synth.case import DEMO_SPACING

    seen: set[int] = set()
    for modality, n in (("CT", 4), ("MRI", 2)):
        for i in range(n):
            spec = make_spec(modality, i, seed=0, size="demo")
            assert spec.direction == "las" and not spec.thick
            body = sample_body(case_rng(spec, 0))
            case = make_case(spec)
            nz, ny, nx = case.label.shape
            sz, sy, sx = case.geometry.spacing
            base_xy, base_z = DEMO_SPACING[modality]
            assert abs(sx / base_xy - 1) <= 0.03 and sx == sy and abs(sz / base_z - 1) <= 0.03
            assert nx * sx >= 2 * body.a  # the whole body cross-section, as a scan's field of view has it
            assert (lo := SIZES["demo"][modality][0][0]) <= nx and ny >= lo and nz * sz >= 400.0
            assert np.allclose(np.array(case.geometry.direction).reshape(3, 3), np.diag([1.0, -1.0, 1.0]))
            counts = np.bincount(case.label.ravel(), minlength=16)
            present = {k for k in range(1, 16) if counts[k]}
            assert present >= set(range(1, 16)) - {4}, f"{spec.case_id}: only {sorted(present)}"  # 4: gallbladder
            assert min(counts[k] for k in (5, 11, 12)) >= 20  # esophagus and adrenals: tens of voxels
            _check_anatomy(_centroids(case.label, case.geometry), spec.case_id)
            seen |= present
    assert seen == set(range(1, 16))
