"""The training log: one record per epoch, written as ``log.csv``, drawn as ``progress.png``, and, when the
optional ``tensorboard`` package is installed (``pip install 'amos-autoseg[tensorboard]'``), written as TensorBoard
event files into ``tensorboard/`` beside them (:class:`EventLog`).

The log is part of the checkpoint (``TrainingLog.state()``), so a resumed run continues the same file.
The exponential moving average of the mean foreground pseudo-Dice uses nnU-Net's factor 0.9.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amos_autoseg.utils import atomic

log = logging.getLogger(__name__)
EMA_FACTOR = 0.9
EVENTS_DIR = "tensorboard"
_said_no_tensorboard = False


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


class EventLog:
    """TensorBoard event files of a fold (``<fold>/tensorboard/``), one point per epoch and scalar.

    Scalars: ``loss/train``, ``loss/val``, ``pseudo_dice/mean``, ``pseudo_dice/ema``, ``pseudo_dice/<class>``,
    ``lr`` and ``epoch_seconds``, at step = epoch number. A resumed run purges the points from its first epoch on,
    so a run stopped and continued draws one clean curve. Without the ``tensorboard`` package the run says so once
    and writes none (log.csv and progress.png are written either way).

    Args:
        folder: the fold folder.
        first_epoch: the epoch the run starts at (0, or the resumed epoch).
    """

    def __init__(self, folder: str | os.PathLike[str], first_epoch: int) -> None:
        global _said_no_tensorboard
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not _said_no_tensorboard:
                log.info("TensorBoard event files skipped: the tensorboard package is not installed "
                         "(pip install 'amos-autoseg[tensorboard]'); log.csv and progress.png are written")
                _said_no_tensorboard = True
            return
        self.writer = SummaryWriter(str(Path(folder) / EVENTS_DIR), purge_step=first_epoch if first_epoch else None)

    def add(self, record: EpochRecord) -> None:
        """Write one epoch's scalars and flush them (a run killed later keeps them)."""
        if self.writer is None:
            return
        values = {"loss/train": record.train_loss, "loss/val": record.val_loss, "lr": record.lr,
                  "pseudo_dice/mean": record.mean_fg_dice, "pseudo_dice/ema": record.ema_fg_dice,
                  "epoch_seconds": record.epoch_seconds,
                  **{f"pseudo_dice/{i + 1}": d for i, d in enumerate(record.pseudo_dice)}}
        for tag, value in values.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, record.epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def duration_text(seconds: float) -> str:
    """A duration for people: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 7 h``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def time_left_text(log: TrainingLog, epochs: int, window: int = 5) -> str:
    """``", about 3 h 05 min left"``: the mean time of the last ``window`` epochs times the epochs still to run
    (the final validation not included); empty once no epoch is left."""
    left = epochs - (log.records[-1].epoch + 1) if log.records else 0
    recent = [r.epoch_seconds for r in log.records[-window:] if math.isfinite(r.epoch_seconds)]
    if left <= 0 or not recent:
        return ""
    return f", about {duration_text(left * sum(recent) / len(recent))} left"


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
