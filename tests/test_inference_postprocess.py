"""Post-processing rules on hand-made label maps, their choice on CV-like cases, and their JSON file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from amos_autoseg.errors import InputError
from amos_autoseg.inference.postprocess import (
    PostprocessingRules,
    apply_postprocessing,
    body_midline_x,
    dice,
    fix_left_right,
    keep_largest_component,
    load_rules,
    physical_x,
    remove_small_components,
    save_rules,
)
from amos_autoseg.inference.postprocess_choice import CvCase, cv_cases_from_folders, determine_postprocessing
from amos_autoseg.io.image import Geometry
from amos_autoseg.labels import AMOS_LABELS, LEFT_RIGHT_PAIRS
from tests.conftest import oblique_direction, write_nifti

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def geometry(shape, spacing=(2.0, 1.0, 1.0), direction=IDENTITY, origin=(10.0, -5.0, 3.0)) -> Geometry:
    return Geometry(tuple(shape), tuple(spacing), origin, tuple(direction))


def body(shape=(6, 12, 20), swap=False) -> np.ndarray:
    """Aorta and cava on the midline, kidneys and adrenals on both sides (x index 0 = patient right in LPS)."""
    lab = np.zeros(shape, dtype=np.uint8)
    lab[:, 5:7, 9] = 8  # aorta, just left of the midline
    lab[:, 5:7, 8] = 9  # cava, just right
    right_k, left_k = (3, 2) if swap else (2, 3)
    lab[1:5, 3:9, 1:5] = right_k
    lab[1:5, 3:9, 14:18] = left_k
    lab[0, 1:3, 5:7] = 11
    lab[0, 1:3, 12:14] = 12
    return lab


def test_pairs_are_right_then_left():
    for right, left in LEFT_RIGHT_PAIRS:
        assert "right" in AMOS_LABELS[right] and "left" in AMOS_LABELS[left]


def test_keep_largest_component_drops_the_others_only_for_that_label():
    lab = np.zeros((10, 10, 10), dtype=np.uint8)
    lab[0:3, 0:3, 0:3] = 1  # 27 voxels
    lab[6:8, 6:8, 6:8] = 1  # 8 voxels
    lab[6:8, 0:2, 6:8] = 4  # another organ, untouched
    out = keep_largest_component(lab, 1)
    assert (out == 1).sum() == 27 and out[7, 7, 7] == 0
    assert (out == 4).sum() == 8
    assert (lab == 1).sum() == 35  # input unchanged
    assert keep_largest_component(lab, 5) is lab  # absent label: nothing to do


def test_components_are_26_connected():
    lab = np.zeros((4, 4, 4), dtype=np.uint8)
    lab[0, 0, 0] = lab[1, 1, 1] = 1  # corner-touching: one component
    lab[3, 3, 3] = 1
    out = keep_largest_component(lab, 1)
    assert out[0, 0, 0] == out[1, 1, 1] == 1 and out[3, 3, 3] == 0


def test_remove_small_components_by_volume():
    lab = np.zeros((10, 10, 10), dtype=np.uint8)
    lab[0:3, 0:3, 0:3] = 6
    lab[6:8, 6:8, 6:8] = 6
    lab[9, 9, 9] = 6
    out = remove_small_components(lab, 6, min_voxels=8)
    assert (out == 6).sum() == 35 and out[9, 9, 9] == 0
    out = remove_small_components(lab, 6, min_voxels=9)
    assert (out == 6).sum() == 27
    rules = PostprocessingRules(min_volume_mm3={6: 9 * 2.0})  # voxels of 2 mm^3: 9 voxels <- 18 mm^3
    out = apply_postprocessing(lab, geometry(lab.shape), rules)
    assert (out == 6).sum() == 27


def test_physical_x_matches_simpleitk():
    import SimpleITK as sitk

    geom = geometry((5, 6, 7), (2.5, 0.8, 1.3), oblique_direction(25, flip_x=True))
    img = sitk.Image(7, 6, 5, sitk.sitkUInt8)
    geom.apply_to(img)
    for zyx in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        point = img.TransformIndexToPhysicalPoint(tuple(int(v) for v in zyx[::-1]))
        assert physical_x(np.array(zyx), geom) == pytest.approx(point[0])


@pytest.mark.parametrize("flip", [False, True])
def test_left_right_fix_relabels_by_body_side(flip):
    lab = body(swap=True)
    direction = oblique_direction(15, flip_x=True) if flip else IDENTITY
    if flip:  # with x flipped, a large x index is the patient's right: mirror the anatomy to stay plausible
        lab = np.ascontiguousarray(lab[:, :, ::-1])
        lab[lab == 8], lab[lab == 9] = 9, 8
    geom = geometry(lab.shape, direction=direction)
    truth = body() if not flip else None
    out = fix_left_right(fix_left_right(lab, geom, 2, 3), geom, 11, 12)
    if truth is not None:
        np.testing.assert_array_equal(out, truth)
    right_x = physical_x(np.argwhere(out == 2).mean(axis=0), geom)
    left_x = physical_x(np.argwhere(out == 3).mean(axis=0), geom)
    assert right_x < body_midline_x(out, geom) < left_x  # LPS: patient right has the smaller x
    assert physical_x(np.argwhere(out == 11).mean(axis=0), geom) < physical_x(np.argwhere(out == 12).mean(axis=0),
                                                                                geom)


def test_left_right_fix_splits_a_label_spread_over_both_sides():
    lab = body()
    lab[lab == 3] = 2  # both kidneys called "right"
    out = fix_left_right(lab, geometry(lab.shape), 2, 3)
    np.testing.assert_array_equal(out, body())


def test_midline_without_great_vessels_uses_the_foreground():
    lab = body()
    lab[(lab == 8) | (lab == 9)] = 0
    geom = geometry(lab.shape)
    mid = body_midline_x(lab, geom)
    assert physical_x(np.array([0, 0, 5]), geom) < mid < physical_x(np.array([0, 0, 14]), geom)
    assert body_midline_x(np.zeros((2, 2, 2), np.uint8), geom) is None


def test_dice_convention():
    a = np.array([0, 1, 1, 0])
    assert dice(a, a, 1) == 1.0
    assert dice(a, np.array([0, 1, 0, 0]), 1) == pytest.approx(2 / 3)
    assert dice(a, a, 5) == 1.0  # absent from both
    assert dice(a, np.zeros(4, int), 1) == 0.0


def _cases() -> list[CvCase]:
    cases = []
    for i in range(3):
        ref = body()
        ref[2:4, 9:11, 10:12] = 6  # liver: legitimately two pieces in the reference
        ref[0, 10:12, 0:2] = 6
        pred = ref.copy()
        pred[5, 11, 19] = 1  # spurious speck of spleen; the true spleen below
        pred[5, 0, 0] = 6  # spurious speck of liver, smaller than the liver's true second piece
        pred[3:5, 0:2, 16:19] = 1
        ref[3:5, 0:2, 16:19] = 1
        if i == 0:
            pred = np.where(pred == 2, 3, np.where(pred == 3, 2, pred)).astype(np.uint8)  # swapped kidneys
        cases.append(CvCase(f"case_{i}", pred, ref, geometry(ref.shape)))
    return cases


def test_determine_accepts_only_rules_that_raise_the_mean_dice():
    rules = determine_postprocessing(_cases(), labels=range(1, 16))
    assert rules.left_right == [(2, 3)]  # adrenals were never wrong: no gain, not accepted
    assert 1 in rules.keep_largest  # the speck goes
    assert 6 not in rules.keep_largest  # would delete the true second piece of liver
    assert 2.0 <= rules.min_volume_mm3[6] <= 8.0  # drops the 2 mm^3 speck, keeps the 8 mm^3 piece
    assert set(rules.min_volume_mm3) == {6}
    assert rules.evidence[1]["dsc_after"] > rules.evidence[1]["dsc_before"]
    assert rules.evidence[2]["dsc_after"] == pytest.approx(1.0)
    for case in _cases():
        fixed = apply_postprocessing(case.prediction, case.geometry, rules)
        for lab in (1, 2, 3, 6):
            assert dice(fixed, case.reference, lab) == pytest.approx(1.0)


def test_rules_round_trip_through_json(tmp_path):
    rules = PostprocessingRules(left_right=[(2, 3)], keep_largest=[1, 6], min_volume_mm3={10: 150.0},
                                evidence={1: {"dsc_before": 0.8, "dsc_after": 0.9}})
    save_rules(rules, tmp_path / "pp.json")
    assert load_rules(tmp_path / "pp.json") == rules
    (tmp_path / "bad.json").write_text(json.dumps({"keep_largest": [1], "surprise": True}))
    with pytest.raises(InputError, match="surprise"):
        load_rules(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        load_rules(tmp_path / "missing.json")
    assert PostprocessingRules().empty and not rules.empty


def test_cases_from_folders_pair_predictions_with_references(tmp_path):
    lab = body()
    write_nifti(tmp_path / "pred" / "a.nii.gz", lab, (2.0, 1.0, 1.0))
    write_nifti(tmp_path / "ref" / "a.nii.gz", lab, (2.0, 1.0, 1.0))
    cases = cv_cases_from_folders([tmp_path / "pred"], tmp_path / "ref")
    pred, ref, geom = cases[0].load()
    assert [c.case_id for c in cases] == ["a"] and geom.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(pred, ref)
    write_nifti(tmp_path / "pred" / "b.nii.gz", lab)
    with pytest.raises(InputError, match="no reference"):
        cv_cases_from_folders([tmp_path / "pred"], tmp_path / "ref")


def test_determine_for_experiment_reads_fold_validations_and_stores_the_rules(tmp_path):
    from amos_autoseg.inference.postprocess_choice import determine_for_experiment
    from amos_autoseg.planning.dataset_ref import DatasetRef
    from tests.inference_fakes import tiny_plans

    data, exp = tmp_path / "data", tmp_path / "exp"
    entries = []
    for i, case in enumerate(_cases()[:2]):
        cid = f"amos_{i + 1:04d}"
        ref = np.where(case.reference > 3, 0, case.reference).astype(np.uint8)  # the tiny plan has labels 0..3
        pred = np.where(case.prediction > 3, 0, case.prediction).astype(np.uint8)
        write_nifti(data / "imagesTr" / f"{cid}.nii.gz", ref.astype(np.float32), (2.0, 1.0, 1.0))
        write_nifti(data / "labelsTr" / f"{cid}.nii.gz", ref, (2.0, 1.0, 1.0))
        write_nifti(exp / "3d_fullres" / f"fold_{i}" / "validation" / f"{cid}.nii.gz", pred, (2.0, 1.0, 1.0))
        entries.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    (data / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "spleen",
                                                              "2": "right kidney", "3": "left kidney"},
                                                   "training": entries}))
    tiny_plans().save(exp / "plans.json")
    DatasetRef(str(data), None, "amos", ["amos_0001", "amos_0002"], {}).save(exp / "dataset_ref.json")
    rules = determine_for_experiment(exp)
    assert rules.keep_largest == [1] and rules.left_right == [(2, 3)]
    assert load_rules(exp / "3d_fullres" / "postprocessing.json") == rules
    with pytest.raises(InputError, match="no validation predictions"):
        determine_for_experiment(exp, config="2d")
