"""Cross-validation folds: nnU-Net's KFold for one modality, stratified for CT+MRI, kept across re-plans."""
from __future__ import annotations

import json

import pytest

from amos_autoseg.errors import InputError
from amos_autoseg.planning.splits import case_set, ensure_splits, load_splits, make_splits

# Validation folds of sklearn's KFold(n_splits=5, shuffle=True, random_state=12345) over the sorted ids, as
# nnU-Net v2 makes them (computed once with scikit-learn; the tests do not need it).
KFOLD_12 = [
    ["amos_0001", "amos_0004", "amos_0009"],
    ["amos_0008", "amos_0011", "amos_0012"],
    ["amos_0007", "amos_0010"],
    ["amos_0002", "amos_0005"],
    ["amos_0003", "amos_0006"],
]
KFOLD_23 = [
    ["case_03", "case_08", "case_10", "case_17", "case_19"],
    ["case_00", "case_07", "case_12", "case_15", "case_16"],
    ["case_06", "case_11", "case_14", "case_18", "case_20"],
    ["case_09", "case_13", "case_21", "case_22"],
    ["case_01", "case_02", "case_04", "case_05"],
]


def test_single_modality_equals_nnunet_kfold():
    ids = [f"amos_{i:04d}" for i in range(12, 0, -1)]  # unsorted input on purpose
    splits = make_splits({c: "CT" for c in ids})
    assert [f["val"] for f in splits] == KFOLD_12
    for fold in splits:
        assert fold["train"] == sorted(set(ids) - set(fold["val"]))
    splits_23 = make_splits({f"case_{i:02d}": "MRI" for i in range(23)})
    assert [f["val"] for f in splits_23] == KFOLD_23


def test_mixed_modalities_are_stratified_and_balanced():
    modality = {f"amos_{i:04d}": "CT" for i in range(1, 24)}
    modality.update({f"amos_{i:04d}": "MRI" for i in range(501, 508)})
    splits = make_splits(modality, seed=3)
    vals = [f["val"] for f in splits]
    assert sorted(c for v in vals for c in v) == sorted(modality)  # every case validated exactly once
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1
    mri_counts = [sum(modality[c] == "MRI" for c in v) for v in vals]
    assert sorted(mri_counts) == [1, 1, 1, 2, 2]  # 7 MRI over 5 folds
    assert all(sum(modality[c] == "CT" for c in v) in (4, 5) for v in vals)  # 23 CT over 5 folds


def test_seed_changes_folds_and_is_reproducible():
    modality = {f"c{i:02d}": "CT" for i in range(20)}
    assert make_splits(modality, seed=1) == make_splits(modality, seed=1)
    assert make_splits(modality, seed=1) != make_splits(modality, seed=2)


def test_too_few_cases():
    with pytest.raises(InputError, match="cannot fill 5 folds"):
        make_splits({"a": "CT", "b": "CT", "c": "MRI", "d": "MRI"})


def test_ensure_keeps_existing_for_same_cases(tmp_path):
    path = tmp_path / "splits.json"
    modality = {f"c{i:02d}": "CT" for i in range(10)}
    custom = [{"train": [c for c in modality if c != v], "val": [v]} for v in list(modality)[:5]]
    custom[0]["train"] = sorted(modality)[1:]  # a hand-made split, not what make_splits would give
    path.write_text(json.dumps(custom))
    splits, made = ensure_splits(path, modality)
    assert not made and splits == custom
    assert json.loads(path.read_text()) == custom


def test_ensure_refuses_changed_case_set_unless_forced(tmp_path):
    path = tmp_path / "splits.json"
    first, made = ensure_splits(path, {f"c{i:02d}": "CT" for i in range(10)})
    assert made and load_splits(path) == first
    more = {f"c{i:02d}": "CT" for i in range(11)}
    with pytest.raises(InputError, match="force-splits"):
        ensure_splits(path, more)
    assert load_splits(path) == first  # untouched after the refusal
    again, made = ensure_splits(path, more, force=True)
    assert made and case_set(again) == set(more) and load_splits(path) == again


@pytest.mark.parametrize("content", ['{"train": []}', '[{"train": ["a"], "val": ["a"]}]', "[", '[{"val": []}]'])
def test_broken_splits_file_is_an_input_error(tmp_path, content):
    path = tmp_path / "splits.json"
    path.write_text(content)
    with pytest.raises(InputError, match="splits.json"):
        load_splits(path)
