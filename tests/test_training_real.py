"""Training with the real stages on tiny NIfTIs: preprocess -> train (CLI) -> final validation, resume with the real
augmenting loader, and batches reproducible from seeds (in-process and in worker processes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amos_autoseg.cli.main import main
from amos_autoseg.io.image import read_label
from amos_autoseg.preprocessing.run import preprocess_experiment
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.collaborators import Collaborators, StreamSpec
from configs_fixtures import write_case
from test_training_loop import assert_same_training
from training_fakes import tiny_plans

CASES = ["amos_0001", "amos_0002", "amos_0003", "amos_0004", "amos_0600", "amos_0601"]
SPLITS = [{"train": CASES[:2] + CASES[4:5], "val": [CASES[2], CASES[5]]},
          {"train": CASES[2:], "val": CASES[:2]}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, a preprocessed template experiment without training results)."""
    from dataclasses import replace

    from amos_autoseg.planning.plans import NormalizationPlan

    data = tmp_path_factory.mktemp("data")
    # MRI cases at CT's body and organ levels (40 and +80), as this module's runs were made with
    training = [write_case(data, cid, i, mri_intensities=(40.0, 80.0)) for i, cid in enumerate(CASES)]
    (data / "dataset.json").write_text(json.dumps(
        {"name": "tiny", "labels": {"0": "background", "1": "liver", "2": "spleen"}, "training": training}))
    exp = tmp_path_factory.mktemp("exp")
    plans = tiny_plans(batch_size=2)
    plans = replace(plans, modalities=["CT", "MRI"], normalization={
        "CT": NormalizationPlan("ct", clip_low=-200.0, clip_high=300.0, mean=80.0, std=60.0),
        "MRI": NormalizationPlan("zscore", use_mask=True)})
    plans.save(exp / "plans.json")
    from amos_autoseg.io.dataset import load_dataset
    from amos_autoseg.planning.dataset_ref import DatasetRef

    cases = load_dataset(data).training
    DatasetRef(str(data), None, "amos", [c.case_id for c in cases], {c.case_id: c.modality for c in cases}).save(
        exp / "dataset_ref.json")
    (exp / "splits.json").write_text(json.dumps(SPLITS))
    preprocess_experiment(exp, "3d_fullres", workers=0)
    return data, exp


def _copy_exp(template: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(template, dest)
    return dest


ARGS = ["--device", "cpu", "--epochs", "2", "--iters-per-epoch", "3", "--val-iters", "1", "--workers", "0"]


def test_cli_trains_and_validates_with_the_real_stages(prepared, tmp_path):
    data, template = prepared
    exp = _copy_exp(template, tmp_path / "exp")
    assert main(["train", str(exp), "--fold", "0", *ARGS]) == 0
    fold = exp / "3d_fullres" / "fold_0"
    metrics = json.loads((fold / "validation" / "metrics.json").read_text())
    assert set(metrics) >= {"nsd_tolerance_mm", "per_case", "per_label", "per_modality", "mean"}
    assert sorted(metrics["per_case"]) == sorted(SPLITS[0]["val"])
    assert metrics["per_case"]["amos_0601"]["modality"] == "MRI"
    assert set(metrics["per_case"]["amos_0003"]["labels"]) == {"1", "2"}
    assert all(0.0 <= v[m] <= 1.0 for v in metrics["per_label"].values() for m in ("dsc", "nsd"))
    pred, geo = read_label(fold / "validation" / "amos_0003.nii.gz")
    ref, ref_geo = read_label(data / "labelsTr" / "amos_0003.nii.gz")
    assert pred.shape == ref.shape and geo.mismatch(ref_geo) is None
    final = ckpt.load_checkpoint(fold / ckpt.FINAL)
    assert final["epoch"] == 2 and (fold / "progress.png").exists()


def test_resume_with_the_real_loader_equals_uninterrupted(prepared, tmp_path):
    _, template = prepared
    straight = _copy_exp(template, tmp_path / "straight")
    split = _copy_exp(template, tmp_path / "split")
    assert main(["train", str(straight), "--fold", "1", *ARGS, "--no-validation"]) == 0
    assert main(["train", str(split), "--fold", "1", *ARGS, "--no-validation", "--stop-after-epoch", "1"]) == 0
    assert not (split / "3d_fullres" / "fold_1" / ckpt.FINAL).exists()
    assert main(["train", str(split), "--fold", "1", *ARGS, "--no-validation", "--resume"]) == 0
    assert_same_training(ckpt.load_checkpoint(straight / "3d_fullres" / "fold_1" / ckpt.FINAL),
                         ckpt.load_checkpoint(split / "3d_fullres" / "fold_1" / ckpt.FINAL))


def _batches(spec: StreamSpec, start: int, n: int) -> list[dict]:
    return list(Collaborators().batch_stream(spec)(start, n))


def test_augmented_batches_are_reproducible_from_seeds(prepared):
    _, exp = prepared
    spec = StreamSpec(exp / "preprocessed" / "3d_fullres", CASES[:4], [16, 32, 32], 2, 0.33, seed=11,
                      augment=True, mirror_axes=[0, 1, 2])
    first = _batches(spec, 3, 2)
    again = _batches(spec, 4, 1)  # a stream restarted at step 4 (a resume) gives step 4's batch
    in_worker = _batches(StreamSpec(**{**spec.__dict__, "workers": 1}), 3, 2)
    other_seed = _batches(StreamSpec(**{**spec.__dict__, "seed": 12}), 3, 2)
    assert torch.equal(first[1]["data"], again[0]["data"]) and torch.equal(first[1]["target"], again[0]["target"])
    for a, b in zip(first, in_worker):
        assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(first[0]["data"], other_seed[0]["data"])
    assert first[0]["data"].shape == (2, 1, 16, 32, 32) and first[0]["target"].dtype == torch.int16
