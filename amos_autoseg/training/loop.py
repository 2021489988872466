"""The training loop: a fixed hook sequence over injected collaborators (no trainer class to subclass).

Sequence, as in nnU-Net's ``run_training``: ``on_train_start`` -> per epoch { ``iterations_per_epoch``
training steps, each at the learning rate of its global step (:class:`~amos_autoseg.training.schedule.LRSchedule`;
nnU-Net's poly curve changes it once per epoch) -> ``val_iterations_per_epoch`` validation steps under
``no_grad`` -> record (loss, pseudo-Dice, EMA) -> ``on_epoch_end`` (checkpoint, log.csv, progress.png) } ->
``on_train_end``.

The hot loop reads nothing back from the device: losses stay device tensors and are reduced once per epoch, and
on CUDA the next batch is copied on a side stream while the current step runs (:mod:`.prefetch`).

Batches come from two streams called with ``(start_step, num_steps)``; a stream must give the same batches for the
same steps, which is what makes a resumed run equal the uninterrupted one: the loop restarts the training stream at
``TrainState.global_step`` and the validation stream at ``epoch * val_iterations_per_epoch``. A stream with a
``close()`` method (a loader with worker processes) is closed when the loop ends or fails.

``LoopParts.should_stop`` is asked at every step boundary (:mod:`amos_autoseg.training.stop` answers it from
SIGTERM/SIGINT). When it says stop inside an epoch, the loop leaves with a state that records the partial epoch
(the steps done, their losses, the time spent) and calls ``on_stop`` (a checkpoint); a run resumed from that
state does the rest of the epoch and ends equal to an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from amos_autoseg.training.ddp import DistContext, all_reduce_sum
from amos_autoseg.training.metrics_log import EpochRecord, TrainingLog, time_left_text
from amos_autoseg.training.online_dice import PseudoDice
from amos_autoseg.training.prefetch import prefetch_to_device
from amos_autoseg.training.schedule import LRSchedule, set_lr
from amos_autoseg.training.step import StepParts, move_batch, train_step, val_step
from amos_autoseg.utils.parallel import progress

log = logging.getLogger(__name__)

Batch = Mapping[str, Any]
BatchStream = Callable[[int, int], Iterable[Batch]]


@dataclass(frozen=True)
class LoopSettings:
    """Lengths and schedule of a run.

    Attributes:
        epochs: total epochs of the run (the learning-rate schedule spans them).
        iterations_per_epoch: training steps per epoch.
        val_iterations_per_epoch: validation batches per epoch (0: no online validation).
        initial_lr: peak learning rate (that of epoch 0 for ``poly``).
        poly_exponent: exponent of the poly decay.
        stop_after_epoch: leave the loop once this many epochs are complete (a time-limited job); ``None``: run all.
        show_progress: draw a progress bar on rank 0 when stderr is a terminal.
        lr_schedule: learning-rate curve (``schedule.SCHEDULES``).
        warmup_iterations: warm-up steps of the ``warmup_*`` curves (``None``: 5% of the run).
    """

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    initial_lr: float
    poly_exponent: float
    stop_after_epoch: int | None = None
    show_progress: bool = True
    lr_schedule: str = "poly"
    warmup_iterations: int | None = None

    @property
    def schedule(self) -> LRSchedule:
        return LRSchedule(self.initial_lr, self.epochs, self.iterations_per_epoch, self.lr_schedule,
                          self.poly_exponent, self.warmup_iterations)


@dataclass(frozen=True)
class PartialEpoch:
    """The part of an epoch done before a stop: the training losses of its steps so far and the seconds spent."""

    losses: tuple[float, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class TrainState:
    """Where the run stands: completed epochs, optimiser steps, and the unfinished epoch a stop left."""

    epoch: int = 0
    global_step: int = 0
    partial: PartialEpoch | None = None


def _noop(*_: Any) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class LoopParts:
    """The collaborators of the loop.

    Attributes:
        step: model, loss, optimiser, scaler, precision and device (see :class:`StepParts`).
        train_batches: training batch stream ``(start_step, num_steps) -> batches``.
        val_batches: validation batch stream, same contract.
        num_classes: network output channels (for the pseudo-Dice).
        ctx: distributed context (losses and Dice counts are reduced over ranks).
        log: the epoch records, continued on resume.
        on_train_start: called with the state before the first epoch.
        on_epoch_end: called with the new state and the epoch's record (checkpointing, log files).
        on_train_end: called with the final state.
        should_stop: asked at every step boundary (the same number of times on every rank).
        on_stop: called with the state of a run stopped inside an epoch (``partial`` set).
    """

    step: StepParts
    train_batches: BatchStream
    val_batches: BatchStream
    num_classes: int
    ctx: DistContext
    log: TrainingLog = field(default_factory=TrainingLog)
    on_train_start: Callable[[TrainState], None] = _noop
    on_epoch_end: Callable[[TrainState, EpochRecord], None] = _noop
    on_train_end: Callable[[TrainState], None] = _noop
    should_stop: Callable[[], bool] = _never
    on_stop: Callable[[TrainState], None] = _noop


def run_training(parts: LoopParts, settings: LoopSettings, state: TrainState = TrainState()) -> TrainState:
    """Train from ``state`` until ``settings.epochs`` (or ``stop_after_epoch``) epochs are complete, or until
    ``parts.should_stop()``: then the returned state is where it stopped, and ``on_train_end`` is not called.

    One training and one validation stream are opened for the whole run (loader workers start once), and each
    epoch takes its batches from them.
    """
    parts.on_train_start(state)
    last = settings.epochs if settings.stop_after_epoch is None else min(settings.epochs, settings.stop_after_epoch)
    if state.epoch < last:
        todo = last - state.epoch
        train = parts.train_batches(state.global_step, todo * settings.iterations_per_epoch - _steps_done(state))
        val = parts.val_batches(state.epoch * settings.val_iterations_per_epoch,
                                todo * settings.val_iterations_per_epoch)
        move = partial(move_batch, parts=parts.step)
        try:
            train_it = prefetch_to_device(iter(train), parts.step.device, move)
            val_it = prefetch_to_device(iter(val), parts.step.device, move)
            while state.epoch < last:
                state = run_epoch(parts, settings, state, train_it, val_it)
                if state.partial is not None or parts.should_stop():
                    return state
        finally:
            for stream in (train, val):
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
    parts.on_train_end(state)
    return state


def run_epoch(parts: LoopParts, settings: LoopSettings, state: TrainState, train: Iterator[Batch],
              val: Iterator[Batch]) -> TrainState:
    """One epoch (or the rest of a partial one): training steps, validation steps, record, ``on_epoch_end``.

    Returns the new state; on a stop inside the epoch, the state with ``partial`` set (after ``on_stop``).
    """
    lr = settings.schedule.lr(state.epoch * settings.iterations_per_epoch)  # first step (for ``poly``: every)
    start = time.perf_counter()
    losses = _train_epoch(parts, settings, state, train)
    val_loss, dice = (None, []) if len(losses) < settings.iterations_per_epoch or parts.should_stop() \
        else _validate_epoch(parts, settings, val)
    if val_loss is None:
        return _stopped(parts, state, losses, time.perf_counter() - start)
    train_loss = _mean_over_ranks(losses, parts.ctx)
    seconds = time.perf_counter() - start + (state.partial.seconds if state.partial else 0.0)
    new_state = TrainState(state.epoch + 1,
                           state.global_step + settings.iterations_per_epoch - _steps_done(state))
    record = parts.log.add(state.epoch, lr, train_loss, val_loss, dice, seconds, settings.iterations_per_epoch)
    if parts.ctx.is_main:
        log.info("epoch %d/%d: lr %.5f, train loss %.4f, val loss %.4f, pseudo Dice %s %% (EMA %s %%), %.1f s%s",
                 state.epoch + 1, settings.epochs, lr, train_loss, val_loss, _pct(record.mean_fg_dice),
                 _pct(record.ema_fg_dice), seconds, time_left_text(parts.log, settings.epochs))
    parts.on_epoch_end(new_state, record)
    return new_state


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.1f}"


def _steps_done(state: TrainState) -> int:
    return len(state.partial.losses) if state.partial else 0


def _stopped(parts: LoopParts, state: TrainState, losses: list[torch.Tensor], seconds: float) -> TrainState:
    """The state of a run stopped inside an epoch; ``on_stop`` is called with it."""
    values = tuple(float(x) for x in losses)  # one host sync, at the stop only
    before = state.partial.seconds if state.partial else 0.0
    stopped = TrainState(state.epoch, state.global_step + len(values) - _steps_done(state),
                         PartialEpoch(values, before + seconds))
    parts.on_stop(stopped)
    return stopped


def _take(batches: Iterator[Batch], n: int, what: str) -> Iterator[Batch]:
    for i in range(n):
        try:
            yield next(batches)
        except StopIteration:
            raise RuntimeError(f"the {what} stream ended after {i} of {n} batches") from None


def _train_epoch(parts: LoopParts, settings: LoopSettings, state: TrainState,
                 batches: Iterator[Batch]) -> list[torch.Tensor]:
    """The epoch's training losses: those of a partial epoch's steps, then one per step until the epoch is done or
    ``should_stop`` answers yes (asked before every step)."""
    parts.step.model.train()
    device = parts.step.device
    losses = [torch.tensor(v, dtype=torch.float32, device=device) for v in (state.partial or PartialEpoch()).losses]
    n = settings.iterations_per_epoch - len(losses)
    bar = progress(_take(batches, n, "training"), n, f"epoch {state.epoch + 1}",
                   enabled=None if settings.show_progress and parts.ctx.is_main else False)
    schedule = settings.schedule
    for i in range(n):
        if parts.should_stop():
            break
        set_lr(parts.step.optimizer, schedule.lr(state.global_step + i))  # the step number alone sets the rate
        losses.append(train_step(parts.step, next(bar)))
    return losses


def _validate_epoch(parts: LoopParts, settings: LoopSettings,
                    batches: Iterator[Batch]) -> tuple[float | None, list[float]]:
    """Validation loss and pseudo-Dice; ``(None, [])`` when ``should_stop`` answers yes before a step."""
    n = settings.val_iterations_per_epoch
    dice = PseudoDice(parts.num_classes)
    if n <= 0:
        return float("nan"), dice.result(parts.ctx)
    parts.step.model.eval()
    losses = []
    taken = _take(batches, n, "validation")
    for _ in range(n):
        if parts.should_stop():
            parts.step.model.train()
            return None, []
        losses.append(val_step(parts.step, next(taken), dice))
    parts.step.model.train()
    return _mean_over_ranks(losses, parts.ctx), dice.result(parts.ctx)


def _mean_over_ranks(losses: list[torch.Tensor], ctx: DistContext) -> float:
    if not losses:
        return float("nan")
    total = torch.stack([x.float() for x in losses]).sum().reshape(1).to(torch.float64)
    count = torch.tensor([float(len(losses))], dtype=torch.float64, device=total.device)
    both = all_reduce_sum(torch.cat([total, count]).to(ctx.device), ctx)
    return float(both[0] / both[1])
