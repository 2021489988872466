"""Model files: export, verified loading, refusal of unsafe or altered files, info, and bit-exact prediction."""
from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.packaging import archive, export_model, load_predictor, open_model, predict_from_model
from amos_autoseg.packaging.manifest import MANIFEST, sha256
from tests.packaging_fakes import CONFIG, make_experiment, write_case


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("pack"))


@pytest.fixture(scope="module")
def model(exp: Path) -> Path:
    return export_model(exp, exp.parent / "model.zip")


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy the zip ``src`` to ``dst`` with ``change(members: dict)`` applied to its members (in place)."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    change(members)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def relist(members: dict) -> None:
    """Recompute the manifest's member list so that only the change under test is wrong."""
    manifest = json.loads(members[MANIFEST])
    manifest["members"] = {n: {"size": len(d), "sha256": sha256(d)} for n, d in members.items() if n != MANIFEST}
    members[MANIFEST] = json.dumps(manifest).encode()


def test_weights_plan_and_rules_round_trip(exp: Path, model: Path):
    from amos_autoseg.inference.postprocess import load_rules
    from amos_autoseg.planning.plans import Plans
    from amos_autoseg.runtime.checkpoint import load_checkpoint

    package = open_model(model)
    assert [f.name for f in package.folds] == ["0", "1"]
    for fold in package.folds:
        state = load_checkpoint(exp / CONFIG / f"fold_{fold.name}" / "checkpoint_final.pt")["model"]
        assert sorted(fold.state_dict) == sorted(state)
        for key, value in state.items():
            assert fold.state_dict[key].dtype == value.dtype
            assert torch.equal(fold.state_dict[key], value), key
        assert fold.mirror_axes == (0, 1, 2)
    assert package.plans == Plans.load(exp / "plans.json")
    assert package.postprocessing == load_rules(exp / CONFIG / "postprocessing.json")
    assert package.labels == {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney"}
    assert package.fingerprint["per_modality"]["CT"]["cases"] == 3
    assert package.fingerprint["per_modality"]["CT"]["spacing_mm"]["max"] == [2.0, pytest.approx(1.7), 1.5]
    with zipfile.ZipFile(model) as zf:
        names = zf.namelist()
        assert names[0] == MANIFEST
        assert all(n.endswith((".json", ".safetensors")) for n in names)
        assert not any(b"secret_case" in zf.read(n) or str(exp).encode() in zf.read(n) for n in names)


def test_export_bytes_are_deterministic(exp: Path, model: Path, tmp_path: Path):
    import os

    for ckpt in exp.glob(f"{CONFIG}/fold_*/checkpoint_final.pt"):
        os.utime(ckpt, (1e9, 1e9))  # other timestamps must not change the bytes
    again = export_model(exp, tmp_path / "again.zip")
    assert again.read_bytes() == model.read_bytes()
    assert not list(tmp_path.glob(".tmp-*"))


def test_export_selected_folds_and_cli(exp: Path, tmp_path: Path):
    out = tmp_path / "fold1.zip"
    assert main(["export", str(exp), "--out", str(out), "--folds", "1"]) == 0
    package = open_model(out)
    assert [f.name for f in package.folds] == ["1"]
    with pytest.raises(UsageError, match="holds folds"):
        load_predictor(package, "cpu", folds=["0"])


def test_export_refuses_experiment_without_trained_folds(tmp_path: Path, capsys):
    empty = make_experiment(tmp_path, folds=())
    assert main(["export", str(empty), "--out", str(tmp_path / "m.zip")]) == 2
    assert "holds no trained fold" in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()


def test_tampered_member_is_refused_with_exit_2(model: Path, tmp_path: Path, capsys):
    def flip(members):
        data = bytearray(members["folds/fold_1.safetensors"])
        data[-3] ^= 0x01
        members["folds/fold_1.safetensors"] = bytes(data)

    bad = rewrite(model, tmp_path / "tampered.zip", flip)
    assert main(["info", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "folds/fold_1.safetensors" in err and "checksum" in err
    with pytest.raises(InputError, match="checksum"):
        load_predictor(bad, "cpu")


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("plans.json"), "listed in the manifest is missing"),
    (lambda m: m.update({"notes.json": b"{}"}), "not listed in the manifest"),
])
def test_missing_or_extra_member_is_refused(model: Path, tmp_path: Path, change, message):
    bad = rewrite(model, tmp_path / "bad.zip", change)
    with pytest.raises(InputError, match=message):
        open_model(bad)


class _Payload:
    """Unpickling this would create the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


@pytest.mark.parametrize("member, message", [
    ("folds/fold_0.pkl", "a pickle"),
    ("folds/fold_0.safetensors", "not valid safetensors"),
])
def test_pickle_member_is_refused_and_never_loaded(model: Path, tmp_path: Path, member, message):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(sentinel))

    def swap(members):
        del members["folds/fold_0.safetensors"]
        members[member] = evil
        relist(members)
        if member.endswith(".pkl"):
            model_json = json.loads(members["model.json"])
            model_json["folds"][0]["weights"] = member
            members["model.json"] = json.dumps(model_json).encode()
            relist(members)

    bad = rewrite(model, tmp_path / "evil.zip", swap)
    with pytest.raises(InputError, match=message):
        open_model(bad)
    assert not sentinel.exists()


@pytest.mark.parametrize("name", ["../escape.json", "/abs/model.json", "folds/../../x.json", "a\\..\\b.json"])
def test_path_traversal_member_is_refused(model: Path, tmp_path: Path, name):
    bad = tmp_path / "traversal.zip"
    shutil.copy(model, bad)
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"{}")
    with pytest.raises(InputError, match="unsafe name"):
        open_model(bad)


@pytest.mark.parametrize("version, accepted", [([1, 0], True), ([2, 0], False), ([1, 99], False), ([0, 9], False)])
def test_format_version_is_checked(model: Path, tmp_path: Path, version, accepted):
    def set_version(members):
        manifest = json.loads(members[MANIFEST])
        manifest["format_version"] = version
        members[MANIFEST] = json.dumps(manifest).encode()

    file = rewrite(model, tmp_path / "v.zip", set_version)
    if accepted:
        assert open_model(file).manifest.format_version == [1, 0]
    else:
        with pytest.raises(InputError, match="format version"):
            open_model(file)
        assert main(["info", "--model", str(file)]) == 2


def test_other_files_are_refused(model: Path, tmp_path: Path, monkeypatch):
    text = tmp_path / "not.zip"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a readable zip"):
        open_model(text)
    foreign = rewrite(model, tmp_path / "foreign.zip",
                      lambda m: m.update({MANIFEST: json.dumps({"format": "something-else"}).encode()}))
    with pytest.raises(InputError, match="is not an amos-autoseg-model file"):
        open_model(foreign)
    monkeypatch.setattr(archive, "MAX_JSON_BYTES", 2**20)
    bomb = rewrite(model, tmp_path / "bomb.zip", lambda m: m.update({"model.json": b" " * (2 * 2**20)}))
    with zipfile.ZipFile(bomb) as zf:
        assert zf.getinfo("model.json").compress_size < 2**20  # small on disk, large unpacked
    with pytest.raises(InputError, match="zip bomb|more than"):
        open_model(bomb)


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    (b'{"config": "3d_fullres"}', "does not fit the schema"),
])
def test_bad_json_member_with_a_valid_checksum_is_refused(model: Path, tmp_path: Path, content, message):
    def replace(members):
        members["model.json"] = content
        relist(members)

    with pytest.raises(InputError, match=message):
        open_model(rewrite(model, tmp_path / "json.zip", replace))


def test_too_many_or_too_large_members_are_refused(model: Path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    with pytest.raises(InputError, match="more than a model file has"):
        open_model(model)
    monkeypatch.setattr(archive, "MAX_MEMBERS", 256)
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(InputError, match="would unpack to"):
        open_model(model)


def test_info_model_text_and_json(model: Path, capsys):
    assert main(["info", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "configuration 3d_fullres: PlainConvUNet" in text
    assert "fold 0: 3 epochs" in text and "1 spleen" in text and "largest component [1]" in text
    assert main(["info", "--model", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "model" and info["format_version"] == [1, 0]
    assert [f["name"] for f in info["folds"]] == ["0", "1"]
    assert info["folds"][0]["validation"] == {"dsc": 0.5, "nsd": 0.25}
    assert info["parameters"] == sum(t.numel() for t in open_model(model).folds[0].state_dict.values())
    assert set(info["members"]) == {"model.json", "plans.json", "postprocessing.json", "fingerprint_summary.json",
                                    "folds/fold_0.safetensors", "folds/fold_1.safetensors"}


def test_info_experiment_text_and_json(exp: Path, capsys):
    latest_only = exp / CONFIG / "fold_2"
    latest_only.mkdir(exist_ok=True)
    (latest_only / "checkpoint_latest.pt").write_bytes(b"x")
    try:
        assert main(["info", str(exp), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        folds = info["configurations"][CONFIG]["folds"]
        assert {f: v["trained"] for f, v in folds.items()} == {"0": True, "1": True, "2": False}
        assert folds["0"]["validation"] == {"dsc": 0.5, "nsd": 0.25}
        assert info["plans"]["configurations"][CONFIG]["patch_size"] == [8, 16, 16]
        assert info["configurations"][CONFIG]["postprocessing"]["keep_largest"] == [1]
        assert main(["info", str(exp)]) == 0
        text = capsys.readouterr().out
        assert "folds trained ['0', '1']" in text and "fold 2: latest only" in text
    finally:
        shutil.rmtree(latest_only)
    assert main(["info"]) == 2


def test_prediction_from_model_equals_prediction_from_experiment(exp: Path, model: Path, tmp_path: Path):
    from amos_autoseg.inference.predictor import Predictor
    from amos_autoseg.inference.run import PredictOptions, predict_folder
    from amos_autoseg.io.image import read_image, read_label

    case = write_case(tmp_path / "in")
    image, geometry = read_image(case)
    from_zip = load_predictor(model, "cpu", tta=False).predict_image(image, geometry, "CT", with_probabilities=True)
    from_exp = Predictor.from_experiment(exp, device="cpu", tta=False).predict_image(
        image, geometry, "CT", with_probabilities=True)
    assert np.array_equal(from_zip[0], from_exp[0])
    assert np.array_equal(from_zip[1], from_exp[1])
    assert len(np.unique(from_zip[0])) > 1  # a prediction that says something

    opts = dict(input=tmp_path / "in", config=CONFIG, device="cpu", tta=True)
    predict_folder(PredictOptions(exp=exp, output=tmp_path / "out_exp", **opts))
    summary = predict_from_model(model, PredictOptions(exp=model, output=tmp_path / "out_zip", **opts))
    assert summary.predicted == ["amos_0001"]
    a, ga = read_label(tmp_path / "out_exp" / "amos_0001.nii.gz")
    b, gb = read_label(tmp_path / "out_zip" / "amos_0001.nii.gz")
    assert np.array_equal(a, b) and ga == gb == geometry
    again = predict_from_model(model, PredictOptions(exp=model, output=tmp_path / "out_zip", **opts))
    assert again.predicted == [] and again.skipped == 1
    with pytest.raises(UsageError, match="holds configuration"):
        predict_from_model(model, PredictOptions(exp=model, output=tmp_path / "o2", input=tmp_path / "in",
                                                 config="2d"))


def test_weights_that_do_not_fit_the_plan_are_refused(model: Path, tmp_path: Path):
    from safetensors.torch import load, save

    def shrink(members):
        state = load(members["folds/fold_0.safetensors"])
        key = next(iter(state))
        state[key] = state[key][:1].clone()
        members["folds/fold_0.safetensors"] = save(state)
        relist(members)

    bad = rewrite(model, tmp_path / "shrunk.zip", shrink)
    with pytest.raises(InputError, match="do not fit the plan"):
        load_predictor(bad, "cpu")


def test_member_bytes_read_back_exactly(model: Path):
    members = archive.read_members(model)
    manifest = json.loads(members[MANIFEST])
    for name, entry in manifest["members"].items():
        assert sha256(members[name]) == entry["sha256"] and len(members[name]) == entry["size"]
    assert io.BytesIO(members["folds/fold_0.safetensors"]).read(8)  # safetensors header length present
