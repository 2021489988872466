"""Optimiser and learning-rate schedules of the recipe: SGD with Nesterov momentum (or AdamW for short runs), and one
LR curve per run.

Every learning rate is a pure function of the optimiser step (``TrainState.global_step``), so a resumed run
needs no scheduler state beyond its step counter and continues bit-exactly.

Schedules (``TrainingPlan.lr_schedule``, ``train --schedule``):

* ``poly`` (default, nnU-Net's): ``initial_lr * (1 - epoch / epochs) ** exponent``, constant within an epoch.
* ``warmup_poly``: the learning rate rises linearly over the first ``warmup_iterations`` steps
  (``initial_lr * (s + 1) / W``, nnU-Net's ``Lin_incr_LRScheduler``), then decays with the poly curve per step
  over the remaining steps.
* ``warmup_cosine``: the same warm-up, then a half cosine from ``initial_lr`` to 0 over the remaining steps.

The warm-up variants are meant for short runs (tens of epochs), where a cold start at lr 1e-2 with momentum 0.99
wastes a large share of the budget; they are options, never the default.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from amos_autoseg.errors import UsageError

SCHEDULES = ("poly", "warmup_poly", "warmup_cosine")
OPTIMIZERS = ("sgd", "adamw")  # TrainingPlan.optimizer: nnU-Net's SGD, or AdamW for short runs
WARMUP_FRACTION = 0.05  # default warm-up: 5% of the run (nnU-Net's warm-up trainer: 50 of 1000 epochs)


def poly_lr(epoch: int, epochs: int, initial_lr: float, exponent: float = 0.9) -> float:
    """Learning rate of ``epoch`` (0-based) out of ``epochs``.

    >>> poly_lr(0, 1000, 1e-2)
    0.01
    >>> round(poly_lr(500, 1000, 1e-2), 6)
    0.005359
    """
    if epochs <= 0:
        raise ValueError("epochs must be positive")
    frac = min(max(epoch, 0), epochs) / epochs
    return initial_lr * (1.0 - frac) ** exponent


@dataclass(frozen=True)
class LRSchedule:
    """The learning-rate curve of a run, as a function of the optimiser step.

    Attributes:
        initial_lr: peak learning rate (the first one for ``poly``, the end of the warm-up otherwise).
        epochs: epochs of the whole run.
        iterations_per_epoch: optimiser steps per epoch.
        kind: one of :data:`SCHEDULES`.
        exponent: exponent of the poly decay.
        warmup_iterations: warm-up steps of the ``warmup_*`` schedules (``None``: 5% of the run, at least 1).
    """

    initial_lr: float
    epochs: int
    iterations_per_epoch: int
    kind: str = "poly"
    exponent: float = 0.9
    warmup_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise UsageError(f"learning-rate schedule {self.kind!r} is not one of {list(SCHEDULES)}")
        if self.epochs <= 0 or self.iterations_per_epoch <= 0:
            raise ValueError("epochs and iterations_per_epoch must be positive")
        warm = self.warmup_iterations
        if self.kind != "poly" and warm is not None and not 0 <= warm < self.total_steps:
            raise UsageError(f"warm-up of {warm} iterations: must be at least 0 and fewer than the run's "
                             f"{self.total_steps} iterations")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch

    @property
    def warmup_steps(self) -> int:
        """Warm-up steps actually used (0 for ``poly``)."""
        if self.kind == "poly":
            return 0
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return max(1, round(WARMUP_FRACTION * self.total_steps))

    def lr(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based).

        >>> s = LRSchedule(1e-2, 10, 4, "warmup_cosine", warmup_iterations=4)
        >>> [round(s.lr(i), 4) for i in (0, 3, 4, 22, 39)]
        [0.0025, 0.01, 0.01, 0.005, 0.0]
        """
        step = max(int(step), 0)
        if self.kind == "poly":
            return poly_lr(step // self.iterations_per_epoch, self.epochs, self.initial_lr, self.exponent)
        warm = self.warmup_steps
        if step < warm:
            return self.initial_lr * (step + 1) / warm
        frac = min((step - warm) / (self.total_steps - warm), 1.0)
        if self.kind == "warmup_poly":
            return self.initial_lr * (1.0 - frac) ** self.exponent
        return self.initial_lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(params: Iterable[torch.nn.Parameter], initial_lr: float, momentum: float,
                    weight_decay: float, fused: bool = False, kind: str = "sgd") -> torch.optim.Optimizer:
    """The optimiser of the recipe.

    Args:
        params: the parameters to train.
        initial_lr: learning rate to start from (the schedule sets it again at every step or epoch).
        momentum: SGD's Nesterov momentum (nnU-Net: 0.99); AdamW does not use it.
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW); nnU-Net: 3e-5.
        fused: use torch's fused kernel. With fp16 a :class:`torch.amp.GradScaler` then hands the inf check
            to the kernel instead of reading it on the host, so the step needs no GPU-to-CPU synchronisation.
        kind: one of :data:`OPTIMIZERS`: ``"sgd"`` (nnU-Net's, SGD with Nesterov momentum, the default) or
            ``"adamw"`` (betas 0.9 / 0.999), which leaves the all-background start of a run within tens of steps
            where SGD takes hundreds; meant for runs of a few hundred steps such as ``amos-autoseg demo``.
    """
    if kind == "sgd":
        return torch.optim.SGD(params, lr=initial_lr, momentum=momentum, weight_decay=weight_decay, nesterov=True,
                               fused=fused or None)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=initial_lr, betas=(0.9, 0.999), weight_decay=weight_decay,
                                 fused=fused or None)
    raise UsageError(f"optimizer {kind!r} is not one of {list(OPTIMIZERS)}")


def keep_fused(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """Put back the ``fused`` choice this run made after ``load_state_dict`` copied the saving run's.

    A checkpoint saved under another ``--precision`` may carry the other choice; a fused-SGD-aware scaler
    must never drive an unfused step (it would skip the inf check).
    """
    for group in optimizer.param_groups:
        group["fused"] = fused or None
