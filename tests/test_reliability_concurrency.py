"""Five fold trainings and two sharded predictions started together on one experiment folder: every process
succeeds, every shared file stays whole, and each output is complete."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from reliability_helpers import TRAIN_FLAGS, copy_exp, copy_inputs, start_cli, temp_leftovers, trained  # noqa: F401 - fixture

SHARED = ("plans.json", "splits.json", "dataset_ref.json", "fingerprint.json")


@pytest.fixture(scope="module")
def inputs(trained, tmp_path_factory) -> Path:
    return copy_inputs(trained, tmp_path_factory.mktemp("inputs"))


def _wait_all(procs: dict[str, object], timeout_s: float = 240) -> dict[str, tuple[int, str]]:
    deadline = time.monotonic() + timeout_s
    out = {}
    try:
        for name, proc in procs.items():
            left = max(1.0, deadline - time.monotonic())
            rc = proc.wait(left)
            out[name] = (rc, proc.stderr.read().decode(errors="replace"))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    return out


def _assert_predictions(out: Path, inputs: Path) -> None:
    names = sorted(p.name for p in inputs.glob("*.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == names  # nothing else, no temp files
    for name in names:
        src, pred = sitk.ReadImage(str(inputs / name)), sitk.ReadImage(str(out / name))
        assert pred.GetSize() == src.GetSize() and np.allclose(pred.GetSpacing(), src.GetSpacing())
        assert np.allclose(pred.GetOrigin(), src.GetOrigin()) and np.allclose(pred.GetDirection(), src.GetDirection())
        labels = sitk.GetArrayFromImage(pred)
        assert labels.min() >= 0 and labels.max() <= 15


def test_five_trainings_and_two_prediction_shards_at_once(trained, inputs, tmp_path):
    from amos_autoseg.runtime.checkpoint import FINAL, LATEST, load_checkpoint

    exp = copy_exp(trained["exp"], tmp_path / "exp")
    shared_before = {n: (exp / n).read_bytes() for n in SHARED}
    out = tmp_path / "out"
    resume_flags = [*TRAIN_FLAGS]
    resume_flags[resume_flags.index("--epochs") + 1] = "2"
    procs = {
        # fold 0 continues to a second epoch, replacing the checkpoint the predictions load meanwhile
        "train 0": start_cli("train", exp, "--fold", "0", *resume_flags, "--resume"),
        **{f"train {k}": start_cli("train", exp, "--fold", str(k), *TRAIN_FLAGS) for k in range(1, 5)},
        **{f"predict {k}": start_cli("predict", exp, "--input", inputs, "--output", out, "--folds", "0",
                                     "--device", "cpu", "--no-tta", "--shard", f"{k}/2") for k in range(2)},
    }
    results = _wait_all(procs)
    failed = {name: err[-1500:] for name, (rc, err) in results.items() if rc != 0}
    assert not failed, failed

    assert {n: (exp / n).read_bytes() for n in SHARED} == shared_before
    for k in range(5):
        fold = exp / "3d_fullres" / f"fold_{k}"
        final = load_checkpoint(fold / FINAL)
        assert final["epoch"] == (2 if k == 0 else 1) and final["fold"] == str(k)
        assert load_checkpoint(fold / LATEST)["epoch"] == final["epoch"]
        for f in fold.rglob("*.json"):
            json.loads(f.read_text())
    assert not temp_leftovers(exp)
    _assert_predictions(out, inputs)


def test_a_starting_shard_leaves_the_unfinished_files_of_a_running_shard_alone(trained, inputs, tmp_path):
    """Shard 0 is caught with a temporary output on disk (its fsync slowed down) when shard 1 starts and cleans
    the temporary files left by killed runs: shard 1 must clean only its own cases'."""
    out = tmp_path / "out"
    args = ("predict", trained["exp"], "--input", inputs, "--output", out, "--device", "cpu", "--no-tta")
    first = start_cli(*args, "--shard", "0/2", slow="amos_autoseg.utils.atomic:_fsync_file:2.5")
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(n.startswith(".tmp-") for n in os.listdir(out))):
        assert first.poll() is None, first.stderr.read().decode()[-1500:]
        assert time.monotonic() < deadline, "shard 0 never wrote an output"
        time.sleep(0.01)
    second = start_cli(*args, "--shard", "1/2")
    results = _wait_all({"shard 0": first, "shard 1": second})
    failed = {name: err[-1500:] for name, (rc, err) in results.items() if rc != 0}
    assert not failed, failed
    _assert_predictions(out, inputs)
