"""Learning-rate schedules: the curves, the loop setting them per step, and bit-exact resume with warm-up."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from amos_autoseg.errors import UsageError
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training.fold import train_fold
from amos_autoseg.training.options import TrainOptions
from amos_autoseg.training.schedule import WARMUP_FRACTION, LRSchedule, poly_lr
from test_training_loop import assert_same_training
from training_fakes import fake_collaborators, make_exp, tiny_plans


def test_poly_is_nnunets_per_epoch_curve():
    s = LRSchedule(1e-2, 20, 5)
    lrs = [s.lr(i) for i in range(100)]
    assert lrs == [poly_lr(i // 5, 20, 1e-2) for i in range(100)]
    assert s.warmup_steps == 0 and lrs[0] == 1e-2


def test_warmup_poly_rises_linearly_then_decays_per_step():
    s = LRSchedule(1e-2, 10, 10, "warmup_poly", warmup_iterations=20)
    lrs = [s.lr(i) for i in range(100)]
    assert lrs[:20] == pytest.approx([1e-2 * (i + 1) / 20 for i in range(20)])
    assert lrs[19] == lrs[20] == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(lrs[20:], lrs[21:]))
    assert lrs[60] == pytest.approx(1e-2 * (1 - 40 / 80) ** 0.9)
    assert 0 < lrs[-1] < 1e-3


def test_warmup_cosine_reaches_half_at_the_middle_and_zero_at_the_end():
    s = LRSchedule(2e-2, 10, 10, "warmup_cosine", warmup_iterations=10)
    assert s.lr(0) == pytest.approx(2e-3) and s.lr(10) == pytest.approx(2e-2)
    assert s.lr(55) == pytest.approx(1e-2)  # 45 of 90 decay steps
    assert s.lr(100) == pytest.approx(0.0, abs=1e-12)
    assert s.lr(99) == pytest.approx(2e-2 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_default_warmup_and_bad_schedules():
    assert LRSchedule(1e-2, 100, 250, "warmup_cosine").warmup_steps == round(WARMUP_FRACTION * 25000)
    assert LRSchedule(1e-2, 1, 2, "warmup_poly").warmup_steps == 1
    with pytest.raises(UsageError, match="not one of"):
        LRSchedule(1e-2, 10, 10, "step")
    with pytest.raises(UsageError, match="fewer than"):
        LRSchedule(1e-2, 2, 5, "warmup_poly", warmup_iterations=10)


def _opts(exp: Path, **kw) -> TrainOptions:
    base = dict(exp=exp, fold="0", device="cpu", epochs=2, iterations_per_epoch=4, val_iterations_per_epoch=1,
                lr_schedule="warmup_cosine", warmup_iterations=3, channels_last=True)
    return TrainOptions(**{**base, **kw})


def test_loop_sets_the_rate_per_step_and_resume_stays_bit_exact(tmp_path):
    """warmup_cosine in channels-last layout: interrupted after one epoch and resumed equals uninterrupted."""
    full = train_fold(_opts(make_exp(tmp_path / "full", tiny_plans())), fake_collaborators())
    final = ckpt.load_checkpoint(full.fold_dir / ckpt.FINAL)
    schedule = LRSchedule(1e-2, 2, 4, "warmup_cosine", warmup_iterations=3)
    assert [r["lr"] for r in final["log"]["records"]] == [schedule.lr(e * 4) for e in range(2)]
    assert final["optimizer"]["param_groups"][0]["lr"] == schedule.lr(7)  # the last step's own rate
    assert all(v.is_contiguous() for v in final["model"].values())

    exp = make_exp(tmp_path / "split", tiny_plans())
    first = train_fold(_opts(exp, stop_after_epoch=1), fake_collaborators())
    assert first.epochs_done == 1
    second = train_fold(_opts(exp, resume=True), fake_collaborators())
    assert second.finished
    assert_same_training(final, ckpt.load_checkpoint(second.fold_dir / ckpt.FINAL))


def test_too_long_warmup_is_refused_before_anything_is_written(tmp_path):
    exp = make_exp(tmp_path / "exp", tiny_plans())
    with pytest.raises(UsageError, match="warm-up"):
        train_fold(_opts(exp, warmup_iterations=8), fake_collaborators())
    assert not (exp / "3d_fullres").exists()
