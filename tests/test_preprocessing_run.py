"""The preprocess stage: storage, report, shards, re-runs, a killed run resumed, the command line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.io.image import Geometry
from amos_autoseg.planning.plans import ConfigurationPlan, NetworkPlan, NormalizationPlan, Plans
from amos_autoseg.preprocessing import storage
from amos_autoseg.preprocessing.properties import CaseProperties
from amos_autoseg.preprocessing.run import preprocess_experiment
from amos_autoseg.utils.shard import Shard

from conftest import oblique_direction, write_nifti

N_CASES = 8
LABELS = {0: "background", 1: "liver", 2: "spleen"}


def _plans() -> Plans:
    net = NetworkPlan("PlainConvUNet", [[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [3, 3, 3]], [8, 16], [2, 2], [2])
    cfg = ConfigurationPlan("3d_fullres", 3, [2.0, 1.5, 1.5], [16, 32, 32], 2, [20, 30, 30], net, False, "fr")
    return Plans(
        dataset_name="tiny", labels=LABELS, modalities=["CT", "MRI"], transpose_forward=[0, 1, 2],
        transpose_backward=[0, 1, 2], original_median_spacing=[4.0, 1.2, 1.2], original_median_shape=[10, 30, 30],
        normalization={"CT": NormalizationPlan("ct", clip_low=-300.0, clip_high=400.0, mean=60.0, std=90.0),
                       "MRI": NormalizationPlan("zscore", use_mask=True)},
        configurations={"3d_fullres": cfg},
    )


def _write_case(root: Path, case_id: str, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    shape = (10 + seed % 3, 30, 28 + seed % 4)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = y**2 / 0.7 + x**2 / 0.8 < 1
    image = np.where(body, rng.normal(40, 15, shape), -1000.0 if seed % 2 else 0.0).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[body & ((y + 0.2) ** 2 + x**2 < 0.2)] = 1
    label[body & ((y - 0.4) ** 2 + (x - 0.3) ** 2 < 0.05)] = 2
    geo = dict(spacing_zyx=(4.0 + seed % 2, 1.2, 1.1), origin=(5.0 * seed, -3.0, 7.0),
               direction=oblique_direction(15.0 + seed, flip_x=bool(seed % 2)))
    write_nifti(root / "imagesTr" / f"{case_id}.nii.gz", image, **geo)
    write_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label, **geo)
    return {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ids = [f"amos_{i:04d}" for i in range(1, N_CASES - 1)] + ["amos_0600", "amos_0601"]  # CT and MRI
    training = [_write_case(root, cid, i) for i, cid in enumerate(ids)]
    spec = {"name": "tiny", "labels": {str(k): v for k, v in LABELS.items()}, "training": training}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def _exp(tmp: Path, data_dir: Path, name: str) -> Path:
    exp = tmp / name
    exp.mkdir()
    _plans().save(exp / "plans.json")
    ref = {"data_dir": str(data_dir), "meta": None, "case_ids": None}
    (exp / "dataset_ref.json").write_text(json.dumps(ref))
    return exp


def _case_files(exp: Path) -> dict[str, bytes]:
    folder = exp / "preprocessed" / "3d_fullres"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith("report")}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    exp = _exp(tmp_path_factory.mktemp("full"), data_dir, "exp")
    return exp, preprocess_experiment(exp, "3d_fullres", workers=0)


def test_full_run_writes_every_case_and_a_report(full_run: tuple[Path, dict]) -> None:
    exp, report = full_run
    folder = exp / "preprocessed" / "3d_fullres"
    ids = storage.list_cases(folder)
    assert len(ids) == N_CASES and report["cases_processed"] == N_CASES
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["cases_processed"] == report["cases_processed"] and on_disk["seconds"] > 0
    assert 0 < report["peak_rss_mib_max"] < 4096 and len(report["peak_rss_mib_per_worker"]) == 1
    case = storage.open_case(folder, "amos_0600")
    assert case.properties.modality == "MRI" and case.properties.labels_present == [1, 2]
    assert case.data.shape == (1, *case.properties.shape_after_resample)
    assert case.seg.shape == case.data.shape and case.seg.dtype == np.int16
    patch = np.asarray(case.data[:, 1:5, 3:13, 2:9])
    assert patch.shape == (1, 4, 10, 7) and np.isfinite(patch).all()
    assert np.all(np.asarray(case.seg)[0][tuple(case.class_locations[1].T)] == 1)
    geo = case.properties.geometry
    assert isinstance(geo, Geometry) and np.allclose(geo.spacing, (4.0, 1.2, 1.1))


def test_rerun_skips_finished_cases(full_run: tuple[Path, dict]) -> None:
    exp, _ = full_run
    before = _case_files(exp)
    report = preprocess_experiment(exp, "3d_fullres", workers=0)
    assert report["cases_processed"] == 0 and report["cases_skipped"] == N_CASES
    assert _case_files(exp) == before


def test_shard_union_equals_the_full_run(tmp_path: Path, data_dir: Path, full_run: tuple[Path, dict]) -> None:
    exp = _exp(tmp_path, data_dir, "sharded")
    r0 = preprocess_experiment(exp, "3d_fullres", workers=0, shard=Shard(0, 2))
    r1 = preprocess_experiment(exp, "3d_fullres", workers=2, shard=Shard(1, 2))  # the worker-pool path
    assert r0["cases_processed"] == 4 and r1["cases_processed"] == 4
    assert len(r1["peak_rss_mib_per_worker"]) == 2
    folder = exp / "preprocessed" / "3d_fullres"
    assert (folder / "report_shard_0_of_2.json").is_file() and (folder / "report_shard_1_of_2.json").is_file()
    assert _case_files(exp) == _case_files(full_run[0])


def test_killed_run_resumes_to_identical_files(tmp_path: Path, data_dir: Path, full_run: tuple[Path, dict]) -> None:
    exp = _exp(tmp_path, data_dir, "killed")
    folder = exp / "preprocessed" / "3d_fullres"
    cmd = [sys.executable, "-m", "amos_autoseg", "preprocess", str(exp), "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and storage.list_cases(folder)) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = storage.list_cases(folder)
    assert 1 <= len(done) < N_CASES, "the run was not killed mid-way"
    assert not (folder / "report.json").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((folder / "report.json").read_text())
    assert report["cases_skipped"] == len(done) and report["cases_processed"] == N_CASES - len(done)
    assert not any(p.name.startswith(".tmp-") for p in folder.iterdir())
    assert _case_files(exp) == _case_files(full_run[0])


def test_slurm_array_variables_pick_the_shard(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    exp = _exp(tmp_path, data_dir, "slurm")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert main(["preprocess", str(exp), "--workers", "0"]) == 0
    folder = exp / "preprocessed" / "3d_fullres"
    report = json.loads((folder / "report_shard_2_of_3.json").read_text())
    assert report["shard"] == "2/3" and storage.list_cases(folder) == ["amos_0003", "amos_0006"]


@pytest.mark.parametrize("fmt", storage.FORMATS)
def test_storage_round_trip_and_atomic_finish(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 9, 20, 18)).astype(np.float32)
    seg = rng.integers(-1, 3, size=(9, 20, 18)).astype(np.int16)
    geo = Geometry((9, 20, 18), (3.0, 1.0, 1.0), (0.0, 0.0, 0.0), oblique_direction())
    props = CaseProperties("c1", "CT", "unknown", geo, [0, 1, 2], [9, 20, 18], [[0, 9], [0, 20], [0, 18]],
                           [9, 20, 18], [3.0, 1.0, 1.0], [3.0, 1.0, 1.0], [9, 20, 18], [1, 2], n_channels=2)
    locs = {1: np.argwhere(seg == 1)[:5], 2: np.zeros((0, 3), dtype=np.int32)}
    storage.write_case(tmp_path, "c1", data, seg, props, locs, fmt=fmt, patch_size=(8, 16, 16))
    case = storage.open_case(tmp_path, "c1")
    np.testing.assert_array_equal(np.asarray(case.data[:, 2:7, 5:15, 1:4]), data[:, 2:7, 5:15, 1:4])
    np.testing.assert_array_equal(np.asarray(case.seg[:]), seg[None])
    assert case.properties == props
    np.testing.assert_array_equal(case.class_locations[1], locs[1])
    assert case.class_locations[2].shape == (0, 3)
    (tmp_path / "c1.json").unlink()  # as if killed before the last file
    assert not storage.is_done(tmp_path, "c1") and storage.list_cases(tmp_path) == []


def test_missing_plan_is_exit_code_2(tmp_path: Path, capsys) -> None:
    assert main(["preprocess", str(tmp_path / "nowhere"), "--workers", "0"]) == 2
    assert "plans.json" in capsys.readouterr().err
