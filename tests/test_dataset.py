"""Reading a data folder in place: both layouts, modality and phase routing, refused dataset.json files."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from amos_autoseg.errors import InputError
from amos_autoseg.io.dataset import amos_modality, load_dataset, normalise_modality, read_meta_csv

AMOS_LABELS = {"0": "background", "1": "spleen", "2": "right kidney", "14": "bladder", "15": "prostate/uterus"}


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _amos(root: Path, train: list[int], val: list[int] = (), test: list[int] = (), **extra: object) -> Path:
    """An AMOS-layout dataset.json (MSD style); load_dataset opens no image, so empty files suffice."""
    spec: dict[str, object] = {"name": "AMOS", "labels": AMOS_LABELS, "modality": {"0": "CT"}}
    spec["training"] = [{"image": f"./imagesTr/amos_{i:04d}.nii.gz", "label": f"./labelsTr/amos_{i:04d}.nii.gz"}
                        for i in train]
    spec["validation"] = [{"image": f"./imagesVa/amos_{i:04d}.nii.gz", "label": f"./labelsVa/amos_{i:04d}.nii.gz"}
                          for i in val]
    spec["test"] = [{"image": f"./imagesTs/amos_{i:04d}.nii.gz"} for i in test]
    spec.update(extra)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def _nnunet(root: Path, ids: list[str], channels: dict[str, str], test_ids: list[str] = (), **extra: object) -> Path:
    for cid in ids:
        for c in range(len(channels)):
            _touch(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        _touch(root / "labelsTr" / f"{cid}.nii.gz")
    for cid in test_ids:
        for c in range(len(channels)):
            _touch(root / "imagesTs" / f"{cid}_{c:04d}.nii.gz")
    root.mkdir(parents=True, exist_ok=True)
    spec = {"channel_names": channels, "labels": {"background": 0, "liver": 1, "spleen": 2},
            "numTraining": len(ids), "file_ending": ".nii.gz", **extra}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_amos_layout_splits_ids_labels_and_id_rule(tmp_path: Path) -> None:
    ds = load_dataset(_amos(tmp_path / "amos", train=[507, 1, 499, 500], val=[12, 600], test=[5, 550]))
    assert ds.layout == "amos" and ds.name == "AMOS"
    assert ds.labels == {0: "background", 1: "spleen", 2: "right kidney", 14: "bladder", 15: "prostate/uterus"}
    assert ds.foreground_labels == [1, 2, 14, 15]
    assert [c.case_id for c in ds.training] == ["amos_0001", "amos_0499", "amos_0500", "amos_0507"]
    assert [c.modality for c in ds.training] == ["CT", "CT", "MRI", "MRI"]
    assert [(c.case_id, c.modality) for c in ds.split("validation")] == [("amos_0012", "CT"), ("amos_0600", "MRI")]
    test = ds.split("test")
    assert [c.case_id for c in test] == ["amos_0005", "amos_0550"] and all(c.label is None for c in test)
    first = ds.training[0]
    assert first.image == ds.root / "imagesTr" / "amos_0001.nii.gz" and first.images == (first.image,)
    assert first.label == ds.root / "labelsTr" / "amos_0001.nii.gz"
    assert first.phase == "unknown" and first.split == "train"
    assert [c.split for c in ds.cases] == ["train"] * 4 + ["validation"] * 2 + ["test"] * 2


def test_nnunet_layout_multichannel_name_to_id_labels_and_test_folder(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "Dataset001", ["liver_3", "liver_1"], {"0": "CT", "1": "CT"}, test_ids=["liver_9"])
    _touch(root / "imagesTr" / "README.txt")
    ds = load_dataset(root)
    assert ds.layout == "nnunet" and ds.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert [c.case_id for c in ds.training] == ["liver_1", "liver_3"]
    case = ds.training[0]
    assert [p.name for p in case.images] == ["liver_1_0000.nii.gz", "liver_1_0001.nii.gz"]
    assert case.label == root / "labelsTr" / "liver_1.nii.gz"
    assert case.modality == "CT"
    (test,) = ds.split("test")
    assert test.case_id == "liver_9" and test.label is None and len(test.images) == 2


def test_nnunet_layout_with_explicit_dataset_key(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    spec = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz",
            "dataset": {"b": {"images": ["./scans/b.nii.gz"], "label": "./segs/b.nii.gz"},
                        "a": {"images": ["./scans/a.nii.gz"], "label": "./segs/a.nii.gz"}}}
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(root)
    assert [(c.case_id, c.modality, c.image.name, c.label.name) for c in ds.training] == [
        ("a", "MRI", "a.nii.gz", "a.nii.gz"), ("b", "MRI", "b.nii.gz", "b.nii.gz")]
    spec["dataset"]["a"]["images"] = ["../../etc/passwd"]
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="outside the data folder"):
        load_dataset(root)


def test_nnunet_amos_conversion_either_ct_or_mr_routes_by_id(tmp_path: Path) -> None:
    ds = load_dataset(_nnunet(tmp_path / "d219", ["amos_0004", "amos_0540"], {"0": "either_CT_or_MR"}))
    assert [(c.case_id, c.modality) for c in ds.training] == [("amos_0004", "CT"), ("amos_0540", "MRI")]
    ds = load_dataset(_nnunet(tmp_path / "d223", ["amos_0004", "amos_0540"], {"0": "nonCT"}))
    assert [c.modality for c in ds.training] == ["CT", "MRI"]  # the id rule wins over the dataset-wide default


def test_modality_of_non_amos_ids_from_channel_names_or_refused(tmp_path: Path) -> None:
    assert load_dataset(_nnunet(tmp_path / "mr", ["p1"], {"0": "T2"})).training[0].modality == "MRI"
    root = _nnunet(tmp_path / "unknown", ["p1"], {"0": "PET"})
    with pytest.raises(InputError, match="cannot tell the modality of case 'p1'") as info:
        load_dataset(root)
    assert info.value.path == str(root / "dataset.json")


def test_per_entry_modality_and_phase_override_the_id_rule(tmp_path: Path) -> None:
    root = _amos(tmp_path / "a", train=[1, 2])
    spec = json.loads((root / "dataset.json").read_text())
    spec["training"][0].update(modality="MR", phase="T1 arterial")
    spec["training"][1].update(phase="venous")
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(root)
    assert [(c.modality, c.phase) for c in ds.training] == [("MRI", "T1 arterial"), ("CT", "venous")]
    spec["training"][0]["modality"] = "ultrasound"
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="unknown modality 'ultrasound'"):
        load_dataset(root)


def test_meta_csv_overrides_with_numeric_and_full_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _amos(tmp_path / "a", train=[1, 2, 507, 508])
    spec = json.loads((root / "dataset.json").read_text())
    spec["training"][3]["phase"] = "from-json"
    (root / "dataset.json").write_text(json.dumps(spec))
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,modality,phase\n2,MRI,T2\n0507,ct,portal venous\namos_0508,CT,\n9999,CT,x\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, meta=meta)
    got = {c.case_id: (c.modality, c.phase) for c in ds.training}
    assert got == {"amos_0001": ("CT", "unknown"), "amos_0002": ("MRI", "T2"),
                   "amos_0507": ("CT", "portal venous"), "amos_0508": ("CT", "from-json")}
    assert "9999" in caplog.text


def test_meta_csv_keeps_numeric_ids_of_other_datasets(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "n", ["0007", "0008"], {"0": "CT"})
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,modality\n0007,MR\n")
    ds = load_dataset(root, meta=meta)
    assert [(c.case_id, c.modality) for c in ds.training] == [("0007", "MRI"), ("0008", "CT")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("case_id,modality\n1,PET\n", "unknown modality 'PET'"),
        ("id,modality\n1,CT\n", "needs columns case_id and modality"),
        ("case_id,modality\n1,CT\n0001,MRI\n", "names the same case as '1'"),
        ("case_id,modality\namos_0001,CT\n2,CT\namos_0001,MRI\n", "names the same case as 'amos_0001'"),
        ("case_id,modality\n,CT\n", "empty case_id"),
    ],
)
def test_bad_meta_csv_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_dataset(_amos(tmp_path / "a", train=[1]), meta=meta)
    assert str(meta) in str(info.value)


def test_missing_meta_csv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="meta CSV not found"):
        read_meta_csv(tmp_path / "nope.csv")


def test_dataset_json_not_json_missing_or_not_an_object(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    with pytest.raises(InputError, match="not found") as info:
        load_dataset(root)
    assert info.value.path == str(root / "dataset.json")
    (root / "dataset.json").write_text('{"labels": {"0": "background"}, "training": [')
    with pytest.raises(InputError, match="not valid JSON") as info:
        load_dataset(root)
    assert info.value.path == str(root / "dataset.json")
    (root / "dataset.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_dataset(root)
    with pytest.raises(InputError, match="data folder not found"):
        load_dataset(tmp_path / "absent")


def test_duplicated_case_id_is_refused(tmp_path: Path) -> None:
    root = _amos(tmp_path / "a", train=[1, 2])
    spec = json.loads((root / "dataset.json").read_text())
    spec["test"] = [{"image": "./imagesTs/amos_0002.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="'amos_0002' appears more than once"):
        load_dataset(root)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "./imagesTr/../../outside.nii.gz", "/etc/passwd"])
def test_paths_escaping_the_data_folder_are_refused(tmp_path: Path, bad: str) -> None:
    root = _amos(tmp_path / "a", train=[1])
    spec = json.loads((root / "dataset.json").read_text())
    spec["training"][0]["label"] = bad
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="outside the data folder"):
        load_dataset(root)


def test_symlinked_files_inside_the_folder_are_allowed(tmp_path: Path) -> None:
    store = tmp_path / "store" / "amos_0001.nii.gz"
    _touch(store)
    root = _amos(tmp_path / "a", train=[1])
    (root / "imagesTr").mkdir()
    os.symlink(store, root / "imagesTr" / "amos_0001.nii.gz")
    ds = load_dataset(root)
    assert ds.training[0].image == ds.root / "imagesTr" / "amos_0001.nii.gz"
    assert ds.training[0].image.resolve() == store.resolve()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"1": "spleen"}, "no background"),
        ({"background": 0, "both": [1, 2]}, "regions are not supported"),
        ({"background": 0, "a": 1, "b": 1}, "same id twice"),
        ({"background": 0, "a": "one"}, "names to integer ids"),
        ({}, "missing or empty"),
    ],
)
def test_bad_label_tables_are_refused(tmp_path: Path, labels: dict, message: str) -> None:
    root = _amos(tmp_path / "a", train=[1], labels=labels)
    with pytest.raises(InputError, match=message):
        load_dataset(root)


def test_nnunet_layout_without_training_images_is_refused(tmp_path: Path) -> None:
    root = _nnunet(tmp_path / "n", [], {"0": "CT"})
    (root / "imagesTr").mkdir()
    with pytest.raises(InputError, match="holds no training images"):
        load_dataset(root)


def test_modality_helpers() -> None:
    assert amos_modality("amos_0499") == "CT" and amos_modality("amos_0500") == "MRI"
    assert amos_modality("liver_1") is None and amos_modality("amos_12") is None
    assert [normalise_modality(v, "x") for v in ("ct", " CT ", "MR", "mri", "nonCT", "T1w")] == [
        "CT", "CT", "MRI", "MRI", "MRI", "MRI"]
    with pytest.raises(InputError, match="unknown modality"):
        normalise_modality("xray", "where.csv")
