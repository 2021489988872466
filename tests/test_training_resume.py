"""A training process killed with SIGKILL mid-epoch, then resumed, ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.options import TrainOptions
from test_training_loop import assert_same_training
from training_fakes import fake_collaborators, make_exp, tiny_plans

TESTS = Path(__file__).resolve().parent
EPOCHS, ITERS = 3, 5

CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from training_fakes import fake_collaborators
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.options import TrainOptions
train_fold(TrainOptions(exp=Path({exp!r}), fold="0", device="cpu", epochs={epochs}, iterations_per_epoch={iters},
                        val_iterations_per_epoch=1), fake_collaborators(delay_s=0.15))
"""


def _opts(exp: Path, **kw) -> TrainOptions:
    return TrainOptions(exp=exp, fold="0", device="cpu", epochs=EPOCHS, iterations_per_epoch=ITERS,
                        val_iterations_per_epoch=1, **kw)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    killed_exp = make_exp(tmp_path / "killed", tiny_plans())
    latest = killed_exp / "3d_fullres" / "fold_0" / ckpt.LATEST
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = CHILD.format(tests=str(TESTS), exp=str(killed_exp), epochs=EPOCHS, iters=ITERS)
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not latest.exists():
            if child.poll() is not None:
                pytest.fail(f"training child ended early: {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.05)
        time.sleep(0.4)  # into the second epoch (5 batches of >= 0.15 s each)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    saved = ckpt.load_checkpoint(latest)
    assert saved["epoch"] == 1 and not (latest.parent / ckpt.FINAL).exists()

    resumed = train_fold(_opts(killed_exp, resume=True), fake_collaborators())
    assert resumed.finished
    reference = train_fold(_opts(make_exp(tmp_path / "straight", tiny_plans())), fake_collaborators())
    assert_same_training(ckpt.load_checkpoint(reference.fold_dir / ckpt.FINAL),
                         ckpt.load_checkpoint(resumed.fold_dir / ckpt.FINAL))
    assert not [p for p in resumed.fold_dir.iterdir() if p.name.startswith(".tmp-")]
