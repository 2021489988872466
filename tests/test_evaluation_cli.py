"""`amos-autoseg evaluate` end to end: pairing, modality, labels, tolerances, errors and the report files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import oblique_direction, write_nifti

from amos_autoseg.cli.main import main
from amos_autoseg.errors import InputError
from amos_autoseg.evaluation import evaluate_case, evaluate_folders, write_reports
from amos_autoseg.io.image import read_header

SPACING = (2.5, 0.8, 0.7)
GEOMETRY = {"spacing_zyx": SPACING, "origin": (-12.0, 30.5, 7.0), "direction": oblique_direction(25, flip_x=True)}
CONTRACT_KEYS = {"nsd_tolerance_mm", "per_case", "per_label", "per_modality", "mean"}


def _label_map(rng: np.random.Generator, shape=(10, 24, 22)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for label in (1, 2, 6, 11):
        z, y, x = (int(rng.integers(1, s - 5)) for s in shape)
        lab[z:z + int(rng.integers(2, 5)), y:y + int(rng.integers(2, 8)), x:x + int(rng.integers(2, 8))] = label
    return lab


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Two CT cases and one MRI case on an oblique, flipped, anisotropic grid; predictions are perturbed."""
    rng = np.random.default_rng(7)
    arrays = {}
    for case in ("amos_0004", "amos_0017", "amos_0540"):
        ref = _label_map(rng)
        pred = np.roll(ref, (1, int(rng.integers(1, 3))), axis=(1, 2))
        pred[0, :3, :3] = 12  # a false positive for label 12
        write_nifti(tmp_path / "ref" / f"{case}.nii.gz", ref, **GEOMETRY)
        write_nifti(tmp_path / "pred" / f"{case}.nii.gz", pred, **GEOMETRY)
        arrays[case] = (pred, ref)
    return tmp_path / "pred", tmp_path / "ref", arrays


def _run(*argv: str) -> int:
    return main(["evaluate", *argv])


def test_evaluate_writes_contract_metrics_csv_and_report(folders, tmp_path):
    pred_dir, ref_dir, arrays = folders
    out = tmp_path / "eval" / "metrics.json"
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out), "--workers", "0") == 0
    metrics = json.loads(out.read_text())
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["nsd_tolerance_mm"] == 1.0
    assert set(metrics["per_label"]) == {str(k) for k in range(1, 16)}
    assert {c: v["modality"] for c, v in metrics["per_case"].items()} == {
        "amos_0004": "CT", "amos_0017": "CT", "amos_0540": "MRI"}
    spacing = read_header(ref_dir / "amos_0004.nii.gz").spacing  # as stored (float32 in NIfTI)
    assert spacing == pytest.approx(SPACING)
    for case, (pred, ref) in arrays.items():
        expected = evaluate_case(pred, ref, spacing, list(range(1, 16)), 1.0)
        got = metrics["per_case"][case]["labels"]
        assert {int(k): v for k, v in got.items()} == expected
    assert metrics["per_case"]["amos_0004"]["labels"]["12"] == {"dsc": 0.0, "nsd": 0.0}  # false positive
    assert metrics["per_case"]["amos_0004"]["labels"]["15"] == {"dsc": 1.0, "nsd": 1.0}  # absent from both
    assert 0.0 < metrics["per_label"]["6"]["nsd"] < 1.0
    ct = [metrics["per_case"][c]["labels"]["1"]["dsc"] for c in ("amos_0004", "amos_0017")]
    assert metrics["per_modality_label"]["CT"]["1"]["dsc"] == pytest.approx(np.mean(ct))
    # headline means: over the labels some reference holds (1, 2, 6, 11), each over the cases holding it
    assert {k for k, v in metrics["per_label"].items() if v["dsc"] is not None} == {"1", "2", "6", "11"}
    assert metrics["per_label"]["12"] == {"dsc": None, "nsd": None}  # only predicted: no headline mean
    assert metrics["mean"]["dsc"] == pytest.approx(np.mean([metrics["per_label"][k]["dsc"]
                                                            for k in ("1", "2", "6", "11")]))
    conv = metrics["amos_convention"]  # every case-label counted, absent from both as 1
    assert conv["per_label"]["15"] == {"dsc": 1.0, "nsd": 1.0} and conv["per_label"]["12"]["dsc"] == 0.0
    assert conv["mean"]["dsc"] == pytest.approx(np.mean([v["dsc"] for v in conv["per_label"].values()]))
    assert metrics["case_labels"] == {**metrics["case_labels"], "in_reference": 12, "absent_both": 30,
                                      "predicted_only": 3}

    rows = list(csv.DictReader((out.parent / "metrics.csv").open()))
    assert len(rows) == 3 * 15
    assert {r["case"] for r in rows} == set(arrays)
    row = next(r for r in rows if r["case"] == "amos_0540" and r["label"] == "6")
    assert row["modality"] == "MRI" and row["name"] == "liver" and row["in_ref"] == "1" and row["in_pred"] == "1"
    fp_row = next(r for r in rows if r["case"] == "amos_0004" and r["label"] == "12")
    assert (fp_row["in_ref"], fp_row["in_pred"], fp_row["dsc"]) == ("0", "1", "0.000000")
    assert metrics["per_case"]["amos_0004"]["ref_labels"] == [1, 2, 6, 11]
    assert "| ivc | 9 | 1 | 0/3 |" in (out.parent / "report.md").read_text()
    assert float(row["dsc"]) == pytest.approx(metrics["per_case"]["amos_0540"]["labels"]["6"]["dsc"], abs=1e-6)

    report = (out.parent / "report.md").read_text()
    assert "| organ | id | tol mm | in ref | DSC all | NSD all | DSC CT | NSD CT | DSC MRI | NSD MRI |" in report
    section = report.split("## Per organ")[1].split("\n\n")[2]  # the table after the heading and its note
    organ_rows = section.splitlines()[2:]
    order = [int(ln.split("|")[2]) for ln in organ_rows]
    dsc = {int(k): v["dsc"] for k, v in metrics["per_label"].items()}
    assert sorted(order) == list(range(1, 16))
    scored = [k for k in order if dsc[k] is not None]
    assert order[:len(scored)] == scored  # organs no reference holds come last
    assert [dsc[k] for k in scored] == sorted(dsc[k] for k in scored)  # hardest organ first
    assert "report.png" in report
    assert (out.parent / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_missing_and_extra_predictions(folders, tmp_path, capsys):
    pred_dir, ref_dir, _ = folders
    (pred_dir / "amos_0017.nii.gz").unlink()
    (pred_dir / "amos_0004.npz").write_bytes(b"probabilities")  # --save-probabilities output: not a case
    write_nifti(pred_dir / "amos_0999.nii.gz", np.zeros((10, 24, 22), np.uint8), **GEOMETRY)
    out = tmp_path / "m" / "metrics.json"
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "amos_0017" in err and "--allow-missing" in err and str(pred_dir) in err
    assert not out.exists()
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out), "--allow-missing") == 0
    metrics = json.loads(out.read_text())
    assert metrics["missing_predictions"] == ["amos_0017"] and metrics["extra_predictions"] == ["amos_0999"]
    missing = metrics["per_case"]["amos_0017"]
    assert missing["missing_prediction"] is True
    assert all(v == {"dsc": 0.0, "nsd": 0.0} for v in missing["labels"].values())
    assert "amos_0999" not in metrics["per_case"]
    assert "Missing predictions, scored 0:** amos_0017" in (out.parent / "report.md").read_text()


def test_grid_mismatch_names_the_prediction(folders, tmp_path, capsys):
    pred_dir, ref_dir, arrays = folders
    pred, _ = arrays["amos_0540"]
    shifted = dict(GEOMETRY, origin=(-10.0, 30.5, 7.0))
    write_nifti(pred_dir / "amos_0540.nii.gz", pred, **shifted)
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(tmp_path / "x.json")) == 2
    err = capsys.readouterr().err
    assert "amos_0540.nii.gz" in err and "origin" in err


def test_labels_meta_and_per_organ_tolerance(folders, tmp_path):
    pred_dir, ref_dir, arrays = folders
    ds = tmp_path / "dataset.json"  # nnU-Net layout labels: name -> id, only three organs
    ds.write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "liver": 6, "adrenal": 11},
                              "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,modality\n4,MRI\n")
    out = tmp_path / "m" / "metrics.json"
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out), "--labels", str(ds),
                "--meta", str(meta), "--nsd-tolerance-mm", "flare22") == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["per_label"]) == {"1", "6", "11"}
    assert metrics["label_names"] == {"1": "spleen", "6": "liver", "11": "adrenal"}
    assert metrics["nsd_tolerance_mm"] == {"1": 3.0, "6": 5.0, "11": 2.0}
    assert metrics["per_case"]["amos_0004"]["modality"] == "MRI"  # the CSV wins over the id rule
    assert metrics["per_case"]["amos_0017"]["modality"] == "CT"
    pred, ref = arrays["amos_0017"]
    spacing = read_header(ref_dir / "amos_0017.nii.gz").spacing
    expected = evaluate_case(pred, ref, spacing, [1, 6, 11], {1: 3.0, 6: 5.0, 11: 2.0})
    assert {int(k): v for k, v in metrics["per_case"]["amos_0017"]["labels"].items()} == expected
    rows = list(csv.DictReader((out.parent / "metrics.csv").open()))
    assert {(r["label"], r["nsd_tolerance_mm"]) for r in rows} == {("1", "3"), ("6", "5"), ("11", "2")}

    short = tmp_path / "short.json"
    short.write_text(json.dumps({"1": 2.0}))
    assert _run("--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out), "--labels", str(ds),
                "--nsd-tolerance-mm", str(short)) == 2


def test_workers_give_the_same_result_as_serial(folders):
    pred_dir, ref_dir, _ = folders
    serial = evaluate_folders(pred_dir, ref_dir, labels=[1, 2, 6, 11, 12], workers=0)
    parallel = evaluate_folders(pred_dir, ref_dir, labels=[1, 2, 6, 11, 12], workers=2)
    assert serial == parallel


def test_python_api_names_the_folder_and_reports_any_metrics(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        evaluate_folders(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no reference"):
        evaluate_folders(tmp_path / "empty", tmp_path / "empty")
    per_case = {"c1": {"modality": "unknown", "labels": {"3": {"dsc": 0.5, "nsd": 0.25}}}}
    from amos_autoseg.evaluation import aggregate

    paths = write_reports(aggregate(per_case, [3], 2.0), tmp_path / "r" / "metrics.json")
    assert all(p.is_file() for p in paths.values())
    assert "| label 3 | 3 | 2 | – | 50.00 | 25.00 | 50.00 | 25.00 |" in paths["md"].read_text()

    per_case["c1"]["labels"]["3"]["nsd"] = float("nan")  # not JSON: nothing at all may be written
    with pytest.raises(ValueError):
        write_reports(aggregate(per_case, [3], 2.0), tmp_path / "bad" / "metrics.json")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
