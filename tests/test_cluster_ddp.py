"""`torchrun --nproc-per-node 2 -m amos_autoseg train` on CPU (gloo) trains like one process with the same global
batch: the loss curves agree, only rank 0 writes, and the log lines carry the rank."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.fingerprint import extract
from cluster_helpers import SAMPLES_TOTAL, clean_env

TRAIN = ["--fold", "0", "--device", "cpu", "--epochs", "2", "--iters-per-epoch", "2", "--val-iters", "0",
         "--no-validation", "--workers", "0", "--no-compile"]


@pytest.fixture(scope="module")
def experiment(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset planned and preprocessed, with a narrow network (2 to 16 features) so that CPU steps are
    quick; the patch, batch size and everything else are the plan's."""
    exp = tmp_path_factory.mktemp("ddp") / "exp"
    full = extract.extract_fingerprint
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "extract_fingerprint",
                   lambda ds, w, cache_dir=None, samples_total=0: full(ds, w, cache_dir, SAMPLES_TOTAL))
        assert main(["plan", str(tiny_dataset), "--exp", str(exp), "--workers", "0", "--configs", "3d_fullres"]) == 0
    plans = json.loads((exp / "plans.json").read_text())
    net = plans["configurations"]["3d_fullres"]["network"]
    net["features_per_stage"] = [max(2, f // 16) for f in net["features_per_stage"]]
    (exp / "plans.json").write_text(json.dumps(plans, indent=2))
    assert main(["preprocess", str(exp), "--workers", "0"]) == 0
    assert plans["configurations"]["3d_fullres"]["batch_size"] >= 2  # something to split over 2 ranks
    return exp


def _losses(exp: Path) -> list[float]:
    with open(exp / "3d_fullres" / "fold_0" / "log.csv", newline="") as fh:
        return [float(row["train_loss"]) for row in csv.DictReader(fh)]


def test_two_gloo_ranks_train_like_one_process(experiment: Path, tmp_path: Path) -> None:
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    shutil.copytree(experiment, ddp)
    shutil.copytree(experiment, single)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "amos_autoseg", "train", str(ddp), *TRAIN], env=clean_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout + run.stderr
    assert "[rank 0]" in log and "[rank 1]" in log and "gloo" in log
    assert main(["train", str(single), *TRAIN]) == 0
    distributed, alone = _losses(ddp), _losses(single)
    assert len(distributed) == len(alone) == 2
    assert distributed == pytest.approx(alone, rel=1e-4, abs=1e-5)
    assert alone[-1] != alone[0]  # the curve moves: equal curves are not two constant lines
    fold = ddp / "3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pt").is_file()
    assert json.loads((fold / "resolved_config.json").read_text())["world_size"] == 2
    assert not list(fold.rglob(".tmp-*"))
