"""The training log: one record per epoch, written as ``log.csv`` and drawn as ``progress.png``.

The log is part of the checkpoint (``TrainingLog.state()``), so a resumed run continues the same file.
The exponential moving average of the mean foreground pseudo-Dice uses nnU-Net's factor 0.9.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.utils import atomic

EMA_FACTOR = 0.9


@dataclass
class EpochRecord:
    """What one epoch measured."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    pseudo_dice: list[float]
    mean_fg_dice: float
    ema_fg_dice: float
    epoch_seconds: float
    iters_per_second: float


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


@dataclass
class TrainingLog:
    """Epoch records plus the best EMA pseudo-Dice seen."""

    records: list[EpochRecord] = field(default_factory=list)

    def add(self, epoch: int, lr: float, train_loss: float, val_loss: float, pseudo_dice: list[float],
            epoch_seconds: float, iterations: int) -> EpochRecord:
        """Append the record of ``epoch`` (computing the mean and its EMA) and return it."""
        mean = _nanmean(pseudo_dice)
        prev = self.records[-1].ema_fg_dice if self.records else float("nan")
        if math.isnan(prev):
            ema = mean
        elif math.isnan(mean):
            ema = prev
        else:
            ema = EMA_FACTOR * prev + (1 - EMA_FACTOR) * mean
        rec = EpochRecord(epoch, lr, train_loss, val_loss, list(pseudo_dice), mean, ema, epoch_seconds,
                          iterations / epoch_seconds if epoch_seconds > 0 else float("nan"))
        self.records.append(rec)
        return rec

    def is_best(self, record: EpochRecord) -> bool:
        """Whether ``record`` (the last one) has a higher EMA pseudo-Dice than every earlier epoch (nnU-Net's
        rule for ``checkpoint_best``; the first finite EMA is a best)."""
        if math.isnan(record.ema_fg_dice):
            return False
        earlier = [r.ema_fg_dice for r in self.records if r.epoch < record.epoch and not math.isnan(r.ema_fg_dice)]
        return not earlier or record.ema_fg_dice > max(earlier)

    def state(self) -> dict[str, Any]:
        """Plain data for the checkpoint."""
        return {"records": [asdict(r) for r in self.records]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrainingLog:
        return cls([EpochRecord(**r) for r in state.get("records", [])])

    def truncate(self, epochs: int) -> None:
        """Keep the records of the first ``epochs`` epochs (resuming from an older checkpoint)."""
        self.records = [r for r in self.records if r.epoch < epochs]

    def csv_text(self) -> str:
        """``log.csv``: one row per epoch, one ``dice_<label>`` column per foreground class."""
        n = max((len(r.pseudo_dice) for r in self.records), default=0)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["epoch", "lr", "train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "epoch_seconds",
                    "iters_per_second", *[f"dice_{i + 1}" for i in range(n)]])
        for r in self.records:
            w.writerow([r.epoch, f"{r.lr:.6g}", f"{r.train_loss:.6f}", f"{r.val_loss:.6f}", f"{r.mean_fg_dice:.6f}",
                        f"{r.ema_fg_dice:.6f}", f"{r.epoch_seconds:.3f}", f"{r.iters_per_second:.4f}",
                        *[f"{d:.6f}" for d in r.pseudo_dice]])
        return buf.getvalue()

    def write(self, folder: str | os.PathLike[str], plot: bool = True) -> None:
        """Write ``log.csv`` and (optionally) ``progress.png`` into ``folder``, atomically."""
        folder = Path(folder)
        atomic.write_text(folder / "log.csv", self.csv_text())
        if plot and self.records:
            write_progress_png(self, folder / "progress.png")


def write_progress_png(log: TrainingLog, path: str | os.PathLike[str]) -> None:
    """Loss curves (left axis) and pseudo-Dice with its EMA (right axis), plus epoch time and learning rate."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ep = [r.epoch for r in log.records]
    fig = Figure(figsize=(10, 9), dpi=80)
    ax_loss, ax_time, ax_lr = fig.subplots(3, 1)
    ax_loss.plot(ep, [r.train_loss for r in log.records], color="b", label="train loss")
    ax_loss.plot(ep, [r.val_loss for r in log.records], color="r", label="val loss")
    ax_dice = ax_loss.twinx()
    ax_dice.plot(ep, [r.mean_fg_dice for r in log.records], color="g", ls="dotted", label="pseudo Dice")
    ax_dice.plot(ep, [r.ema_fg_dice for r in log.records], color="g", label="pseudo Dice (EMA)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_dice.set_ylabel("pseudo Dice")
    ax_loss.legend(loc="upper left")
    ax_dice.legend(loc="upper right")
    ax_time.plot(ep, [r.epoch_seconds for r in log.records], color="k")
    ax_time.set_ylabel("epoch time (s)")
    ax_lr.plot(ep, [r.lr for r in log.records], color="k")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
