"""The preview command, file pairing, --ref mode with DSC, report_section, and the real example scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.labels import AMOS_COLORS
from amos_autoseg.preview import CaseFiles, pair_cases, render_case, report_section, worst_cases
from amos_autoseg.preview.api import dice_per_label
from amos_autoseg.preview.render import HEADER
from tests.conftest import oblique_direction, write_nifti

SHAPE = (12, 24, 20)


def _case(folder: Path, name: str, image_name: str, shift: int = 0) -> tuple[Path, Path]:
    """An MRI-like image and a 2-organ label map (spleen 1, liver 6) on an oblique, anisotropic grid."""
    rng = np.random.default_rng(len(name))
    image = (rng.random(SHAPE) * 50 + 300).astype(np.float32)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3:9, 6:16, 2 + shift:8 + shift] = 6
    labels[4:8, 8:14, 13:18] = 1
    geo = dict(spacing_zyx=(4.0, 1.5, 1.5), origin=(5.0, 2.0, -3.0), direction=oblique_direction(15.0))
    img = write_nifti(folder / "images" / image_name, image, **geo)
    seg = write_nifti(folder / "segs" / f"{name}.nii.gz", labels, **geo)
    return img, seg


def _flat_files(tmp_path: Path) -> None:
    _case(tmp_path, "case_a", "case_a_0000.nii.gz")
    _case(tmp_path, "amos_0002", "amos_0002.nii.gz")


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_cli_writes_one_png_per_case(tmp_path: Path) -> None:
    _flat_files(tmp_path)
    out = tmp_path / "out"
    rc = main(["preview", "--image", str(tmp_path / "images"), "--seg", str(tmp_path / "segs"),
               "--out", str(out), "--workers", "2", "--cell", "96"])  # the worker-process path
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["amos_0002.png", "case_a.png"]
    assert _png_size(out / "case_a.png") == (3 * 96, HEADER + 2 * 96)


def test_cli_refuses_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _flat_files(tmp_path)
    (tmp_path / "images" / "amos_0002.nii.gz").unlink()
    rc = main(["preview", "--image", str(tmp_path / "images"), "--seg", str(tmp_path / "segs"),
               "--out", str(tmp_path / "out"), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "amos_0002" in err and str(tmp_path / "images") in err
    assert not (tmp_path / "out").exists()  # checked before anything is drawn
    rc = main(["preview", "--image", str(tmp_path / "nope.nii.gz"), "--seg", str(tmp_path / "segs"),
               "--out", str(tmp_path / "out")])
    assert rc == 2 and "nope.nii.gz" in capsys.readouterr().err


def test_segmentation_off_the_image_grid_is_refused(tmp_path: Path) -> None:
    img, _ = _case(tmp_path, "case_a", "case_a.nii.gz")
    bad = write_nifti(tmp_path / "bad.nii.gz", np.zeros((12, 24, 21), dtype=np.uint8))
    with pytest.raises(InputError, match="bad.nii.gz"):
        render_case(CaseFiles("case_a", img, bad))


def test_pairing_by_case_name(tmp_path: Path) -> None:
    _flat_files(tmp_path)
    pairs = pair_cases(tmp_path / "images", tmp_path / "segs")
    assert [(p.case_id, p.image.name) for p in pairs] == [("amos_0002", "amos_0002.nii.gz"),
                                                         ("case_a", "case_a_0000.nii.gz")]
    one = pair_cases(tmp_path / "images" / "case_a_0000.nii.gz", tmp_path / "segs")
    assert [p.case_id for p in one] == ["case_a"]
    with pytest.raises(InputError, match="no reference of case"):
        (tmp_path / "refs").mkdir()
        pair_cases(tmp_path / "images", tmp_path / "segs", tmp_path / "refs")


def test_ref_mode_side_by_side_with_dsc(tmp_path: Path) -> None:
    img, seg = _case(tmp_path, "case_a", "case_a.nii.gz", shift=0)
    _, ref = _case(tmp_path / "r", "case_a", "case_a.nii.gz", shift=2)  # liver shifted by 2 voxels
    alone = render_case(CaseFiles("case_a", img, seg), cell=96)
    both = render_case(CaseFiles("case_a", img, seg, ref), cell=96)
    assert both.pixels.shape[1] == 2 * alone.pixels.shape[1]
    assert both.pixels.shape[0] == alone.pixels.shape[0]
    assert {k.split("/")[0] for k in both.panels} == {"prediction", "reference"}
    assert both.dsc[1] == pytest.approx(1.0)
    assert both.dsc[6] == pytest.approx(2 * 4 / 12)  # 6 columns each, overlap 4
    # the legend's text is drawn: the legend cell of the prediction block differs from an empty-legend render
    legend = both.pixels[HEADER + 96:, 2 * 96:3 * 96]
    assert (legend == 255).all(axis=2).sum() > 50


def test_dice_per_label() -> None:
    pred = np.array([0, 1, 1, 2, 2, 0, 3])
    ref = np.array([0, 1, 0, 2, 2, 2, 0])
    assert dice_per_label(pred, ref) == pytest.approx({1: 2 / 3, 2: 0.8, 3: 0.0})


def _metrics(cases: dict[str, float]) -> dict:
    return {"per_case": {c: {"modality": "MRI", "labels": {"1": {"dsc": 1.0, "nsd": 1.0}, "6": {"dsc": d, "nsd": d}}}
                         for c, d in cases.items()}}


def test_report_section_names_the_worst_case_png(tmp_path: Path) -> None:
    _case(tmp_path, "case_a", "case_a.nii.gz")
    _case(tmp_path, "case_b", "case_b_0000.nii.gz")
    _case(tmp_path / "r", "case_a", "x.nii.gz", shift=1)
    _case(tmp_path / "r", "case_b", "y.nii.gz", shift=3)
    metrics = _metrics({"case_a": 0.8, "case_b": 0.4, "case_c": 0.9})
    assert [c for c, _ in worst_cases(metrics, 2)] == ["case_b", "case_a"]
    report = tmp_path / "eval"
    md = report_section(metrics, tmp_path / "images", tmp_path / "segs", tmp_path / "r" / "segs",
                        report / "previews", n_worst=2)
    assert md.startswith("## ")
    assert md.index("![case_b") < md.index("![case_a")
    assert "(previews/case_b.png)" in md and "70.0 %" in md  # mean of 1.0 and 0.4
    assert (report / "previews" / "case_b.png").is_file() and (report / "previews" / "case_a.png").is_file()
    md3 = report_section(metrics, tmp_path / "images", tmp_path / "segs", tmp_path / "r" / "segs",
                         report / "previews", n_worst=3)
    assert "case_c" in md3 and "No preview: no prediction and no reference" in md3
    assert report_section({"per_case": {}}, None, tmp_path, tmp_path, tmp_path) == ""
    md_black = report_section(metrics, None, tmp_path / "segs", tmp_path / "r" / "segs", tmp_path / "black", 1)
    assert "(black/case_b.png)" in md_black and (tmp_path / "black" / "case_b.png").is_file()


def _side_counts(mosaic, label: int) -> tuple[int, int]:  # noqa: ANN001
    left = right = 0
    colour = np.array(AMOS_COLORS[label], dtype=np.uint8)
    for n in range(3):
        x0, y0, x1, y1 = mosaic.panels[f"segmentation/axial_{n}"]
        hit = np.all(mosaic.pixels[y0:y1, x0:x1] == colour, axis=2)
        half = (x1 - x0) // 2
        left += int(hit[:, :half].sum())
        right += int(hit[:, half:].sum())
    return left, right


@pytest.mark.parametrize("image, seg", [
    ("example_ct.nii.gz", "example_ct_seg_amos15.nii.gz"),  # RAS
    ("example_mr_sm.nii.gz", "example_mr_sm_seg_amos15.nii.gz"),  # LPS
    ("example_ct_dicom", "example_ct_dicom_seg_amos15.nii.gz"),  # DICOM series folder, LAS
])
def test_real_scans_liver_on_image_left_spleen_on_image_right(shared_data: Path, image: str, seg: str) -> None:
    (files,) = pair_cases(shared_data / image, shared_data / seg)
    mosaic = render_case(files, cell=192)
    liver_l, liver_r = _side_counts(mosaic, 6)
    spleen_l, spleen_r = _side_counts(mosaic, 1)
    assert liver_l > 4 * liver_r and liver_l > 50  # the left lobe may cross the midline a little
    assert spleen_r > 50 and spleen_l == 0


def test_cli_real_ct_with_reference(shared_data: Path, tmp_path: Path) -> None:
    seg = shared_data / "example_ct_seg_amos15.nii.gz"
    rc = main(["preview", "--image", str(shared_data / "example_ct.nii.gz"), "--seg", str(seg),
               "--ref", str(seg), "--out", str(tmp_path), "--workers", "0", "--cell", "128"])
    assert rc == 0
    assert _png_size(tmp_path / "example_ct_seg_amos15.png") == (6 * 128, HEADER + 2 * 128)
