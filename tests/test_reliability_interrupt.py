"""kill -9 at seeded random points of plan, train and predict, then the same command again: the outputs equal
those of an uninterrupted run bit for bit, and nothing a killed process left behind is taken for a finished file.

preprocess has the same test in tests/test_preprocessing_run.py::test_killed_run_resumes_to_identical_files.
Each stage is slowed down in the child (AMOS_TEST_SLOW, see reliability_helpers.CHILD) only so that the kill
lands inside the stage rather than after it; the slow-down changes no result.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from reliability_helpers import (TRAIN_FLAGS, copy_exp, copy_inputs, kill_when, run_cli, start_cli, temp_leftovers, trained,  # noqa: F401
                                 tree_bytes)

PLAN_FILES = ("fingerprint.json", "plans.json", "splits.json", "dataset_ref.json", "plan_config.json")


def _assert_only_finished(folder: Path) -> None:
    """Every file under ``folder`` except ``.tmp-*`` ones is complete: JSON parses, arrays and checkpoints load."""
    from amos_autoseg.io.image import read_image
    from amos_autoseg.runtime.checkpoint import load_checkpoint

    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(".tmp-"):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".pt":
            load_checkpoint(p)
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif p.name.endswith(".nii.gz"):
            read_image(p, check_finite=False)


def test_plan_killed_mid_fingerprint_then_rerun_equals_uninterrupted(trained, tmp_path):
    rng = random.Random(7)
    reference = {n: (trained["exp"] / n).read_bytes() for n in PLAN_FILES}
    exp = tmp_path / "exp"
    args = ("plan", trained["data"], "--exp", exp, "--workers", "0", "--preset", trained["preset"])
    cache = exp / "fingerprint_cases"
    killed = 0
    for _ in range(2):  # two kills at different random points, then a clean run
        proc = start_cli(*args, slow="amos_autoseg.fingerprint.extract:_run_job:0.25")
        killed += kill_when(proc, lambda: cache.is_dir() and any(cache.glob("*.npz")), rng.uniform(0.0, 0.6))
        assert not any((exp / n).exists() for n in PLAN_FILES)  # nothing is written before every case is done
        _assert_only_finished(exp)
    assert killed == 2
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert {n: (exp / n).read_bytes() for n in PLAN_FILES} == reference
    assert not temp_leftovers(exp)


def test_train_killed_mid_epoch_then_resumed_equals_uninterrupted(trained, tmp_path):
    from amos_autoseg.runtime.checkpoint import FINAL, LATEST, load_checkpoint
    from test_training_loop import assert_same_training

    flags = [*TRAIN_FLAGS]
    flags[flags.index("--epochs") + 1] = "2"
    flags[flags.index("--val-iters") + 1] = "1"  # a real validation loss to compare (0 iterations log NaN)
    straight = copy_exp(trained["exp"], tmp_path / "straight")
    res = run_cli("train", straight, "--fold", "1", *flags)
    assert res.returncode == 0, res.stderr

    exp = copy_exp(trained["exp"], tmp_path / "killed")
    fold = exp / "3d_fullres" / "fold_1"
    proc = start_cli("train", exp, "--fold", "1", *flags, slow="torch.optim:SGD.step:0.3")
    assert kill_when(proc, lambda: (fold / LATEST).is_file(), random.Random(3).uniform(0.0, 0.6))
    assert not (fold / FINAL).exists()
    assert load_checkpoint(fold / LATEST)["epoch"] == 1
    _assert_only_finished(exp)
    res = run_cli("train", exp, "--fold", "1", *flags, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_training(load_checkpoint(straight / "3d_fullres" / "fold_1" / FINAL), load_checkpoint(fold / FINAL))
    assert not temp_leftovers(exp)


@pytest.fixture(scope="module")
def four_inputs(trained, tmp_path_factory) -> Path:
    return copy_inputs(trained, tmp_path_factory.mktemp("four"))


def test_predict_killed_between_and_inside_cases_then_rerun_equals_uninterrupted(trained, four_inputs, tmp_path):
    common = ("--input", four_inputs, "--device", "cpu", "--no-tta", "--save-probabilities")
    ref = tmp_path / "ref"
    res = run_cli("predict", trained["exp"], *common, "--output", ref)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    rng = random.Random(11)
    # slow the label write so that some kills land after the .npz and before the .nii.gz of a case
    slow = "amos_autoseg.inference.run:predict_case:0.3;amos_autoseg.io.image:write_image:0.3"
    killed = 0
    for _ in range(2):
        proc = start_cli("predict", trained["exp"], *common, "--output", out, slow=slow)
        done = len(list(out.glob("*.nii.gz"))) if out.is_dir() else 0
        killed += kill_when(proc, lambda: out.is_dir() and len(list(out.glob("*.nii.gz"))) > done,
                            rng.uniform(0.0, 0.7))
        _assert_only_finished(out)
        assert len(list(out.glob("*.nii.gz"))) < 4
    assert killed == 2
    res = run_cli("predict", trained["exp"], *common, "--output", out)
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == tree_bytes(ref)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    assert not temp_leftovers(out)
