"""Per-case scores, empty rules, per-organ tolerances, aggregation and the tolerance files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.evaluation import aggregate, evaluate_case, load_tolerance_file, parse_tolerance
from amos_autoseg.evaluation.dice import dice
from amos_autoseg.evaluation.tolerance import check_covers, flare22_path

sd = pytest.importorskip("surface_distance")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the reference's scipy imports


def reference_case(pred, ref, spacing, labels, tol):
    """What a careful user gets from surface-distance with the CONTRACT empty rules."""
    out = {}
    for label in labels:
        r, p = ref == label, pred == label
        if not r.any() or not p.any():
            v = 1.0 if not r.any() and not p.any() else 0.0
            out[label] = {"dsc": v, "nsd": v}
            continue
        t = tol[label] if isinstance(tol, dict) else tol
        dist = sd.compute_surface_distances(r, p, spacing)
        out[label] = {"dsc": float(sd.compute_dice_coefficient(r, p)),
                      "nsd": float(sd.compute_surface_dice_at_tolerance(dist, t))}
    return out


def assert_scores_equal(ours, expected, tol=1e-9):
    assert set(ours) == set(expected)
    for label in expected:
        for m in ("dsc", "nsd"):
            assert ours[label][m] == pytest.approx(expected[label][m], abs=tol), (label, m)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.tuples(*[st.floats(0.3, 4.0)] * 3), st.floats(0.0, 6.0))
def test_case_scores_equal_reference_on_random_label_maps(seed, spacing, tol):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(2, 14, 3))
    ref = rng.integers(0, 6, shape).astype(np.uint8)
    pred = ref.copy()
    flip = rng.random(shape) < 0.3
    pred[flip] = rng.integers(0, 6, int(flip.sum()))
    ref[ref == 4] = 0  # label 4: in the prediction only (or nowhere)
    pred[pred == 5] = 0  # label 5: in the reference only (or nowhere)
    labels = [1, 2, 3, 4, 5, 6]  # label 6: absent from both
    ours = evaluate_case(pred, ref, spacing, labels, tol)
    assert_scores_equal(ours, reference_case(pred, ref, spacing, labels, tol))


def test_empty_rules():
    ref = np.zeros((8, 8, 8), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4, 1:4] = 1  # 1: reference only
    pred[5:7, 5:7, 5:7] = 2  # 2: prediction only
    ref[4:6, 1:3, 5:8] = pred[4:6, 1:3, 5:8] = 3  # 3: identical
    scores = evaluate_case(pred, ref, (1.0, 1.0, 1.0), [1, 2, 3, 4], 1.0)
    assert scores == {1: {"dsc": 0.0, "nsd": 0.0}, 2: {"dsc": 0.0, "nsd": 0.0},
                      3: {"dsc": 1.0, "nsd": 1.0}, 4: {"dsc": 1.0, "nsd": 1.0}}


def test_dsc_by_hand():
    ref = np.zeros((4, 6, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, 1:3] = 1
    pred[1:3, 1:3, 2:4] = 1  # half of the cube overlaps: 4 of 8 voxels
    assert evaluate_case(pred, ref, (1.0, 1.0, 1.0), [1])[1]["dsc"] == pytest.approx(0.5)
    assert dice(ref == 1, pred == 1) == pytest.approx(0.5)
    assert np.isnan(dice(ref == 9, pred == 9))


def test_per_organ_tolerances_apply_to_their_own_organ():
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[2:8, 10:16, 10:16] = 2
    pred = np.roll(ref, 2, axis=2)  # every surface moves 2 voxels = 2 mm along x
    spacing = (1.0, 1.0, 1.0)
    tight = evaluate_case(pred, ref, spacing, [1, 2], 1.0)
    mixed = evaluate_case(pred, ref, spacing, [1, 2], {1: 1.0, 2: 2.0})
    assert mixed[1] == tight[1]
    assert tight[2]["nsd"] < 1.0 and mixed[2]["nsd"] == pytest.approx(1.0)
    assert_scores_equal(mixed, reference_case(pred, ref, spacing, [1, 2], {1: 1.0, 2: 2.0}))
    with pytest.raises(ValueError, match="label 2"):
        evaluate_case(pred, ref, spacing, [1, 2], {1: 1.0})


def test_inputs_checked_and_bool_masks_accepted():
    a = np.zeros((3, 4, 5), bool)
    a[1, 1, 1:3] = True
    assert evaluate_case(a, a, (1, 1, 1), [1]) == {1: {"dsc": 1.0, "nsd": 1.0}}
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(a, np.zeros((3, 4, 6), np.uint8), (1, 1, 1), [1])
    with pytest.raises(ValueError, match="positive"):
        evaluate_case(a, a, (1, 1, 1), [0, 1])
    with pytest.raises(ValueError, match="integer"):
        evaluate_case(a.astype(np.float32), a, (1, 1, 1), [1])


def test_aggregate_means_over_labels_of_means_over_cases():
    per_case = {
        "amos_0001": {"modality": "CT", "labels": {"1": {"dsc": 1.0, "nsd": 0.5}, "2": {"dsc": 0.0, "nsd": 0.0}}},
        "amos_0002": {"modality": "CT", "labels": {"1": {"dsc": 0.5, "nsd": 0.5}, "2": {"dsc": 1.0, "nsd": 1.0}}},
        "amos_0600": {"modality": "MRI", "labels": {"1": {"dsc": 0.0, "nsd": 0.2}, "2": {"dsc": 0.3, "nsd": 0.4}}},
    }
    m = aggregate(per_case, [1, 2], 1.0)
    assert m["nsd_tolerance_mm"] == 1.0
    assert m["per_label"]["1"] == pytest.approx({"dsc": 0.5, "nsd": 0.4})
    assert m["per_label"]["2"] == pytest.approx({"dsc": 1.3 / 3, "nsd": 1.4 / 3})
    assert m["mean"]["dsc"] == pytest.approx((0.5 + 1.3 / 3) / 2)
    assert m["per_modality"]["CT"] == pytest.approx({"dsc": (0.75 + 0.5) / 2, "nsd": (0.5 + 0.5) / 2})
    assert m["per_modality"]["MRI"] == pytest.approx({"dsc": 0.15, "nsd": 0.3})
    assert m["per_modality_label"]["CT"]["2"] == pytest.approx({"dsc": 0.5, "nsd": 0.5})
    assert m["cases_per_modality"] == {"CT": 2, "MRI": 1}
    assert list(m["per_case"]) == sorted(per_case)
    assert aggregate(per_case, [1, 2], {1: 3.0, 2: 2.0})["nsd_tolerance_mm"] == {"1": 3.0, "2": 2.0}


def test_flare22_file_is_labelled_and_complete():
    raw = json.loads(flare22_path().read_text())
    assert "FLARE22-style" in raw["name"] and "NOT official AMOS" in raw["description"]
    tol = load_tolerance_file(flare22_path())
    assert sorted(tol) == list(range(1, 16))
    # values from the FLARE22 evaluation: liver 5, kidneys 3, spleen 3, pancreas 5, aorta 2, IVC 2,
    # adrenals 2, gallbladder 2, esophagus 3, stomach 5, duodenum 7; 14 and 15 are this project's 3 mm
    assert tol == {1: 3.0, 2: 3.0, 3: 3.0, 4: 2.0, 5: 3.0, 6: 5.0, 7: 5.0, 8: 2.0, 9: 2.0, 10: 5.0,
                   11: 2.0, 12: 2.0, 13: 7.0, 14: 3.0, 15: 3.0}
    assert parse_tolerance("flare22") == tol


def test_parse_tolerance_numbers_and_files(tmp_path):
    assert parse_tolerance("1.0") == 1.0
    assert parse_tolerance(2) == 2.0
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"1": 2.5, "2": 4}))
    assert parse_tolerance(str(flat)) == {1: 2.5, 2: 4.0}
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"name": "mine", "tolerances_mm": {"3": 1}}))
    assert parse_tolerance(str(nested)) == {3: 1.0}
    with pytest.raises(UsageError):
        parse_tolerance("-1")
    with pytest.raises(UsageError):
        parse_tolerance("one")
    with pytest.raises(InputError, match="not found"):
        parse_tolerance(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    for text, problem in (("{", "not valid JSON"), ('{"liver": 5}', "not a label id"),
                          ('{"1": "5"}', "not a number"), ('{"1": -2}', "0 or more"), ("[]", "must map")):
        bad.write_text(text)
        with pytest.raises(InputError, match=problem):
            parse_tolerance(str(bad))
    with pytest.raises(InputError, match=r"\[2\]"):
        check_covers({1: 1.0}, [1, 2], "tol.json")
    check_covers(1.0, [1, 2], "tol.json")
