"""The GPU bench of issue 15 works before a card is at hand: its dry run on the CPU, and the pieces it needs to run
without SimpleITK on the GPU machine (fingerprints of arrays, centre crops, nnU-Net's TIFF input, stand-ins)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE_ROWS = [
    "training s/it, real data loading",
    "GPU waits for data, % of the iteration",
    "ours default, augmentation in the CPU loader instead",
    "pure step s/it (ceiling, no data loading)",
    "training with data, share of the ceiling's speed",
    "1 fold, no TTA: s per CT end to end",
    "5 folds + TTA: s per CT end to end",
    "Dice % on 1 held-out cases",
    "Dice %, ours default with augmentation in the CPU loader",
]
TARGETS = ["training >= 1.75x nnU-Net's iterations per second (ours default)",
           "training >= 1.75x nnU-Net's iterations per second (ours at nnU-Net's precision)",
           "training with data >= 90% of our own step ceiling",
           "5 folds + TTA >= 3.0x faster end to end",
           "5 folds + TTA < 30 s per CT",
           "1 fold without TTA >= 10.0x faster end to end",
           "Dice within 0.5 point of the CPU-augmentation path"]


def test_dry_run(tmp_path: Path) -> None:
    """``gpu_bench.py --dry-run`` without nnU-Net (which CI does not have): every section of ours runs, and the
    tables come out whole, the targets last (one run, checked by the two functions below)."""
    tmp = tmp_path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_bench.py", "--dry-run", "--no-nnunet", "--out",
                           str(tmp / "out"), "--work", str(tmp / "work")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp / "out" / "gpu_bench.json").read_text())
    check_figures(doc)
    check_tables(doc, proc.stdout)


def check_figures(doc: dict) -> None:
    """Every variant, prediction and score of ours is there and plausible (our processes refuse SimpleITK, so
    the run itself shows that our side needs none, as on the GPU machine)."""
    assert {"meta", "sections", "dice", "table", "targets"} <= set(doc)
    status = {name: sec["status"] for name, sec in doc["sections"].items()}
    assert status == {"setup": "done", "train_nnunet": "off (--no-nnunet)", "train_ours": "done",
                      "predict_ours": "done", "predict_nnunet": "off (--no-nnunet)"}
    meta = doc["meta"]
    assert meta["dry_run"] and meta["device"] == "cpu" and meta["same_precision"] == "fp32"
    assert meta["plan_source"].startswith("ours") and len(meta["plan"]["patch"]) == 3
    variants = doc["sections"]["train_ours"]["result"]["variants"]
    assert set(variants) == {"same", "default", "cpu_aug"}
    for name, v in variants.items():
        assert v["status"] == "done", name
        assert v["iterations"] == meta["iterations"] == sum(meta["windows"][k] for k in
                                                            ("warmup", "drain", "timed", "synced"))
        assert v["s_per_it"] > 0 and v["ceiling_s_per_it"] > 0 and 0.0 <= v["wait_fraction"] <= 1.0
        assert not v["compiled"] and v["precision"] in ("fp32", "bf16")
    assert [variants[n]["augment_on"] for n in ("same", "default", "cpu_aug")] == ["device", "device", "cpu"]
    rows = doc["sections"]["predict_ours"]["result"]["rows"]
    assert [(r["precision"], r["folds"], r["tta"]) for r in rows] == [
        ("fp32", 1, False), ("fp32", 5, True), ("auto", 1, False), ("auto", 5, True)]
    for r in rows:
        assert r["total_s"] == pytest.approx(r["preprocess_s"] + r["network_s"] + r["export_s"])
    assert set(doc["dice"]) == {"ours_same", "ours_default", "ours_cpu_aug"}
    assert all(0.0 <= d["mean"] <= 100.0 for d in doc["dice"].values())


def check_tables(doc: dict, printed: str) -> None:
    """The rows of both tables, in order, each target judged or saying why not; the targets table printed last."""
    measurements = [row[1] for row in doc["table"]["rows"]]
    assert len(measurements) == len(TABLE_ROWS)
    for row, start in zip(measurements, TABLE_ROWS):
        assert row.startswith(start), row
    targets = doc["targets"]["rows"]
    assert [t[0][: len(s)] for t, s in zip(targets, TARGETS)] == TARGETS
    for target in targets:  # without nnU-Net the comparisons cannot be judged; ours-only targets can
        assert target[2] in ("met", "missed") or target[2].startswith("n/a")
    assert [t[2] for t in targets if "nnU-Net" in t[0]] == ["n/a (a figure is missing)"] * 4
    assert targets[-1][2] in ("met", "missed")
    nnunet_cells = [row[2] for row in doc["table"]["rows"] if row[2]]
    assert nnunet_cells == ["off (--no-nnunet)"] * 7
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("| Dice within 0.5 point")  # the targets table comes last
    assert any(line.startswith("DRY RUN") for line in lines)


def test_fingerprint_of_arrays_equals_fingerprint_of_files(tmp_path: Path) -> None:
    """The planner path of the bench without nnU-Net: the fingerprint of arrays in memory is the one the plan
    stage computes from the same cases on disk."""
    from amos_autoseg.fingerprint.extract import analyze_arrays, extract_fingerprint, fingerprint_from_results
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.io.image import read_image, read_label
    from amos_autoseg.synth import write_dataset

    write_dataset(tmp_path / "data", n_ct=2, n_mri=1, seed=3, size="tiny")
    dataset = load_dataset(tmp_path / "data")
    from_files = extract_fingerprint(dataset, workers=0, samples_total=3000)
    results = []
    for case in dataset.training:
        image, geometry = read_image(case.images[0])
        label, _ = read_label(case.label)
        results.append(analyze_arrays(case.case_id, case.modality, case.phase, image[None], label,
                                      geometry.spacing, 1000))
    from_arrays = fingerprint_from_results(dataset.name, dataset.labels, results, 1000)
    assert from_arrays.to_json() == from_files.to_json()


def test_centre_crop_keeps_the_physical_position_of_every_voxel() -> None:
    from amos_autoseg.io.image import Geometry
    from benchmarks.gpubench.data import centre_crop

    direction = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # flipped x, y and z swapped
    geometry = Geometry((9, 20, 31), (2.5, 0.8, 0.7), (10.0, -5.0, 30.0), direction)
    image = np.arange(9 * 20 * 31, dtype=np.float32).reshape(9, 20, 31)
    part_image, part_label, part = centre_crop(image, image.astype(np.uint8), geometry, [4, 20, 10])
    assert part.shape == part_image.shape == part_label.shape == (4, 20, 10)
    start = [(9 - 4) // 2, 0, (31 - 10) // 2]
    assert part_image[0, 0, 0] == image[tuple(start)]

    def world(g: Geometry, zyx: list[int]) -> np.ndarray:
        offset = np.asarray(zyx[::-1], float) * np.asarray(g.spacing[::-1], float)
        return np.asarray(g.origin) + np.asarray(g.direction).reshape(3, 3) @ offset

    for index in ([0, 0, 0], [3, 19, 9], [1, 7, 4]):
        original = [i + s for i, s in zip(index, start)]
        assert np.allclose(world(part, index), world(geometry, original))


def test_nnunet_tiff_dataset_holds_the_arrays_and_their_spacing(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    from benchmarks.gpubench import data

    cases = data.make_cases(tmp_path, 1, 0, "tiny", 5, 0, [10, 30, 30])
    folder = data.write_nnunet_raw(tmp_path / "raw", tmp_path, cases)
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["file_ending"] == ".tif" and spec["overwrite_image_reader_writer"] == "Tiff3DIO"
    assert spec["numTraining"] == 1 and spec["labels"]["liver"] == 6
    case = data.of_role(cases, "train")[0]
    image, seg = data.load_arrays(tmp_path, case)
    cid = case["case_id"]
    assert np.array_equal(tifffile.imread(folder / "imagesTr" / f"{cid}_0000.tif"), image.astype(np.int16))
    assert np.array_equal(tifffile.imread(folder / "labelsTr" / f"{cid}.tif"), seg)
    for sub in ("imagesTr", "labelsTr"):  # nnU-Net's Tiff3DIO takes the spacing in array order from <case>.json
        assert json.loads((folder / sub / f"{cid}.json").read_text())["spacing"] == case["geometry"]["spacing"]


def test_standins_import_but_refuse_any_use() -> None:
    from benchmarks.gpubench.standins._missing import MissingModuleError

    sitk = importlib.import_module("benchmarks.gpubench.standins.SimpleITK")
    orientations = importlib.import_module("benchmarks.gpubench.standins.nibabel.orientations")
    with pytest.raises(MissingModuleError, match="SimpleITK.ReadImage"):
        sitk.ReadImage("x.nii.gz")
    with pytest.raises(MissingModuleError, match="io_orientation"):
        orientations.io_orientation(np.eye(4))
    with pytest.raises(MissingModuleError):
        sitk.Image.GetSize()
    with pytest.raises(AttributeError):
        sitk.__path_hooks__  # noqa: B018 - dunder names stay missing, so imports treat it as a plain module


def _doc_with_figures() -> dict:
    """A results document as the card would give it (every section done), with round figures."""
    def train(s_per_it: float, ceiling: float) -> dict:
        return {"status": "done", "s_per_it": s_per_it, "wait_fraction": 0.25, "ceiling_s_per_it": ceiling}

    def predict(precision: str | None, one: float, five: float) -> list[dict]:
        return [{"precision": precision, "folds": folds, "tta": folds == 5, "preprocess_s": 1.0,
                 "network_s": total - 3.0, "export_s": 2.0, "total_s": total} for folds, total in ((1, one), (5, five))]

    return {
        "meta": {"workers": 12, "same_precision": "fp16", "iterations": 200, "heldout_cases": 2,
                 "test_shape": [200, 512, 512]},
        "sections": {
            "setup": {"status": "done", "result": {}},
            "train_nnunet": {"status": "done", "result": train(0.10, 0.05)},
            "train_ours": {"status": "done", "result": {"variants": {
                "same": train(0.06, 0.05), "default": train(0.05, 0.046), "cpu_aug": train(0.09, 0.046)}}},
            "predict_ours": {"status": "done", "result": {"rows": predict("fp16", 4.0, 36.0)
                                                         + predict("auto", 3.5, 35.0)}},
            "predict_nnunet": {"status": "done", "result": {"rows": predict(None, 40.0, 120.0)}},
        },
        "dice": {"nnunet": {"mean": 79.0}, "ours_same": {"mean": 79.5}, "ours_default": {"mean": 80.0},
                 "ours_cpu_aug": {"mean": 80.6}},
    }


def test_targets_are_judged_from_the_figures() -> None:
    """What the card's run will print: each target's figure and verdict, from nnU-Net's and our figures."""
    from benchmarks.gpubench import report

    doc = _doc_with_figures()
    doc.update(report.build(doc))
    targets = [(row[1], row[2]) for row in doc["targets"]["rows"]]
    assert targets == [("2.00x", "met"),  # 0.10 / 0.05 s per iteration, ours default
                       ("1.67x", "missed"),  # 0.10 / 0.06, ours at fp16
                       ("92.0%", "met"),  # ceiling 0.046 s / 0.05 s with data
                       ("3.4x", "met"),  # 120 s / 35 s, 5 folds + TTA
                       ("35.0 s", "missed"),  # not under 30 s
                       ("11.4x", "met"),  # 40 s / 3.5 s, 1 fold
                       ("0.60 points", "missed")]  # |80.0 - 80.6|
    def row(start: str) -> list[str]:
        return next(r for r in doc["table"]["rows"] if r[1].startswith(start))[2:]

    assert row("training s/it") == ["0.1000", "0.0600", "0.0500", "1.67x / 2.00x"]
    assert row("5 folds + TTA") == ["120.0 (1.0 + 117.0 + 2.0)", "36.0 (1.0 + 33.0 + 2.0)",
                                    "35.0 (1.0 + 32.0 + 2.0)", "3.3x / 3.4x"]
    assert row("Dice % on 2 held-out") == ["79.0", "79.5", "80.0", ""]
    markdown = report.markdown(doc)
    assert markdown.splitlines()[-1] == ("| Dice within 0.5 point of the CPU-augmentation path at equal budget | "
                                         "0.60 points | missed |")
