"""Loss, schedule, precision, pseudo-Dice, log files, checkpoints and RNG state of the training stage."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.runtime import checkpoint as ckpt
from amos_autoseg.training import rng
from amos_autoseg.runtime.precision import make_scaler, resolve_precision
from amos_autoseg.training.ddp import split_batch
from amos_autoseg.training.loss import (DeepSupervisionLoss, DiceCELoss, SoftDiceLoss, build_loss,
                                        deep_supervision_weights, resize_target)
from amos_autoseg.training.metrics_log import TrainingLog
from amos_autoseg.training.online_dice import PseudoDice
from amos_autoseg.training.schedule import LRSchedule, build_optimizer, poly_lr, set_lr


def _target(shape=(2, 1, 4, 6, 6), k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, shape, generator=g)


def test_deep_supervision_weights_match_nnunet():
    w = deep_supervision_weights(5)
    assert w[-1] == 0.0
    assert math.isclose(sum(w), 1.0)
    assert [round(v, 4) for v in w] == [0.5333, 0.2667, 0.1333, 0.0667, 0.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]


def _dice_reference(probs: np.ndarray, onehot: np.ndarray, batch: bool, smooth: float = 1e-5) -> float:
    """Straightforward loops over samples and foreground classes."""
    p, r = probs[:, 1:], onehot[:, 1:]
    if batch:
        scores = [(2 * (p[:, c] * r[:, c]).sum() + smooth) / (p[:, c].sum() + r[:, c].sum() + smooth)
                  for c in range(p.shape[1])]
    else:
        scores = [(2 * (p[b, c] * r[b, c]).sum() + smooth) / (p[b, c].sum() + r[b, c].sum() + smooth)
                  for b in range(p.shape[0]) for c in range(p.shape[1])]
    return -float(np.mean(scores))


@pytest.mark.parametrize("batch_dice", [True, False])
def test_soft_dice_matches_reference_formula(batch_dice):
    target = _target()
    logits = torch.randn(2, 3, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    probs = torch.softmax(logits, 1).numpy()
    onehot = F.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).numpy().astype(float)
    got = SoftDiceLoss(batch_dice)(logits, target).item()
    assert got == pytest.approx(_dice_reference(probs, onehot, batch_dice), rel=1e-5)


def test_dice_ce_perfect_prediction_and_ce_term():
    target = _target()
    perfect = F.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 40.0
    loss = DiceCELoss(SoftDiceLoss(batch_dice=False))(perfect, target)
    assert loss.item() == pytest.approx(-1.0, abs=1e-4)  # CE ~ 0, Dice ~ -1
    logits = torch.randn(2, 3, 4, 6, 6)
    ce_only = DiceCELoss(SoftDiceLoss(False), dice_weight=0.0, ce_weight=1.0)(logits, target)
    assert ce_only.item() == pytest.approx(F.cross_entropy(logits, target[:, 0]).item(), rel=1e-6)


def test_resize_target_nearest_exact():
    t = torch.arange(4 * 8 * 8).reshape(1, 1, 4, 8, 8) % 5
    small = resize_target(t, (2, 4, 4))
    assert small.shape == (1, 1, 2, 4, 4) and small.dtype == torch.int64
    # nearest-exact samples at (i + 0.5) * 2 -> source voxel 2i + 1 of each pair
    assert torch.equal(small, t[:, :, 1::2, 1::2, 1::2])
    assert torch.equal(resize_target(t, (4, 8, 8)), t)


def test_deep_supervision_loss_is_weighted_sum():
    target = _target((2, 1, 8, 8, 8))
    outs = [torch.randn(2, 3, 8, 8, 8, requires_grad=True), torch.randn(2, 3, 4, 4, 4, requires_grad=True),
            torch.randn(2, 3, 2, 2, 2, requires_grad=True)]
    base = DiceCELoss(SoftDiceLoss(True))
    total = DeepSupervisionLoss(base)(outs, target)
    w = deep_supervision_weights(3)
    manual = sum(wi * base(o, resize_target(target, o.shape[2:])) for wi, o in zip(w, outs))
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)
    total.backward()
    assert outs[0].grad.abs().sum() > 0 and outs[1].grad.abs().sum() > 0
    assert torch.count_nonzero(outs[2].grad) == 0  # weight 0, but still in the graph
    single = build_loss(True, 1.0, 1.0)(outs[0].detach(), target)
    assert single.item() == pytest.approx(base(outs[0].detach(), target).item(), rel=1e-6)


def test_poly_schedule_and_optimizer():
    assert poly_lr(0, 10, 1e-2) == 1e-2
    assert poly_lr(10, 10, 1e-2) == 0.0
    assert poly_lr(3, 10, 1e-2, 0.9) == pytest.approx(1e-2 * 0.7 ** 0.9)
    lrs = [poly_lr(e, 50, 1e-2) for e in range(50)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], 1e-2, 0.99, 3e-5)
    g = opt.param_groups[0]
    assert g["nesterov"] and g["momentum"] == 0.99 and g["weight_decay"] == 3e-5
    set_lr(opt, 0.5)
    assert g["lr"] == 0.5


def test_step_schedules_and_adamw():
    poly = LRSchedule(1e-2, 10, 5)
    assert [poly.lr(s) for s in range(50)] == [poly_lr(s // 5, 10, 1e-2) for s in range(50)]  # nnU-Net's, per epoch
    warm = LRSchedule(1e-2, 10, 5, "warmup_poly", warmup_iterations=10)
    assert [warm.lr(s) for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    assert warm.lr(10) == 1e-2 and warm.lr(30) == pytest.approx(1e-2 * (1 - 20 / 40) ** 0.9)
    assert warm.lr(49) > 0 and warm.lr(50) == 0.0
    cosine = LRSchedule(1e-2, 10, 5, "warmup_cosine")  # default warm-up: 5% of 50 steps, rounded
    assert cosine.warmup_steps == 2 and cosine.lr(2) == 1e-2 and cosine.lr(26) == pytest.approx(5e-3)
    with pytest.raises(UsageError):
        LRSchedule(1e-2, 10, 5, "step")
    with pytest.raises(UsageError):
        LRSchedule(1e-2, 10, 5, "warmup_poly", warmup_iterations=50)
    adam = build_optimizer([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.99, 3e-5, kind="adamw")
    assert isinstance(adam, torch.optim.AdamW) and adam.param_groups[0]["weight_decay"] == 3e-5
    with pytest.raises(UsageError):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.99, 3e-5, kind="lion")


def test_precision_on_cpu_is_fp32_and_modes_are_checked():
    p = resolve_precision("auto", torch.device("cpu"))
    assert p.dtype is None and p.name == "fp32" and not p.needs_scaler
    assert not make_scaler(p).is_enabled()
    with pytest.raises(UsageError):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_precision_on_cuda():
    p = resolve_precision("fp16", torch.device("cuda"))
    assert p.dtype == torch.float16 and make_scaler(p).is_enabled()
    assert resolve_precision("auto", torch.device("cuda")).dtype in (torch.bfloat16, torch.float16)


def test_split_batch():
    assert [split_batch(5, 2, r) for r in range(2)] == [3, 2]
    assert sum(split_batch(7, 3, r) for r in range(3)) == 7
    with pytest.raises(UsageError):
        split_batch(1, 2, 0)


def test_pseudo_dice_counts():
    target = torch.tensor([0, 1, 1, 2, 2, 2]).reshape(1, 1, 1, 1, 6)
    pred = torch.tensor([0, 1, 2, 2, 2, 0])
    logits = F.one_hot(pred, 3).T.reshape(1, 3, 1, 1, 6).float()
    d = PseudoDice(3)
    d.update(logits, target)
    # class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: tp 2, fp 1, fn 1 -> 4/6
    assert d.result() == pytest.approx([2 / 3, 4 / 6])
    empty = PseudoDice(4)
    empty.update(logits.new_zeros(1, 4, 1, 1, 6).index_fill_(1, torch.tensor([0]), 1.0), target.clamp(max=0))
    assert all(math.isnan(v) for v in empty.result())


def test_training_log_ema_csv_png_and_state(tmp_path):
    log = TrainingLog()
    log.add(0, 0.01, 1.0, 0.9, [0.2, 0.4], 2.0, 10)
    r = log.add(1, 0.009, 0.8, 0.7, [0.4, float("nan")], 2.0, 10)
    assert r.mean_fg_dice == pytest.approx(0.4)
    assert r.ema_fg_dice == pytest.approx(0.9 * 0.3 + 0.1 * 0.4)
    log.write(tmp_path)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["epoch", "lr", "train_loss", "val_loss"] and rows[0].endswith("dice_2")
    assert len(rows) == 3 and rows[2].startswith("1,0.009,")
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = TrainingLog.from_state(log.state())
    assert again.csv_text() == log.csv_text()
    again.truncate(1)
    assert [x.epoch for x in again.records] == [0]


def _payload(model: torch.nn.Module) -> dict:
    opt = build_optimizer(model.parameters(), 0.01, 0.99, 3e-5)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    return {"format": 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "grad_scaler": make_scaler(resolve_precision("off", torch.device("cpu"))).state_dict(),
            "epoch": 3, "global_step": 30, "config": "3d_fullres", "fold": "0", "plans": {"labels": {"0": "bg"}},
            "mirror_axes": [0, 1, 2], "rng": rng.capture_rng_state(), "log": TrainingLog().state()}


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = ckpt.save_checkpoint(tmp_path / "fold_0" / ckpt.LATEST, _payload(model))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    torch.load(path, weights_only=True)  # loadable without pickle
    data = ckpt.load_checkpoint(path)
    assert data["epoch"] == 3 and data["fold"] == "0"
    assert torch.equal(data["model"]["weight"], model.weight.detach())
    assert data["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)


class Opaque:
    """A Python object only pickle can store."""


def test_checkpoint_refuses_pickles_and_garbage(tmp_path):
    bad = tmp_path / "pickled.pt"
    torch.save({"format": 1, "thing": Opaque()}, bad)
    with pytest.raises(InputError) as exc:
        ckpt.load_checkpoint(bad)
    assert "pickled.pt" in str(exc.value) and "pickled" in exc.value.problem
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        ckpt.load_checkpoint(junk)
    with pytest.raises(InputError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(InputError, match="format"):
        ckpt.load_checkpoint(other)
    with pytest.raises(ValueError):
        ckpt.save_checkpoint(tmp_path / "x.pt", {"format": 1})


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    rng.seed_everything(7)
    torch.rand(3), np.random.rand(2), random.random(), np.random.randn()  # leave a cached gaussian
    state = rng.capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)], np.random.randn(3))
    rng.seed_everything(99)
    rng.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)], np.random.randn(3))
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2] and np.array_equal(expected[3], got[3])


def test_derived_seeds_are_stable_and_distinct():
    assert rng.derive_seed(12345, 0, 1) == rng.derive_seed(12345, 0, 1)
    seeds = {rng.derive_seed(12345, f, s) for f in range(5) for s in range(4)}
    assert len(seeds) == 20 and all(0 <= s < 2**31 for s in seeds)
    assert rng.fold_code("all") == 1000 and rng.fold_code("3") == 3
