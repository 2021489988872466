"""SIGTERM/SIGINT stop a training run at the next step boundary with a checkpoint of the partial epoch; the
continued run ends bit-identical to an uninterrupted one.

The signal is sent by the process to itself while the batch stream produces a chosen step, so the stop lands at
a known step (in training, in the online validation, at an epoch's last step) on every run.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.collaborators import Collaborators
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.options import TrainOptions
from amos_autoseg.utils.interrupt import Interrupted
from test_training_loop import assert_same_training
from training_fakes import fake_collaborators, fake_stream, make_exp, tiny_plans

EPOCHS, ITERS, VAL_ITERS = 3, 4, 2


def _opts(exp: Path, **kw) -> TrainOptions:
    return TrainOptions(exp=exp, fold="0", device="cpu", epochs=EPOCHS, iterations_per_epoch=ITERS,
                        val_iterations_per_epoch=VAL_ITERS, **kw)


def _signalling(signum: int, stream: str, at_step: int) -> Collaborators:
    """Fake batches; the process signals itself while the ``stream`` ("train" or "val") makes step ``at_step``."""
    def batch_stream(spec):
        inner = fake_stream(spec)

        def stream_fn(start: int, n: int):
            for step, batch in zip(range(start, start + n), inner(start, n)):
                if (stream == "train") == spec.augment and step == at_step:
                    os.kill(os.getpid(), signum)
                yield batch

        return stream_fn

    return Collaborators(in_channels=lambda folder, case_id: 1, batch_stream=batch_stream,
                         validate=lambda **kw: None)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    result = train_fold(_opts(make_exp(tmp_path_factory.mktemp("straight"), tiny_plans())), fake_collaborators())
    return ckpt.load_checkpoint(result.fold_dir / ckpt.FINAL)


@pytest.mark.parametrize("signum, stream, at_step, epoch, steps_done", [
    (signal.SIGTERM, "train", 5, 1, 2),  # training step 1 of epoch 1 is under way: it ends, step 2 does not start
    (signal.SIGINT, "val", 2, 1, ITERS),  # in epoch 1's online validation: training done, validation redone later
    (signal.SIGTERM, "train", 7, 1, ITERS),  # epoch 1's last training step: stop before its validation
])
def test_a_stop_inside_an_epoch_checkpoints_it_and_the_continued_run_equals_an_uninterrupted_one(
        tmp_path, uninterrupted, signum, stream, at_step, epoch, steps_done):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(Interrupted) as stopped:
        train_fold(_opts(exp), _signalling(signum, stream, at_step))
    assert {s: signal.getsignal(s) for s in before} == before  # the run's handlers are gone again
    assert stopped.value.exit_code == 128 + signum
    assert f"in epoch {epoch + 1} after step {steps_done} of {ITERS}" in str(stopped.value)
    assert "run the same command to continue" in str(stopped.value)
    fold = exp / "3d_fullres" / "fold_0"
    saved = ckpt.load_checkpoint(fold / ckpt.LATEST)
    assert saved["epoch"] == epoch and saved["global_step"] == epoch * ITERS + steps_done
    assert len(saved["partial_epoch"]["losses"]) == steps_done and not (fold / ckpt.FINAL).exists()

    resumed = train_fold(_opts(exp), fake_collaborators())
    assert resumed.finished
    assert_same_training(uninterrupted, ckpt.load_checkpoint(fold / ckpt.FINAL))


def test_a_stop_at_an_epoch_end_keeps_that_epochs_checkpoint(tmp_path, uninterrupted):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    # the signal arrives while the last validation batch of epoch 0 is made: epoch 0 completes, nothing more runs
    with pytest.raises(Interrupted, match="after epoch 1;"):
        train_fold(_opts(exp), _signalling(signal.SIGTERM, "val", VAL_ITERS - 1))
    saved = ckpt.load_checkpoint(exp / "3d_fullres" / "fold_0" / ckpt.LATEST)
    assert (saved["epoch"], saved["global_step"], saved["partial_epoch"]) == (1, ITERS, None)
    train_fold(_opts(exp), fake_collaborators())
    assert_same_training(uninterrupted, ckpt.load_checkpoint(exp / "3d_fullres" / "fold_0" / ckpt.FINAL))


def _agreement_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    from amos_autoseg.training import ddp
    from amos_autoseg.training.stop import StopFlag

    ctx = ddp.init_from_env("cpu")
    flag = StopFlag(ctx)
    stopped_at = None
    for call in range(1, 100):
        if rank == 1 and call == 11:  # only rank 1 is signalled, at its 11th step boundary
            flag.signum = signal.SIGTERM
        if flag.requested():
            stopped_at = call
            break
    Path(out, f"rank{rank}").write_text(f"{stopped_at} {flag.signum}")
    ddp.shutdown(ctx)


def test_ranks_agree_on_the_step_to_stop_at(tmp_path):
    import torch.multiprocessing as mp

    from amos_autoseg.training.stop import SYNC_EVERY
    from test_ddp import _free_port

    mp.spawn(_agreement_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [(tmp_path / f"rank{r}").read_text().split() for r in (0, 1)]
    assert results[0] == results[1] == [str(2 * SYNC_EVERY), str(int(signal.SIGTERM))]
